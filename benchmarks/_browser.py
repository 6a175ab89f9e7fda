"""What the screenshot scripts share: a free loopback port and Debian's headless Chromium, offline.

The browser resolves no host but 127.0.0.1 (as on a machine without internet), so a page that
tries to fetch a font or a script from a CDN shows it in its request log instead of getting it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from typing import Callable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def headless_chromium(width: int, height: int, log_requests: bool = False):
    """A selenium driver for Debian's ``chromium`` and ``chromium-driver``; ``log_requests`` keeps every
    request in the performance log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    if log_requests:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_until_served(process: subprocess.Popen, url: str, ready: Callable[[bytes], bool], seconds: float,
                      what: str) -> None:
    """Poll ``url`` until its body satisfies ``ready``; stop (killing ``process``) if it exits or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr or process.stdout
            raise SystemExit(f"{what} stopped: {(output.read() if output else b'')[-2000:]!r}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200 and ready(reply.read()):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{what} did not answer within {seconds:.0f} s")

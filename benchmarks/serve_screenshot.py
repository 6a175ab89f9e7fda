"""The docs' screenshot of the sampler page's edit tab, from a trained run, in headless Chromium, offline.

    genkit train --out runs/shapes
    python benchmarks/serve_screenshot.py runs/shapes --out docs/images/serve-edit.png [--pick 3] [--toggle top]

Serves the run with ``genkit serve`` on 127.0.0.1 (a free port), opens the page in Debian's
headless Chromium with every host but 127.0.0.1 unresolvable, opens the *edit an image* tab,
picks test image ``--pick`` from the thumbnails, switches the attribute ``--toggle`` (a flag's
label on the page), waits for the edit to be redrawn and saves the part of the page from the
thumbnails to the command line as a small PNG. It checks that nothing was fetched from anywhere
but the server. Needs the serve extra, selenium, chromium and chromedriver.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _browser import free_port, headless_chromium, wait_until_served  # noqa: E402


def start_server(run: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "no_proxy": "*", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "genkit", "serve", "--run", str(run), "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_served(process, f"http://127.0.0.1:{port}/", lambda body: True, 180, "genkit serve")
    return process


def screenshot(url: str, pick: int, toggle: str, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = headless_chromium(1280, 2400)
    try:
        wait = WebDriverWait(page, 120, poll_frequency=0.2)
        page.get(url)
        wait.until(lambda _: page.find_elements(By.CSS_SELECTOR, "#grid-0 img"))
        page.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='edit an image']").click()

        def images() -> list[str]:
            return [img.get_attribute("src") for img in page.find_elements(By.CSS_SELECTOR, "#edit-result-0 img")]

        thumbs = wait.until(lambda _: page.find_elements(By.CSS_SELECTOR, "#edit-thumbs-0 img[data-row]"))
        thumbs[pick].click()
        first = wait.until(lambda _: (found := images()) and len(found) == 3 and found)
        flags = page.find_element(By.ID, "edit-flags-0")
        flags.find_element(By.XPATH, f".//label[normalize-space()='{toggle}']").click()
        wait.until(lambda _: (found := images()) and found[2] != first[2])
        outside = [r for r in page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
                   if not r.startswith((url.rstrip("/"), "data:", "blob:"))]
        if outside:
            raise SystemExit(f"the page fetched from elsewhere: {outside[:3]}")
        thumbs_at = page.find_element(By.ID, "edit-thumbs-0").location
        top, left = thumbs_at["y"] - 70, max(0, thumbs_at["x"] - 20)
        bottom = (command := page.find_element(By.ID, "edit-command-0")).location["y"] + command.size["height"] + 10
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as scratch:
            shot = Path(scratch) / "page.png"
            page.save_screenshot(str(shot))
            with Image.open(shot) as image:
                image = image.convert("RGB").crop((left, max(0, top), image.width, min(image.height, bottom)))
                image.thumbnail((1100, 1100))
                image.quantize(256).save(out, optimize=True)
    finally:
        page.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pick", type=int, default=3, help="which thumbnail of the first page")
    parser.add_argument("--toggle", default="top", help="the attribute switched on or off")
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.run, port)
    try:
        screenshot(f"http://127.0.0.1:{port}/", args.pick, args.toggle, args.out)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The docs' TensorBoard screenshot: TensorBoard on a sweep folder, in headless Chromium, offline.

    genkit sweep --loss beta-elbo --prior standard --beta 0.25,0.5,0.75 --image-size 32 \\
        --data-opt count=2000 --epochs 4 --batch-size 32 --samples 10 --out runs/beta-sweep
    python benchmarks/tensorboard_screenshot.py runs/beta-sweep --out docs/images/tensorboard-sweep.png

Starts ``tensorboard --logdir LOGDIR`` bound to 127.0.0.1 on a free port, opens it in Debian's
headless Chromium with every host but 127.0.0.1 unresolvable (as on a machine offline), waits
for the sweep's runs to be drawn, checks that the page fetched nothing from anywhere else (no
CDN: TensorBoard serves its fonts and scripts itself), saves a small PNG and stops TensorBoard.
Needs the tensorboard extra, selenium, chromium and chromedriver.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _browser import free_port, headless_chromium, wait_until_served  # noqa: E402

#: what the dashboard shows: the epochs' validation MSE and KL (the trade-off β sets) and the sample grids
TAG_FILTER = "epoch/val_(mse|kl)|samples"


def start_tensorboard(logdir: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                                "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until_served(process, f"http://127.0.0.1:{port}/data/runs", lambda body: bool(json.loads(body)), 120,
                      "tensorboard")
    return process


def screenshot(url: str, runs: list[str], tags: str, target: Path, width: int, height: int,
               settle: float) -> list[str]:
    """Save the page at ``url`` once every run name is on it, showing the ``tags`` unsmoothed; returns
    what it fetched from anywhere but 127.0.0.1."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    page = headless_chromium(width, height, log_requests=True)
    try:
        page.get(url)
        # TensorBoard keeps its settings in the browser: the values as logged (no smoothing), no side pane
        page.execute_script("localStorage.setItem('_tb_global_settings', JSON.stringify("
                            "{scalarSmoothing: 0, sideBarWidthInPercent: 14}))")
        page.refresh()
        WebDriverWait(page, 120, poll_frequency=0.5).until(
            lambda p: all(run in p.find_element("tag name", "body").text for run in runs))
        for close in page.find_elements("css selector", "button[aria-label='Close side pane']"):
            close.click()
        page.find_element("css selector", "input[placeholder='Filter tags (regex)']").send_keys(tags, Keys.ESCAPE)
        time.sleep(settle)  # the charts and images finish drawing
        requested = [json.loads(entry["message"])["message"] for entry in page.get_log("performance")]
        resources = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
        with tempfile.TemporaryDirectory() as scratch:
            shot = Path(scratch) / "shot.png"
            page.save_screenshot(str(shot))
            with Image.open(shot) as image:
                image = image.convert("RGB")
                image.thumbnail((1200, 1200))
                target.parent.mkdir(parents=True, exist_ok=True)
                image.quantize(colors=128).save(target, optimize=True)
        if not any(r.startswith("http://127.0.0.1") for r in resources):
            raise SystemExit("the browser's request log is empty; cannot tell what the page fetched")
        return [r for r in resources if not r.startswith(("http://127.0.0.1", "data:", "blob:"))]
    finally:
        page.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path, help="a sweep's --out folder (or any folder of run folders)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/tensorboard-sweep.png"))
    parser.add_argument("--tags", default=TAG_FILTER, help="the dashboard's tag filter (a regular expression)")
    parser.add_argument("--size", default="1500x1000", help="browser window WxH")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds to let the charts draw")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    port = free_port()
    tensorboard = start_tensorboard(args.logdir, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as response:
            runs = [r for r in json.loads(response.read()) if "/" not in r]  # the runs, not their evaluation sub-runs
        url = f"http://127.0.0.1:{port}/?darkMode=false#timeseries"
        outside = screenshot(url, runs, args.tags, args.out, width, height, args.settle)
    finally:
        tensorboard.terminate()
        tensorboard.wait(timeout=30)
    print(f"{args.out}: {len(runs)} runs ({', '.join(runs)}); fetched from outside 127.0.0.1: {outside or 'nothing'}")
    if outside:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""`genkit serve`: grid latency (16 images, 64x64, cvae) and the time from start to a usable page.

    python benchmarks/serve.py [--run DIR] [--threads 2] [--repeats 9]

Without --run it writes a cvae run folder at 64x64 with untrained weights (latency does not depend
on training) and the attribute table of `shapes`. Three figures:

* handler: the page's grid request in-process (parse the attributes, draw the rest from the
  training vectors, sample 16 images, encode the PNG, build the HTML), median of --repeats;
* browser: in headless Chromium, from changing the seed to the new grid shown (needs chromium,
  chromedriver and selenium; skipped otherwise), median of --repeats;
* start: from launching `genkit serve` to the URL printed (listening) and to the first grid shown
  in the browser (page usable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, table  # noqa: E402


def make_run(directory: Path) -> Path:
    import genkit
    from genkit.components import build_components
    from genkit.runs import CONFIG_FILE, WEIGHTS_FILE, save_weights
    from genkit.sampling import AttributeTable
    from genkit_datasets.shapes import ATTRIBUTE_NAMES, sample_attributes

    config = genkit.plan_run("cvae", "shapes", image_size=64, device="cpu")
    config.data.attribute_names = list(ATTRIBUTE_NAMES)
    config.data.exclusive_groups = ["shape", "color"]
    _, model, _ = build_components(config)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config.to_json())
    save_weights(model, directory / WEIGHTS_FILE)
    AttributeTable.from_rows(ATTRIBUTE_NAMES, sample_attributes(9600, 0)).save(directory)
    return directory


def handler_latency(run_dir: Path, repeats: int) -> float:
    import genkit
    from genkit.serve_app import RunPage

    page = RunPage(genkit.load_run(run_dir, device="cpu"), run_dir.name)
    page.grid("shape::circle,large", 16, 0, 1.0, "data")  # warm-up
    times = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        page.grid("shape::circle,large", 16, seed, 1.0, "data")
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1360,1000", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--port", type=int, default=7877)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="genkit-bench-serve-"))
    try:
        run_dir = args.run or make_run(scratch / "cvae-shapes-64")
        rows = [("handler: 16-image grid, 64x64", f"{handler_latency(run_dir, args.repeats) * 1000:.0f} ms", "≤ 300 ms")]

        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "genkit", "serve", "--run", str(run_dir), "--port",
                                    str(args.port), "--device", "cpu"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            url = process.stdout.readline().strip()
            listening = time.perf_counter() - started
            rows.append(("start: `genkit serve` to URL printed (listening)", f"{listening:.1f} s", ""))
            driver = browser()
            if driver is None:
                rows.append(("browser figures", "skipped (no chromium/chromedriver/selenium)", ""))
            else:
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys
                from selenium.webdriver.support.ui import WebDriverWait

                try:
                    wait = WebDriverWait(driver, 120, poll_frequency=0.01)
                    src = lambda: (lambda f: f[0].get_attribute("src") if f else None)(  # noqa: E731
                        driver.find_elements(By.CSS_SELECTOR, "#grid-0 img"))
                    driver.get(url)
                    current = wait.until(lambda _: src())
                    usable = time.perf_counter() - started
                    rows.append(("start: `genkit serve` to first grid in the browser", f"{usable:.1f} s", "≤ 10 s"))
                    seed = driver.find_element(By.CSS_SELECTOR, "#seed-0 input")
                    times = []
                    for value in range(1, args.repeats + 1):
                        seed.send_keys(Keys.CONTROL, "a")
                        begin = time.perf_counter()
                        seed.send_keys(str(value), Keys.ENTER)
                        current = wait.until(lambda _, old=current: (s := src()) != old and s)
                        times.append(time.perf_counter() - begin)
                    rows.append(("browser: seed changed to new 16-image grid shown",
                                 f"{sorted(times)[len(times) // 2] * 1000:.0f} ms", "≤ 300 ms"))
                finally:
                    driver.quit()
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(f"machine: {machine()}")
        print(f"cvae 64x64 (latent 32, channels 32/64), CPU, {args.threads} threads, median of {args.repeats}\n")
        print(table(rows, ("what", "measured", "target")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

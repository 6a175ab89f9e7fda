"""`genkit serve`: grid latency (16 images, 64x64, cvae) and the time from start to a usable page.

    python benchmarks/serve.py [--run DIR] [--threads 1] [--repeats 9]

Without --run it writes a cvae run folder at 64x64 with untrained weights (latency does not depend
on training) and the attribute table of `shapes`. Three figures:

* handler: the page's grid request in-process (parse the attributes, draw the rest from the
  training vectors, sample 16 images, encode the PNG, build the HTML), median of --repeats;
* HTTP: the same request through the running server (Gradio's queue, gradio_client), from the
  request sent to the image received, median of --repeats;
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
    from genkit.components.build import build_components
    from genkit.store.run_folder import CONFIG_FILE, LOSS_WEIGHTS_FILE, WEIGHTS_FILE
    from genkit.sampling.attributes import AttributeTable
    from genkit.store.weights import loss_has_state, save_weights
    from genkit_datasets.shapes import ATTRIBUTE_NAMES, sample_attributes

    config = genkit.plan_run("cvae", "shapes", image_size=64, device="cpu")
    _, model, loss = build_components(config)  # the plan scanned shapes: names and groups are in the config
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config.to_json())
    save_weights(model, directory / WEIGHTS_FILE)
    if loss_has_state(loss):
        save_weights(loss, directory / LOSS_WEIGHTS_FILE)
    AttributeTable.from_rows(ATTRIBUTE_NAMES, sample_attributes(9600, 0)).save(directory)
    return directory


def handler_latency(run_dir: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of the page's grid request and, interleaved, of the bare ``model.sample`` it wraps."""
    import genkit
    from genkit.serve.page import RunPage

    page = RunPage(genkit.load_run(run_dir, device="cpu"), run_dir.name)
    run = page.run
    condition = run.condition("shape::circle,large", 16)
    page.grid("shape::circle,large", 16, 0, "data")  # warm-up
    grid, bare = [], []
    with torch.no_grad():
        for seed in range(1, repeats + 1):
            start = time.perf_counter()
            page.grid("shape::circle,large", 16, seed, "data")
            grid.append(time.perf_counter() - start)
            start = time.perf_counter()
            run.model.sample(condition, run.latents(16, seed))
            bare.append(time.perf_counter() - start)
    return sorted(grid)[len(grid) // 2], sorted(bare)[len(bare) // 2]


def import_seconds(module: str, env: dict) -> float:
    """Wall time of ``python -c "import MODULE"`` in a fresh process, minus a bare interpreter's."""
    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - start
    return wall(f"import {module}") - wall("pass")


def http_round_trip(url: str, repeats: int) -> float:
    """Median seconds from the grid request sent over HTTP (Gradio's queue) to its image received."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    args = ("shape::circle", "any", "on", "any", "any", "any")  # shape, color, large, left, top, outline
    client.predict(*args, 16, 0, "data", 1.0, api_name="/run")
    times = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        client.predict(*args, 16, seed, "data", 1.0, api_name="/run")
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
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the handler (genkit serve: 1)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--port", type=int, default=7877)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="genkit-bench-serve-"))
    try:
        run_dir = args.run or make_run(scratch / "cvae-shapes-64")
        grid, bare = handler_latency(run_dir, args.repeats)
        rows = [("handler: 16-image grid, 64x64 (attributes, rest, sampling, PNG, HTML)", f"{grid * 1000:.0f} ms",
                 "≤ 300 ms"),
                ("  of which the bare model.sample of 16 images", f"{bare * 1000:.0f} ms", "")]

        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "GRADIO_ANALYTICS_ENABLED": "False"}
        rows.append(("  import torch (fresh process)", f"{import_seconds('torch', env):.1f} s", ""))
        rows.append(("  import gradio (fresh process)", f"{import_seconds('gradio', env):.1f} s", ""))
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "genkit", "serve", "--run", str(run_dir), "--port",
                                    str(args.port), "--device", "cpu"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            url = process.stdout.readline().strip()
            listening = time.perf_counter() - started
            rows.append(("start: `genkit serve` to URL printed (listening)", f"{listening:.1f} s", ""))
            rows.append(("HTTP: grid request to image received (gradio_client, 16 images)",
                         f"{http_round_trip(url, args.repeats) * 1000:.0f} ms", "≤ 300 ms"))
            driver = browser()
            if driver is None:
                rows.append(("browser figures", "skipped (no chromium/chromedriver/selenium)", ""))
            else:
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys
                from selenium.webdriver.support.ui import WebDriverWait

                try:
                    wait = WebDriverWait(driver, 120, poll_frequency=0.01)
                    # the tail of the image's data URL: cheap to poll, and it changes with the image
                    src = lambda: driver.execute_script(  # noqa: E731
                        "const i = document.querySelector('#grid-0 img'); return i ? i.src.slice(-96) : null;")
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
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
        print(f"cvae 64x64 (latent 32, channels 32/64), CPU, handler on {args.threads} torch thread(s), "
              f"median of {args.repeats}\n")
        print(table(rows, ("what", "measured", "target")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

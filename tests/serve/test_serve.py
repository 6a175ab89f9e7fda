"""``genkit serve``: the page's logic without a browser, bad input, and the page in headless Chromium."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import genkit
from conftest import interrupt
from genkit.sampling import attributes
from genkit.cli.app import build_app
from genkit.serve.page import (ANY, RunPage, attribute_controls, check_request, command_line, matches,
                              spec_from_values)

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ["shape::circle", "shape::square", "shape::triangle", "shape::cross", "color::red", "color::green",
          "color::blue", "color::yellow", "large", "left", "top", "outline"]


@pytest.fixture(scope="module")
def page(tiny_run) -> RunPage:
    return RunPage(genkit.load_run(tiny_run, device="cpu"), "tiny")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _data_url_png(html: str) -> bytes:
    import base64
    import re

    return base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1))


# --- controls -> the same condition as --attrs ---------------------------------------------------

def test_controls_follow_the_declared_exclusive_groups():
    controls = attribute_controls(SHAPES, ["shape", "color"])
    assert controls.exclusive == {"shape": SHAPES[:4], "color": SHAPES[4:8]}
    assert controls.families == {} and controls.flags == SHAPES[8:]
    cub = ["has_wing_color::blue", "has_wing_color::red", "species::001_Albatross", "species::002_Auklet"]
    controls = attribute_controls(cub, ["species"])
    assert controls.exclusive == {"species": cub[2:]} and controls.families == {"has_wing_color": cub[:2]}
    # nothing is guessed from the names: undeclared, a family is a multi-select
    assert attribute_controls(SHAPES, []).families == {"shape": SHAPES[:4], "color": SHAPES[4:8]}


def test_control_values_build_the_condition_of_the_same_attrs(page):
    values = ["shape::circle", ANY, "on", "off", ANY, ANY]
    spec = page.spec(values)
    assert spec == "shape::circle,large,-left"
    assert torch.equal(page.run.conditions(spec, 3, 0, "off").condition[0],
                       page.run.conditioner.encode("shape::circle,large,-left"))
    families = attribute_controls(["g::a", "g::b", "x"], [])
    assert spec_from_values(families, [["g::a", "g::b"], "on"]) == "g::a,g::b,x"
    with pytest.raises(genkit.UsageError, match="is not a value of 'shape'"):
        page.spec(["color::red", ANY, ANY, ANY, ANY, ANY])


def test_the_grid_equals_genkit_sample_and_its_command_line_reproduces_it(page, tiny_run, tmp_path):
    spec = "shape::triangle,-outline"
    view = page.grid(spec, 12, 3, "data", {"temperature": 0.8})
    assert view.command == command_line(tiny_run, spec, 12, 3, "data", ["--temperature", "0.8"])
    args = shlex.split(view.command)[1:] + ["--nrow", "8", "--out", str(tmp_path / "cli.png")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert np.array_equal(_png_pixels(_data_url_png(view.html)), _png_pixels((tmp_path / "cli.png").read_bytes()))
    assert view.sets.count("<li>") == 12 and "shape::triangle" in view.sets


def test_same_seed_same_images_and_n_and_temperature_respected(page):
    a = _png_pixels(_data_url_png(page.grid("large", 4, 1, "off").html))
    b = _png_pixels(_data_url_png(page.grid("large", 4, 1, "off", {"temperature": 1.0}).html))
    c = _png_pixels(_data_url_png(page.grid("large", 4, 2, "off").html))
    d = _png_pixels(_data_url_png(page.grid("large", 4, 1, "off", {"temperature": 0.3}).html))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)
    assert a.shape == (2 + 18, 4 * 18 + 2, 3)  # one row of four 16-pixel images
    one = _png_pixels(_data_url_png(page.grid("large", 1, 1, "off").html))
    assert one.shape == (16, 16, 3)  # a single image comes without a frame, as in genkit sample


def test_vary_and_interpolate_views(page, tiny_run):
    view = page.vary("shape::circle", "large", 5, 0, "data")
    assert _png_pixels(_data_url_png(view.html)).shape == (2 * 18 + 2, 5 * 18 + 2, 3)
    assert "--vary large" in view.command
    view = page.interpolate("shape::circle", "shape::square,large", 3, 4, 0, "off")
    assert _png_pixels(_data_url_png(view.html)).shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    assert "--interpolate shape::circle shape::square,large --steps 4" in view.command


@pytest.mark.parametrize("n, seed, rest, message", [
    (0, 0, "data", "number of samples 0 is outside 1-64"),
    (65, 0, "data", "number of samples 65 is outside 1-64"),
    (2.5, 0, "data", "number of samples 2.5 must be a whole number from 1 to 64"),
    (True, 0, "data", "must be a whole number"),
    ("4", 0, "data", "must be a whole number"),
    (4, -3, "data", "seed -3 must be a whole number from 0 to 9223372036854775807"),
    (4, 10**23, "data", "seed 100000000000000000000000 must be a whole number from 0 to 9223372036854775807"),
    (4, 2**63, "data", "seed 9223372036854775808 must be"),
    (4, 1e300, "data", "must be a whole number from 0 to"),
    (4, float("inf"), "data", "seed inf must be a whole number"),
    (4, 0, "most", "rest 'most' is not known"),
])
def test_page_requests_out_of_bounds_are_refused(n, seed, rest, message):
    with pytest.raises(genkit.UsageError, match=message):
        check_request(n, seed, rest)


def test_the_rest_left_to_the_model_is_offered_only_for_a_run_that_can_and_refused_in_one_line_otherwise(
        page, flow_run, tmp_path):
    flow = RunPage(genkit.load_run(flow_run, device="cpu"), "flow")
    assert flow.run.rest_modes == ("data", "off", "model") and page.run.rest_modes == ("data", "off")
    view = flow.grid("shape::circle", 2, 1, "model", {"steps": 2})
    assert view.command == command_line(flow_run, "shape::circle", 2, 1, "model", ["--sampling-steps", "2"])
    args = shlex.split(view.command)[1:] + ["--out", str(tmp_path / "cli.png")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert np.array_equal(_png_pixels(_data_url_png(view.html)), _png_pixels((tmp_path / "cli.png").read_bytes()))
    message = ("rest model needs a model trained with attributes left unspecified (attribute dropout); this run's "
               "model 'cvae' was not: use rest data or rest off")
    for request in (lambda: page.grid("large", 2, 0, "model"), lambda: page.vary("", "large", 2, 0, "model"),
                    lambda: page.interpolate("large", "top", 2, 3, 0, "model")):
        with pytest.raises(genkit.UsageError) as caught:
            request()
        assert str(caught.value) == message
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    from genkit.serve.layout import build_page

    def choices(run_page):
        radio = next(b for b in build_page([run_page]).blocks.values() if getattr(b, "elem_id", None) == "rest-0")
        return [value for _, value in radio.choices]

    assert choices(flow) == ["data", "off", "model"] and choices(page) == ["data", "off"]


@pytest.mark.parametrize("temperature, message", [
    (0, "--temperature 0 is outside"), (-1.0, "is outside"), (None, None), (float("nan"), "must be a finite number"),
    ("warm", "must be a number"), (10**400, "must be a finite number"), (1e308, "is outside"),
    ("x" * 10**6, r"--temperature 'xxx.*…' \(1000000 characters\) must be a number"), (True, "must be a number"),
])
def test_the_models_own_sampling_options_are_checked_on_the_page(page, temperature, message):
    if message is None:  # an empty box falls back to the page's default
        assert page.grid("large", 2, 0, "off", {"temperature": temperature}).html
        return
    with pytest.raises(genkit.UsageError, match=message):
        page.grid("large", 2, 0, "off", {"temperature": temperature})


def test_attributes_not_in_the_run_are_refused_on_the_page(page):
    with pytest.raises(genkit.UsageError, match="unknown attribute 'wings'"):
        page.interpolate("wings", "large", 2, 4, 0, "data")
    with pytest.raises(genkit.UsageError, match="attribute 'wings' is not in this run"):
        page.vary("", "wings", 2, 0, "data")
    with pytest.raises(genkit.UsageError, match="both values of 'shape'"):
        page.interpolate("shape::circle,shape::cross", "large", 2, 4, 0, "data")


def test_search_filters_controls_by_name():
    assert matches("circ", "shape", SHAPES[:4]) and matches("SHA", "shape", SHAPES[:4])
    assert not matches("red", "shape", SHAPES[:4]) and matches("", "large", ["large"])


# --- bad input on the command line: one line, exit 2, before the server starts ---------------------

def _serve(args):
    return CliRunner().invoke(build_app(), ["serve", *args])


def _one_line_exit_2(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "serving" not in result.output


def test_missing_unreadable_and_unknown_run_folders_are_refused(tiny_run, tmp_path):
    _one_line_exit_2(_serve(["--run", str(tmp_path / "nope")]), "run folder", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_exit_2(_serve(["--run", str(tmp_path / "empty")]), "config.json does not exist",
                     "is this a genkit run folder?")
    odd = tmp_path / "odd"
    shutil.copytree(tiny_run, odd)
    (odd / "config.json").unlink()
    (odd / "config.json").mkdir()  # unreadable as a file, even for root
    _one_line_exit_2(_serve(["--run", str(odd)]), "config.json cannot be read")
    _one_line_exit_2(_serve(["--run", str(tiny_run), "--run", str(tmp_path / "nope")]), "does not exist")


def test_a_port_in_use_is_refused(tiny_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line_exit_2(_serve(["--run", str(tiny_run), "--port", str(port)]), f"port {port} on 127.0.0.1 is not free",
                         "pass --port with a free port")


def test_without_gradio_the_install_command_is_shown(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    _one_line_exit_2(_serve(["--run", str(tiny_run), "--port", str(_free_port())]),
                     'pip install "genkit-cvae[serve]"')


# --- the server -------------------------------------------------------------------------------

def _start(run_dirs, port):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "genkit", "serve", "--port", str(port), "--device", "cpu"]
    for d in run_dirs:
        command += ["--run", str(d)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = process.stdout.readline().strip()  # printed once the server listens
    if not url:
        process.kill()
        raise AssertionError(f"genkit serve did not start: {process.stderr.read()}")
    return process, url


@pytest.fixture(scope="module")
def server(tiny_run):
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    port = _free_port()
    process, url = _start([Path(os.environ.get("GENKIT_SERVE_RUN", tiny_run))], port)
    yield url
    code, err = interrupt(process)
    assert code == 0 and "Traceback" not in err, err


def _status(url: str) -> int:
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_server_serves_the_page_and_no_file(server, tiny_run):
    assert server.startswith("http://127.0.0.1:")
    assert _status(server) == 200
    for path in ("gradio_api/file=/etc/passwd", f"gradio_api/file={tiny_run}/config.json", "file=/etc/passwd",
                 "gradio_api/file/etc/passwd", "gradio_api/proxy=http://example.com/", "assets/../../etc/passwd"):
        assert _status(server + path) in (403, 404), path
    upload = urllib.request.Request(server + "gradio_api/upload", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(upload, timeout=10)
    assert refused.value.code == 403


# --- the page in a real browser -------------------------------------------------------------------

def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000",
                # the network is closed: every host but 127.0.0.1 fails to resolve, as on a machine offline
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_the_page_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(server)

        def grid_src(selector="#grid-0 img"):
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            return found[0].get_attribute("src") if found else None

        def status():
            return browser.find_element(By.ID, "status-0").text.strip()

        first = wait.until(lambda _: grid_src())
        assert first.startswith("data:image/png;base64,") and status() == ""
        download = browser.find_element(By.CSS_SELECTOR, "#grid-0 a[download]")
        browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))", download)
        assert download.get_attribute("href") == first  # the link downloads the grid itself

        # tick an attribute: the grid changes, without an error
        large = browser.find_element(By.ID, "a-0-large")
        large.find_element(By.XPATH, ".//label[normalize-space()='on']").click()
        ticked = wait.until(lambda _: (src := grid_src()) != first and src)
        assert status() == ""
        assert "--attrs large" in browser.find_element(By.CSS_SELECTOR, "#command-0 textarea, #command-0 input") \
            .get_attribute("value")

        # change the seed: the grid changes again
        seed = browser.find_element(By.CSS_SELECTOR, "#seed-0 input")
        seed.send_keys(Keys.CONTROL, "a")
        seed.send_keys("7", Keys.ENTER)
        wait.until(lambda _: (src := grid_src()) not in (first, ticked) and src)
        assert status() == ""

        # a temperature of 0 is refused on the page, and the page keeps working
        temperature = browser.find_element(By.CSS_SELECTOR, "#temperature-0 input")
        temperature.send_keys(Keys.CONTROL, "a")
        temperature.send_keys("0", Keys.ENTER)
        wait.until(lambda _: "temperature" in status() and "is outside (0, 100]" in status())
        temperature.send_keys(Keys.CONTROL, "a")
        temperature.send_keys("1", Keys.ENTER)
        wait.until(lambda _: status() == "")

        # the vary view
        browser.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='vary one attribute']").click()
        browser.find_element(By.ID, "vary-0").click()
        vary = wait.until(lambda _: grid_src("#vary-image-0 img"))
        assert vary.startswith("data:image/png;base64,") and status() == ""

        # nothing was fetched from anywhere but the server
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [r for r in resources if not r.startswith(("http://127.0.0.1", "data:", "blob:"))]
        assert outside == []

        browser.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='grid']").click()
        time.sleep(0.5)
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("GENKIT_UPDATE_DOCS") == "1":  # refresh the docs' screenshot
            _save_small_png(shot, ROOT / "docs" / "images" / "serve.png")
    finally:
        browser.quit()


def _save_small_png(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image = image.convert("RGB")
        image.thumbnail((1100, 1100))
        image.quantize(colors=128).save(target, optimize=True)


def test_the_page_notes_when_no_training_vector_agrees(page):
    spec = None
    table = page.run.training_attributes()[0]
    names = page.run.attribute_names
    for shape in names[:4]:
        for color in names[4:8]:
            for flags in range(16):
                candidate = [shape, color] + [n if (flags >> k) & 1 else f"-{n}" for k, n in enumerate(names[8:])]
                request = attributes.parse_attrs(candidate, names)
                if len(table.agreeing(request)) == 0:
                    spec = ",".join(candidate)
                    break
    assert spec is not None
    view = page.grid(spec, 4, 0, "data")
    assert "no training image has" in view.note and "off" in view.note
    assert page.grid("large", 4, 0, "data").note == ""


def test_several_runs_get_a_picker_with_distinct_labels(tiny_run, tmp_path):
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    from genkit.serve.layout import build_page
    from genkit.serve.page import page_labels

    other = tmp_path / "b" / tiny_run.name
    shutil.copytree(tiny_run, other)
    # colliding names are told apart by as few of their last path parts as needed, never the whole path
    labels = page_labels([tiny_run, other])
    assert labels == [f"{tiny_run.parent.name}/{tiny_run.name}", f"b/{tiny_run.name}"]
    assert page_labels([tiny_run, tmp_path / "x"]) == [tiny_run.name, "x"]
    pages = [RunPage(genkit.load_run(d, device="cpu"), label) for d, label in zip([tiny_run, other], labels)]
    demo = build_page(pages)
    picker = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "run-picker")
    assert picker.visible and [value for _, value in picker.choices] == labels

"""The edit tab of ``genkit serve``: its logic without a browser, bounded uploads, and the tab in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from genkit.serve.page import attribute_controls
from genkit.serve.edit_tab import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, EditTab, change_spec
from conftest import png_header_only
from conftest import interrupt
from test_serve import _browser, _free_port, _start


@pytest.fixture(scope="module")
def tab(tiny_run) -> EditTab:
    from genkit.evaluation.classifier import train_classifier
    from genkit.sampling.run import open_run_data

    run = genkit.load_run(tiny_run, device="cpu")
    train_classifier(open_run_data(run), epochs=1, device="cpu")  # uploads are read by it
    return EditTab(run, attribute_controls(run.attribute_names, run.exclusive_groups))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def test_a_picked_test_image_edits_as_run_edit_does(tab):
    picked = tab.pick(5)
    values = tab.values(picked.vector)
    assert len(values) == 3 and values[0].startswith("shape::") and values[1].startswith("color::")
    values[1] = "color::blue" if values[1] != "color::blue" else "color::green"
    view = tab.view(picked, values)
    assert view.html.count("<img") == 3 and "original" in view.html and "reconstruction" in view.html
    change = change_spec(picked.vector, tab.vector(values), tab.run.attribute_names, tab.run.exclusive_groups)
    assert change == values[1] and view.command.endswith(f"--split test --index 5 --set {change}")
    images, labels = tab.dataset.read_uint8([5])
    expected = tab.run.edit(images, labels, set=change).edited[0][0]
    shown = view.html.split('src="')[3].split('"')[0]
    with Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1]))) as image:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    assert (pixels.int() - expected.mul(255).add(0.5).clamp(0, 255).int()).abs().max() <= 1


def test_the_edit_mode_chooses_residual_or_redraw_edits_and_the_command_says_which(tab):
    picked = tab.pick(5)
    images, labels = tab.dataset.read_uint8([5])
    values = tab.values(picked.vector)

    def cells(view):
        sources = [part.split('"')[0] for part in view.html.split('src="')[1:]]
        return [np.array(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))) for src in sources]

    original, reconstruction, unchanged = cells(tab.view(picked, values, "residual"))
    assert np.array_equal(unchanged, original) and not np.array_equal(reconstruction, original)
    assert np.array_equal(cells(tab.view(picked, values, "redraw"))[2], reconstruction)
    assert "the edit that changes nothing is the reconstruction" in tab.view(picked, values).command  # the default
    assert "the edit that changes nothing is the image itself" in tab.view(picked, values, "residual").command
    values[1] = "color::blue" if values[1] != "color::blue" else "color::green"
    for mode in ("residual", "redraw"):
        view = tab.view(picked, values, mode)
        expected = tab.run.edit(images, labels, set=values[1], edit_mode=mode).edited[0][0]
        got = torch.from_numpy(cells(view)[2]).permute(2, 0, 1)
        assert (got.int() - expected.mul(255).add(0.5).clamp(0, 255).int()).abs().max() <= 1
        assert view.command.endswith(values[1] + ("" if mode == "redraw" else " --edit-mode residual"))
    with pytest.raises(genkit.UsageError, match="edit mode 'sideways' is not known; choose residual"):
        tab.view(picked, values, "sideways")


def test_the_tab_offers_the_mode_as_a_radio_wired_to_the_edit(tab, tiny_run):
    gr = pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    from genkit.serve.layout import build_page
    from genkit.serve.page import RunPage

    demo = build_page([RunPage(tab.run, tiny_run.name)])
    radio = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "edit-mode-0")
    assert isinstance(radio, gr.Radio) and radio.value == "redraw"
    assert [value for _, value in radio.choices] == ["redraw", "residual"]
    toggle = next(f for f in demo.fns.values() if f.fn.__name__ == "on_toggle")
    assert radio in toggle.inputs and (radio._id, "input") in [tuple(t) for t in toggle.targets]  # a click redraws
    picked = tab.pick(2)
    values = tab.values(picked.vector)
    values[2] = ["top"] if "top" not in values[2] else []
    status, html, command = toggle.fn(picked, "residual", *values)
    assert status == "" and html.count("<img") == 3 and command.endswith("--edit-mode residual")


def test_thumbnails_are_paged_and_rows_outside_the_split_refused(tab):
    html, label, page = tab.thumbnails(1)
    assert page == 1 and html.count("<img") == 8 and 'data-row="24"' in html and "24-31 of 32" in label
    assert tab.thumbnails(99)[2] == 1 and tab.thumbnails(-3)[2] == 0  # clamped, not an error
    for row, message in ((32, "test image 32 does not exist; choose 0-31"), ("7", "must be a whole number"),
                         (None, "must be a whole number"), (2.5, "must be a whole number")):
        with pytest.raises(genkit.UsageError, match=message):
            tab.pick(row)
    with pytest.raises(genkit.UsageError, match="pick a test image or upload one first"):
        tab.view(None, tab.values(torch.zeros(12)))
    with pytest.raises(genkit.UsageError, match="is not a value of 'shape'"):
        tab.view(tab.pick(0), ["color::red", "color::red", []])


def test_an_uploaded_image_is_brought_to_size_and_read_by_the_classifier(tab):
    raw = _png_bytes(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    picked = tab.upload("mine.png", len(raw), _data_url(raw))
    assert picked.pixels.shape == (3, 16, 16) and picked.source.startswith("uploaded file 'mine.png'")
    groups = [n.split("::")[0] for n, v in zip(tab.run.attribute_names, picked.vector.tolist()) if v and "::" in n]
    assert sorted(groups) == ["color", "shape"]  # one value of each exclusive family
    values = tab.values(picked.vector)
    large = "large" in values[2]
    values[2] = [n for n in values[2] if n != "large"] if large else [*values[2], "large"]
    assert tab.view(picked, values).command.endswith("--image YOUR_IMAGE --set " + ("-large" if large else "large"))


@pytest.mark.parametrize("name, size, data, message", [
    ("notes.txt", 5, _data_url(b"hello"), "uploaded file 'notes.txt' is not an image genkit reads"),
    ("big.png", MAX_UPLOAD_BYTES + 1, "", "is 4.0 MiB; the page takes images up to 4.0 MiB"),
    ("big.png", 10, "data:image/png;base64," + "A" * (MAX_UPLOAD_BYTES * 4 // 3 + 400), "is more than 4.0 MiB"),
    ("x.png", 10, "", "came without its contents"),
    ("x.png", 10, "data:image/png,abc", "did not arrive as a data URL"),
    ("x.png", 10, "data:image/png;base64,@@@", "did not arrive intact"),
    ("empty.png", 0, "data:image/png;base64,", "is empty (0 bytes)"),
])
def test_bad_uploads_are_refused_in_one_line(tab, name, size, data, message):
    with pytest.raises(genkit.UsageError) as refused:
        tab.upload(name, size, data)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tab, tmp_path):
    side = int(MAX_UPLOAD_PIXELS ** 0.5) + 1
    png_header_only(tmp_path / "bomb.png", side, side)  # a few hundred bytes declaring 16.8 megapixels
    raw = (tmp_path / "bomb.png").read_bytes()
    assert len(raw) < 200
    with pytest.raises(genkit.UsageError, match=f"is {side}x{side} pixels, more than the 17 megapixels"):
        tab.upload("bomb.png", len(raw), _data_url(raw))
    png_header_only(tmp_path / "huge.png", 30000, 30000)
    raw = (tmp_path / "huge.png").read_bytes()
    with pytest.raises(genkit.UsageError, match="it may be a decompression bomb"):
        tab.upload("huge.png", len(raw), _data_url(raw))


def test_the_upload_limit_stays_below_the_request_body_cap():
    assert MAX_UPLOAD_BYTES * 4 / 3 + 1024 < 8 * 2**20  # the data URL and its event fit in one request


# --- the tab in a real browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tab, tiny_run):
    pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
    process, url = _start([Path(os.environ.get("GENKIT_SERVE_RUN", tiny_run))], _free_port())
    yield url
    code, err = interrupt(process)
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_the_edit_tab_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    too_large = tmp_path / "large.png"
    too_large.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 10))
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png_bytes(np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(server)
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#grid-0 img"))
        browser.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='edit an image']").click()

        def images():
            return [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "#edit-result-0 img")]

        def status():
            return browser.find_element(By.ID, "edit-status-0").text.strip()

        # pick a test image: original | reconstruction | edit
        thumbs = wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#edit-thumbs-0 img[data-row]"))
        assert len(thumbs) == 24
        thumbs[3].click()
        first = wait.until(lambda _: (found := images()) and len(found) == 3 and found)
        assert all(src.startswith("data:image/png;base64,") for src in first) and status() == ""
        assert first[1] == first[2]  # nothing changed yet: the (redraw) edit is the reconstruction
        mode = browser.find_element(By.ID, "edit-mode-0")
        mode.find_element(By.XPATH, ".//label[normalize-space()='residual']").click()
        wait.until(lambda _: (found := images()) and found[2] == found[0])  # residual: the image itself
        mode.find_element(By.XPATH, ".//label[normalize-space()='redraw']").click()
        wait.until(lambda _: (found := images()) and found[2] == found[1])
        assert "test image 3:" in browser.find_element(By.ID, "edit-attributes-0").text

        # toggle an attribute: the edit changes, the original and the reconstruction do not
        flags = browser.find_element(By.ID, "edit-flags-0")
        flags.find_element(By.XPATH, ".//label[normalize-space()='top']").click()
        edited = wait.until(lambda _: (found := images()) and found[2] != first[2] and found)
        assert edited[:2] == first[:2] and status() == ""
        command = browser.find_element(By.CSS_SELECTOR, "#edit-command-0 textarea, #edit-command-0 input")
        assert "--split test --index 3 --set" in command.get_attribute("value")
        # (the docs' screenshot of this tab comes from a trained run: benchmarks/serve_screenshot.py)

        # the next page of thumbnails
        browser.find_element(By.ID, "edit-next-0").click()
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#edit-thumbs-0 img[data-row='24']"))

        # uploads: refused in one line, the page unaffected; then a real one
        upload = browser.find_element(By.CSS_SELECTOR, "#edit-upload-0 input[type=file]")
        upload.send_keys(str(not_image))
        wait.until(lambda _: "is not an image genkit reads" in status())
        upload.send_keys(str(too_large))
        wait.until(lambda _: "the page takes images up to 4.0 MiB" in status())
        assert images() == edited
        upload.send_keys(str(photo))
        wait.until(lambda _: "uploaded file 'photo.png'" in browser.find_element(By.ID, "edit-attributes-0").text)
        assert status() == "" and len(images()) == 3 and images()[0] != edited[0]

        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [r for r in resources if "/upload" in r or "/file=" in r]  # no upload or file route was used
    finally:
        browser.quit()

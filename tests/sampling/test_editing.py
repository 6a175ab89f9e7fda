"""Editing real images: ``Run.edit``, ``genkit edit``, both capabilities (posterior, invert), and bad input."""

from __future__ import annotations

import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from conftest import error_line, invoke
from genkit.components.build import build_components
from genkit.sampling.editing import apply_change, parse_change, read_image, single_changes
from genkit.sampling.run import Run
from genkit.sampling.attributes import AttributeRequest
from genkit.store.weights import loss_has_state, save_weights
from genkit_datasets.torch_dataset import CachedImageDataset

NAMES = ["shape::circle", "shape::square", "shape::triangle", "shape::cross", "color::red", "color::green",
         "color::blue", "color::yellow", "large", "left", "top", "outline"]
GROUPS = ["shape", "color"]


@pytest.fixture(scope="module")
def run(tiny_run):
    return genkit.load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def test_split(run):
    from genkit.sampling.run import open_run_data

    return CachedImageDataset(open_run_data(run).path, "test")


@pytest.fixture(scope="module")
def classifier(run):
    """The attribute classifier of the tiny run's data (one epoch: it only has to exist)."""
    from genkit.evaluation.classifier import train_classifier
    from genkit.sampling.run import open_run_data

    train_classifier(open_run_data(run), epochs=1, device="cpu")


# --- what a change does ------------------------------------------------------------------------

def vector(*on: str) -> torch.Tensor:
    return torch.tensor([[1.0 if n in on else 0.0 for n in NAMES]])


def test_a_value_of_an_exclusive_family_replaces_the_old_one_and_flags_switch():
    before = vector("shape::circle", "color::red", "large")
    after = apply_change(before, parse_change("shape::square,-large,outline", NAMES, GROUPS), NAMES, GROUPS)
    assert torch.equal(after, vector("shape::square", "color::red", "outline"))
    again = apply_change(before, parse_change("color::red", NAMES, GROUPS), NAMES, GROUPS)
    assert torch.equal(again, before)  # asking for what the image has changes nothing


def test_single_changes_are_every_swap_and_every_flip():
    changes = single_changes(vector("shape::circle", "color::red", "large")[0].tolist(), NAMES, GROUPS)
    assert [name for name, _ in changes] == [n for n in NAMES if n not in ("shape::circle", "color::red")]
    requests = dict(changes)
    assert requests["shape::cross"] == AttributeRequest(on=("shape::cross",))
    assert requests["large"] == AttributeRequest(off=("large",)) and requests["top"] == AttributeRequest(on=("top",))


@pytest.mark.parametrize("spec, message", [
    ("", "--set '' changes nothing"),
    ("  ,  ", "changes nothing"),
    ("wings", "--set 'wings': unknown attribute 'wings'; valid attributes: shape::circle"),
    ("color::blue,color::red", "'color::blue' and 'color::red' are both values of 'color'"),
    ("-shape::circle", "switches 'shape::circle' off, but 'shape' holds exactly one value per image; switch "
                       "another value of 'shape' on instead"),
    ("large,-large", "asked for both on and off"),
])
def test_bad_changes_are_refused_by_name(spec, message):
    with pytest.raises(genkit.UsageError, match=None) as refused:
        parse_change(spec, NAMES, GROUPS)
    assert message in str(refused.value)


# --- the posterior path: the posterior mean, carried through the conditional prior -----------------

def test_an_edit_of_a_dataset_item_is_decode_of_encode_with_the_changed_vector(run, test_split):
    images, labels = test_split.read_uint8(range(4))
    edits = run.edit(images, labels, set=["color::blue", "large"])
    x, model = images.float() / 255, run.model
    with torch.no_grad():
        mu, _ = model.encode(x, labels)
        for change, edited, after in zip(("color::blue", "large"), edits.edited, edits.after):
            expected_vector = apply_change(labels, parse_change(change, NAMES, GROUPS), NAMES, GROUPS)
            assert torch.equal(after, expected_vector)
            mu_p, logvar_p = model.prior_params(labels)
            mu_q, logvar_q = model.prior_params(after)
            z = mu_q + torch.exp(0.5 * (logvar_q - logvar_p)) * (mu - mu_p)
            assert torch.allclose(edited, model.decode(z, after).clamp(0, 1), atol=1e-6)
        assert torch.allclose(edits.reconstruction, model.decode(mu, labels).clamp(0, 1), atol=1e-6)
    assert edits.method == "posterior" and edits.rows().shape == (4, 4, 3, 16, 16)
    assert torch.equal(edits.original, x)


def test_the_edit_that_changes_nothing_is_the_reconstruction(run, test_split):
    images, labels = test_split.read_uint8([0])
    own_color = next(n for n, v in zip(NAMES, labels[0]) if v and n.startswith("color::"))
    edits = run.edit(images, labels, set=own_color)
    assert torch.equal(edits.edited[0], edits.reconstruction)
    assert not torch.equal(run.edit(images, labels, set="-large" if labels[0, 8] else "large").edited[0],
                           edits.reconstruction)


def test_attributes_may_be_one_spec_for_every_image(run, test_split):
    images, _ = test_split.read_uint8(range(2))
    edits = run.edit(images, "shape::square,color::green", set="top")
    assert torch.equal(edits.before, vector("shape::square", "color::green").expand(2, -1))
    with pytest.raises(genkit.UsageError, match="do not fit the run's 16x16"):
        run.edit(torch.zeros(1, 3, 8, 8), "shape::square,color::green", set="top")
    one = vector("shape::square", "color::green")[0]
    assert torch.equal(run.edit(images, one, set="top").before, edits.before)  # one (A,) vector for every image
    for wrong in (torch.zeros(len(one), 2), torch.zeros(10), torch.zeros(3, len(one))):  # transposed, short, 3 for 2
        with pytest.raises(genkit.UsageError, match="do not match 2 images of 12 attributes"):
            run.edit(images, wrong, set="top")


# --- the invert path: a hand-written invertible model ----------------------------------------------

class AffineFlow(torch.nn.Module):
    """image = scale·noise + shift(condition): a sampler with an exact inverse, and no encoder."""

    def __init__(self, image_shape, conditioner, invertible: bool = True):
        super().__init__()
        self.noise_shape = tuple(image_shape)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("shift", torch.rand(conditioner.dim, *image_shape, generator=generator) * 0.2)
        if invertible:
            self.invert = self._invert

    def forward(self, images, condition):
        raise NotImplementedError

    def _offset(self, condition):
        return torch.einsum("ba,achw->bchw", condition.float(), self.shift)

    def sample(self, condition, noise, generator=None, *, scale: float = 0.5):
        """:param scale: the noise's share of the image."""
        return scale * noise + self._offset(condition)

    def _invert(self, images, condition, *, scale: float = 0.5):
        return (images - self._offset(condition)) / scale


@pytest.fixture(scope="module")
def toy_models():
    module = types.ModuleType("toy_edit_models")

    @genkit.hookimpl
    def register_models(register):
        register("toy-affine-flow", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner))
        register("toy-no-edit", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner, False))

    module.register_models = register_models
    sys.modules[module.__name__] = module
    genkit.register_plugin(module, name=module.__name__)
    yield
    genkit.unregister_plugin(module.__name__)
    sys.modules.pop(module.__name__, None)


def toy_run(model: str, directory: Path) -> Run:
    config = genkit.plan_run(model, "shapes", data_options={"count": 320, "seed": 5}, image_size=16, device="cpu")
    conditioner, built, loss = build_components(config)
    return Run(directory, config, built.eval(), conditioner, loss, torch.device("cpu"))


def test_a_model_that_inverts_its_sampler_edits_through_its_noise(toy_models, test_split, tmp_path):
    run = toy_run("toy-affine-flow", tmp_path)
    images, labels = test_split.read_uint8(range(3))
    edits = run.edit(images, labels, set="color::yellow,outline", scale=0.25)
    x = images.float() / 255
    noise = run.model.invert(x, labels, scale=0.25)
    after = edits.after[0]
    assert edits.method == "invert"
    assert torch.allclose(edits.edited[0], run.model.sample(after, noise, scale=0.25).clamp(0, 1), atol=1e-6)
    assert torch.allclose(edits.reconstruction, x, atol=1e-5)  # an exact inverse reconstructs exactly
    with pytest.raises(genkit.UsageError, match="'bogus' is not a sampling option"):
        run.edit(images, labels, set="outline", bogus=1)


def test_a_model_that_can_neither_encode_nor_invert_is_refused_in_one_line(toy_models, test_split, tmp_path):
    run = toy_run("toy-no-edit", tmp_path)
    with pytest.raises(genkit.UsageError, match="can neither encode images .* nor invert its sampler"):
        run.editor()
    from genkit.evaluation.edits import edit_metrics

    metrics = edit_metrics(run, test_split, classifier=None, seed=0)  # no classifier is touched
    assert metrics["edit_success"] is None and metrics["edit_psnr"] is None
    assert "neither" in metrics["edit_setup"]["skipped"]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(run.config.to_json())
    save_weights(run.model, folder / "model.safetensors")
    if loss_has_state(run.loss):
        save_weights(run.loss, folder / "loss.safetensors")
    line = error_line(invoke(["edit", "--run", folder, "--index", "0", "--set", "large"]))
    assert "model 'toy-no-edit' can neither encode images" in line
    assert not (folder / "edits.png").exists()


# --- genkit edit ---------------------------------------------------------------------------------

def _cells(path: Path, rows: int, columns: int, size: int = 16) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (rows * (size + 2) + 2, columns * (size + 2) + 2, 3)
    return np.stack([np.stack([pixels[2 + r * (size + 2):2 + r * (size + 2) + size,
                                      2 + c * (size + 2):2 + c * (size + 2) + size] for c in range(columns)])
                     for r in range(rows)])


def test_genkit_edit_writes_original_reconstruction_and_a_column_per_change(run, tiny_run, test_split, tmp_path):
    out = tmp_path / "edits.png"
    result = invoke(["edit", "--run", tiny_run, "--index", "2-4", "--set", "color::blue", "--set", "-top,large",
                     "--out", out])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert "3 row(s): original | reconstruction | color::blue | large,-top" in " ".join(result.stderr.split())
    cells = _cells(out, 3, 4)
    images, labels = test_split.read_uint8(range(2, 5))
    assert np.array_equal(cells[:, 0], images.permute(0, 2, 3, 1).numpy())  # the originals, exactly
    edits = run.edit(images, labels, set=["color::blue", "-top,large"])
    expected = edits.rows().mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    assert np.abs(cells.astype(int) - expected.astype(int)).max() <= 1


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height, with a few bytes of data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_image_files_of_every_mode_are_read_as_the_dataset_reader_does(tmp_path):
    from genkit.plugin_api import center_crop_resize

    rng = np.random.default_rng(0)
    files = {}
    files["rgb.jpg"] = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    files["palette.png"] = files["rgb.jpg"].convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files["cmyk.jpg"] = files["rgb.jpg"].convert("CMYK")
    files["grey16.png"] = Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16))
    for name, image in files.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as reopened:
            expected = center_crop_resize(reopened, (16, 16)).transpose(2, 0, 1)
        assert np.array_equal(read_image(tmp_path / name, (16, 16)).numpy(), expected), name
    with Image.open(tmp_path / "grey16.png") as grey:  # 16-bit scaled to 8 (v / 257), not clipped
        assert grey.mode.startswith("I")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_text("not an image"), "is not an image genkit reads"),
    # PostScript that Pillow would hand to Ghostscript (which would run it: here, forever)
    (lambda p: p.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n{} loop\n"),
     "is not an image genkit reads; give a PNG, JPEG, WEBP, GIF, BMP, TIFF or PPM file"),
    (lambda p: _png_header_only(p, 9000, 9000), "is 9000x9000 pixels, more than the 67 megapixels genkit decodes"),
    (lambda p: _png_header_only(p, 20000, 20000), "declares more pixels than genkit decodes (67 megapixels); it may "
                                                  "be a decompression bomb"),
    (lambda p: _png_header_only(p, 64, 64), "cannot be decoded"),
    (lambda p: Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32)).save(p.with_suffix(".tif"))
     or p.with_suffix(".tif").rename(p), "image mode 'F' (32-bit float) with values from 7.5 to 7.5"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_unreadable_image_files_are_refused_in_one_line(tiny_run, tmp_path, make, message):
    path = tmp_path / "input.png"
    make(path)
    line = error_line(invoke(["edit", "--run", tiny_run, "--image", path, "--set", "large",
                              "--out", tmp_path / "out.png"]))
    assert f"--image {path}" in line and message in line
    assert not (tmp_path / "out.png").exists()


def test_an_image_file_is_read_by_the_classifier_and_corrected_by_from(run, tiny_run, classifier, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(photo)
    result = invoke(["edit", "--run", tiny_run, "--image", photo, "--from", "shape::cross,color::green,-outline",
                     "--set", "large", "--out", tmp_path / "out.png"])
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "the attribute classifier reads: shape::" in err
    used = err.split("attributes used: ")[1].split(" wrote")[0]
    assert "shape::cross" in used and "color::green" in used and "outline" not in used
    cells = _cells(tmp_path / "out.png", 1, 3)
    assert np.array_equal(cells[0, 0], read_image(photo, (16, 16)).permute(1, 2, 0).numpy())


@pytest.mark.parametrize("args, message", [
    (["--index", "32", "--set", "large"], "--index 32 is outside the test split, which has 32 images (0-31)"),
    (["--index", "30-33", "--set", "large"], "--index 30-33 is outside the test split"),
    (["--index", "3-1", "--set", "large"], "ends before it starts"),
    (["--index", "a", "--set", "large"], "--index 'a' is not N or A-B"),
    (["--index", "9" * 5000, "--set", "large"], "is not N or A-B"),
    (["--index", "0", "--split", "nope", "--set", "large"], "split 'nope' does not exist"),
    (["--index", "0", "--set", "wings"], "unknown attribute 'wings'"),
    (["--index", "0", "--set", "color::red,color::blue"], "are both values of 'color'"),
    (["--index", "0", "--set", ""], "changes nothing"),
    (["--set", "large"], "give the image to edit: --index N (or A-B) of --split, or --image PATH"),
    (["--index", "0", "--from", "large", "--set", "large"], "--from corrects the attributes read from --image"),
    (["--index", "0", "--set", "large", "--out", "x.jpg"], "must end in .png"),
])
def test_bad_edit_requests_are_one_line_and_write_nothing(tiny_run, tmp_path, args, message):
    line = error_line(invoke(["edit", "--run", tiny_run, *args] + ([] if "--out" in args else
                                                                    ["--out", tmp_path / "e.png"])))
    assert message in line, line
    assert not list(tmp_path.iterdir())

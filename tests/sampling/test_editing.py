"""Editing real images: ``Run.edit``, ``genkit edit``, both capabilities (posterior, invert), partial inversion,
both edit modes (redraw, the default, and residual), and bad input."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genkit
from conftest import error_line, invoke, png_header_only
from genkit.components.build import build_components
from genkit.sampling.edit_images import read_image
from genkit.sampling.editing import apply_change, parse_change, single_changes
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

def test_a_redraw_edit_of_a_dataset_item_is_decode_of_encode_with_the_changed_vector(run, test_split):
    images, labels = test_split.read_uint8(range(4))
    edits = run.edit(images, labels, set=["color::blue", "large"])  # redraw, the default
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
    assert edits.method == "posterior" and edits.mode == "redraw" and edits.rows().shape == (4, 4, 3, 16, 16)
    assert torch.equal(edits.original, x)


def test_a_residual_edit_is_the_image_plus_what_the_change_alters_in_the_drawing(run, test_split):
    images, labels = test_split.read_uint8(range(4))
    residual = run.edit(images, labels, set=["large", "color::blue"], edit_mode="residual")
    redraw = run.edit(images, labels, set=["large", "color::blue"], edit_mode="redraw")
    x = images.float() / 255
    assert residual.mode == "residual" and torch.equal(residual.reconstruction, redraw.reconstruction)
    for k in range(2):
        expected = (x + redraw.edited[k] - redraw.reconstruction).clamp(0, 1)
        same = (residual.after[k] == residual.before).all(dim=1)
        expected[same] = x[same]  # an image the change leaves as it is: exactly the image
        assert torch.allclose(residual.edited[k], expected, atol=1e-6)
    assert (labels[:, 6] == 0).any() and not torch.equal(residual.edited[1], x)  # some image really turned blue


@pytest.mark.parametrize("mode", ["residual", "redraw"])
def test_the_edit_that_changes_nothing_is_the_image_or_the_reconstruction(run, test_split, mode):
    images, labels = test_split.read_uint8([0])
    own_color = next(n for n, v in zip(NAMES, labels[0]) if v and n.startswith("color::"))
    edits = run.edit(images, labels, set=own_color, edit_mode=mode)
    unchanged = edits.original if mode == "residual" else edits.reconstruction
    assert torch.equal(edits.edited[0], unchanged)
    assert not torch.equal(edits.original, edits.reconstruction)  # the model's drawing is not the image
    assert not torch.equal(run.edit(images, labels, set="-large" if labels[0, 8] else "large",
                                    edit_mode=mode).edited[0], unchanged)


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
    """image = scale·noise + shift(condition): a sampler with an exact inverse, and no encoder.

    Attribute ``a`` shifts only row ``a`` of the image, so a change of it touches that row alone.
    ``lossy`` rounds the inverted noise to quarters (a code that loses detail: the reconstruction is
    not the image); ``partway`` adds ``partial_invert``: the state at time 1 − depth is
    (x − depth·shift)/scale^depth, exactly invertible, and at depth 1 the noise itself.
    """

    def __init__(self, image_shape, conditioner, invertible: bool = True, lossy: bool = False,
                 partway: bool = False):
        super().__init__()
        self.noise_shape = tuple(image_shape)
        generator = torch.Generator().manual_seed(0)
        shift = torch.rand(conditioner.dim, *image_shape, generator=generator) * 0.2
        rows = torch.zeros(conditioner.dim, 1, image_shape[1], 1)
        rows[torch.arange(conditioner.dim), 0, torch.arange(conditioner.dim) % image_shape[1]] = 1
        self.register_buffer("shift", shift * rows)
        self.lossy = lossy
        self.calls: list[tuple] = []  # (method, depth, scale) of every partway call
        if invertible:
            self.invert = self._invert
        if partway:
            self.invert_partway, self.sample_partway = self._invert_partway, self._sample_partway

    def forward(self, images, condition):
        raise NotImplementedError

    def _offset(self, condition):
        return torch.einsum("ba,achw->bchw", condition.float(), self.shift)

    def sample(self, condition, noise, generator=None, *, scale: float = 0.5):
        """:param scale: the noise's share of the image."""
        return scale * noise + self._offset(condition)

    def _invert(self, images, condition, *, scale: float = 0.5):
        noise = (images - self._offset(condition)) / scale
        return noise.mul(4).round().div(4) if self.lossy else noise

    def _invert_partway(self, images, condition, depth, *, scale: float = 0.5):
        self.calls.append(("invert_partway", depth, scale))
        return (images - depth * self._offset(condition)) / scale ** depth

    def _sample_partway(self, latent, condition, depth, *, scale: float = 0.5):
        self.calls.append(("sample_partway", depth, scale))
        return latent * scale ** depth + depth * self._offset(condition)


class FixedFlow(AffineFlow):
    """The affine flow with no sampling options at all."""

    def sample(self, condition, noise, generator=None):
        return 0.5 * noise + self._offset(condition)


@pytest.fixture(scope="module")
def toy_models():
    module = types.ModuleType("toy_edit_models")

    @genkit.hookimpl
    def register_models(register):
        register("toy-affine-flow", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner))
        register("toy-no-edit", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner, False))
        register("toy-lossy-flow", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner, lossy=True))
        register("toy-partway-flow", lambda image_shape, conditioner: AffineFlow(image_shape, conditioner,
                                                                                 partway=True))
        register("toy-fixed-flow", lambda image_shape, conditioner: FixedFlow(image_shape, conditioner))

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


def saved(run: Run, folder: Path) -> Path:
    """``run`` written as a run folder (config and weights), for the command line."""
    folder.mkdir()
    (folder / "config.json").write_text(run.config.to_json())
    save_weights(run.model, folder / "model.safetensors")
    if loss_has_state(run.loss):
        save_weights(run.loss, folder / "loss.safetensors")
    return folder


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


def test_a_residual_edit_keeps_every_pixel_the_change_does_not_touch(toy_models, test_split, tmp_path):
    run = toy_run("toy-lossy-flow", tmp_path)  # its code loses detail: its drawings are not the image
    images, labels = test_split.read_uint8(range(3))
    x = images.float() / 255
    large = NAMES.index("large")  # the toy's attribute 8 shifts row 8 of the image only
    residual = run.edit(images, labels, set="-large" if labels[0, large] else "large", edit_mode="residual")
    redraw = run.edit(images, labels, set="-large" if labels[0, large] else "large", edit_mode="redraw")
    others = [r for r in range(16) if r != large]
    assert torch.equal(residual.edited[0][:, :, others], x[:, :, others])  # untouched rows: the image, exactly
    assert not torch.equal(residual.edited[0][:, :, large], x[:, :, large])  # the row the change moves
    assert not torch.allclose(redraw.edited[0][:, :, others], x[:, :, others], atol=1e-3)  # redraw loses detail
    assert not torch.allclose(residual.reconstruction, x, atol=1e-3)
    nothing = run.edit(images, labels, set=[n for n, v in zip(NAMES, labels[0]) if v and n.startswith("shape::")][0],
                       edit_mode="residual")
    assert torch.equal(nothing.edited[0][0], x[0])  # image 0 already has its shape: the edit is the image


def test_a_model_that_inverts_part_of_the_way_edits_from_there(toy_models, test_split, tmp_path):
    run = toy_run("toy-partway-flow", tmp_path)
    assert run.capabilities["partial_invert"] and not toy_run("toy-affine-flow", tmp_path).capabilities[
        "partial_invert"]
    images, labels = test_split.read_uint8(range(3))
    x = images.float() / 255
    edits = run.edit(images, labels, set="outline", edit_mode="redraw", edit_depth=0.5, scale=0.25)
    assert edits.depth == 0.5 and {call[:2] for call in run.model.calls} == {("invert_partway", 0.5),
                                                                             ("sample_partway", 0.5)}
    latent = run.model.invert_partway(x, labels, 0.5, scale=0.25)
    assert torch.allclose(edits.edited[0], run.model.sample_partway(latent, edits.after[0], 0.5, scale=0.25)
                          .clamp(0, 1), atol=1e-6)
    run.model.calls.clear()
    whole = run.edit(images, labels, set="outline", edit_mode="redraw", edit_depth="1")  # depth 1: invert/sample
    assert run.model.calls == [] and whole.depth == 1.0
    inverted = run.edit(images, labels, set="outline", edit_depth=0.5, invert_options={"scale": "0.3"}, scale=0.25)
    assert ("invert_partway", 0.5, 0.3) in run.model.calls and ("sample_partway", 0.5, 0.25) in run.model.calls
    assert inverted.mode == "redraw"  # the default


@pytest.mark.parametrize("depth, message", [
    (0, "--edit-depth 0 must be a number in (0, 1]"),
    (1.5, "--edit-depth 1.5 must be a number in (0, 1]"),
    (float("nan"), "--edit-depth nan must be a number in (0, 1]"),
    ("half", "--edit-depth 'half' must be a number in (0, 1]"),
    (True, "--edit-depth True must be a number in (0, 1]"),
])
def test_a_depth_outside_0_to_1_is_refused(toy_models, test_split, tmp_path, depth, message):
    run = toy_run("toy-partway-flow", tmp_path)
    images, labels = test_split.read_uint8([0])
    with pytest.raises(genkit.UsageError) as refused:
        run.edit(images, labels, set="outline", edit_depth=depth)
    assert str(refused.value).startswith(message) and run.model.calls == []


def test_edit_settings_a_model_cannot_use_are_refused_naming_why(run, toy_models, test_split, tmp_path):
    images, labels = test_split.read_uint8([0])
    refusals = [
        (run, {"edit_depth": 0.5}, "--edit-depth 0.5 needs a model that inverts its sampler part of the way (the "
                                   "capability partial_invert: invert_partway and sample_partway); model 'cvae' "
                                   "lacks it: leave out --edit-depth"),
        (toy_run("toy-affine-flow", tmp_path), {"edit_depth": 0.3}, "model 'toy-affine-flow' lacks it"),
        (run, {"invert_options": {"temperature": "0.5"}}, "--invert-opt sets sampling options of the inversion, "
                                                          "and model 'cvae' inverts no sampler"),
        (toy_run("toy-fixed-flow", tmp_path), {"invert_options": {"scale": "1"}},
         "model 'toy-fixed-flow' has no sampling options: leave out --invert-opt"),
        (toy_run("toy-affine-flow", tmp_path), {"invert_options": {"bogus": "1"}},
         "--invert-opt: 'bogus' is not a sampling option of model 'toy-affine-flow' (its sampling options: --scale)"),
        (run, {"edit_mode": "sideways"}, "--edit-mode 'sideways' is not known; choose residual"),
    ]
    for target, settings, message in refusals:
        with pytest.raises(genkit.UsageError) as refused:
            target.edit(images, labels, set="outline", **settings)
        assert message in str(refused.value), str(refused.value)


def test_a_model_that_can_neither_encode_nor_invert_is_refused_in_one_line(toy_models, test_split, tmp_path):
    run = toy_run("toy-no-edit", tmp_path)
    with pytest.raises(genkit.UsageError, match="can neither encode images .* nor invert its sampler"):
        run.editor()
    from genkit.evaluation.edits import edit_metrics

    metrics = edit_metrics(run, test_split, classifier=None, seed=0)  # no classifier is touched
    assert metrics["edit_success"] is None and metrics["edit_psnr"] is None
    assert "neither" in metrics["edit_setup"]["skipped"]
    folder = saved(run, tmp_path / "run")
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
    (lambda p: png_header_only(p, 9000, 9000), "is 9000x9000 pixels, more than the 67 megapixels genkit decodes"),
    (lambda p: png_header_only(p, 20000, 20000), "declares more pixels than genkit decodes (67 megapixels); it may "
                                                  "be a decompression bomb"),
    (lambda p: png_header_only(p, 64, 64), "cannot be decoded"),
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
    (["--index", "0", "--set", "large", "--edit-mode", "sideways"], "--edit-mode 'sideways' is not known; choose "
                                                                    "residual (the image plus what the change alters"),
    (["--index", "0", "--set", "large", "--edit-depth", "0"], "--edit-depth 0 must be a number in (0, 1]"),
    (["--index", "0", "--set", "large", "--edit-depth", "deep"], "--edit-depth 'deep' must be a number in (0, 1]"),
    (["--index", "0", "--set", "large", "--edit-depth", "0.5"], "the capability partial_invert: invert_partway and "
                                                                "sample_partway); model 'cvae' lacks it"),
    (["--index", "0", "--set", "large", "--invert-opt", "temperature=0.5"], "--invert-opt sets sampling options "
                                                                            "of the inversion, and model 'cvae' "
                                                                            "inverts no sampler"),
    (["--index", "0", "--set", "large", "--invert-opt", "guidance"], "--invert-opt 'guidance' is not KEY=VALUE; for "
                                                                     "example --invert-opt temperature=1.0"),
])
def test_bad_edit_requests_are_one_line_and_write_nothing(tiny_run, tmp_path, args, message):
    line = error_line(invoke(["edit", "--run", tiny_run, *args] + ([] if "--out" in args else
                                                                    ["--out", tmp_path / "e.png"])))
    assert message in line, line
    assert not list(tmp_path.iterdir())


def test_genkit_edit_in_each_mode_and_depth_from_the_command_line(toy_models, test_split, tmp_path):
    run = toy_run("toy-partway-flow", tmp_path)
    folder = saved(run, tmp_path / "run")
    images, labels = test_split.read_uint8([3])  # the toy runs' data is the tiny run's
    for args, mode, depth in ((["--edit-mode", "residual"], "residual", None),
                              (["--edit-depth", "0.5", "--invert-opt", "scale=0.3"], "redraw", 0.5)):
        out = tmp_path / f"{mode}.png"
        result = invoke(["edit", "--run", folder, "--index", "3", "--set", "outline", "--out", out, *args])
        assert result.exit_code == 0, result.output
        assert f"({mode}{'' if depth is None else f', depth {depth:g}'} edits)" in " ".join(result.stderr.split())
        settings = {"edit_mode": mode, "edit_depth": depth,
                    "invert_options": {"scale": "0.3"} if depth else None}
        expected = run.edit(images, labels, set="outline", **settings).rows()
        expected = expected.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
        assert np.abs(_cells(out, 1, 3).astype(int) - expected.astype(int)).max() <= 1

"""Faults and bad input (docs/reliability.md): every case exits with its code and one clear line,
loses nothing written before the fault, and leaves a run that ``--resume`` continues."""

from __future__ import annotations

import errno
import glob
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import genkit
import genkit.training.checkpoints
import genkit.runtime.memory
from genkit.cli.app import build_app
from genkit.store.images import save_grid
from genkit.sampling.grids import write_grid
from genkit_datasets.preprocess import center_crop_resize
from conftest import tmpfs

TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]"]
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(build_app(), [str(a) for a in args])


def one_line(result) -> str:
    """The single non-empty stderr line (progress bars aside), asserting there is exactly one."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and "━" not in line]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    return " ".join(errors[0].split())


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = cli("train", *TINY, "--limit", "48", "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


# --- 1. a diverging run ---------------------------------------------------------------------------

def test_a_run_diverging_before_its_first_epoch_keeps_a_finite_checkpoint_and_the_advice_works(tmp_path):
    run = tmp_path / "run"
    result = cli("train", *TINY, "--epochs", "1", "--lr", "1e6", "--log-every", "1", "--out", run)
    assert result.exit_code == 1, result.output
    message = one_line(result)
    assert "non-finite at step" in message
    checkpoint = Path(message.split("the last finite checkpoint is ")[1].split(".")[0])
    assert checkpoint.is_dir() and checkpoint.name == "step-000000000"
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())
    advice = message.split("`")[1]
    assert advice == f"genkit train --resume {run} --lr 0.002"
    result = cli(*shlex.split(advice)[1:])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 0.002
    [record] = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert record["step"] == 0 and record["changed"] == {"lr": {"from": 1e6, "to": 0.002}}
    assert all(torch.isfinite(t).all() for t in weights(run).values())


def test_resume_takes_the_safe_options_and_refuses_the_others_by_name(tiny_run, tmp_path):
    result = cli("train", "--resume", tiny_run, "--batch-size", "8")
    assert result.exit_code == 2
    message = one_line(result)
    assert message.startswith("error: --batch-size cannot be given with --resume")
    assert "--epochs, --min-steps, --lr, --device, --data-in, --workers, --grad-clip, --root, --cache-dir" in message  # TrainSpec's order, then the root
    result = cli("train", "--resume", tiny_run, "--lr", "-1")
    assert result.exit_code == 2 and "learning rate -1.0 must be a positive number" in one_line(result)


def test_resume_with_a_new_lr_trains_at_that_rate(tiny_run, tmp_path):
    """The optimizer's saved rate is replaced: two resumes with different rates end differently."""
    base = tiny_run
    ends = []
    for lr in ("0.002", "0.0001"):
        copy = tmp_path / f"lr-{lr}"
        subprocess.run(["cp", "-r", str(base), str(copy)], check=True)
        result = cli("train", "--resume", copy, "--epochs", "2", "--lr", lr, "--data-in", "disk", "--workers", "0")
        assert result.exit_code == 0, result.output
        assert "changed on resume: epochs 1 -> 2" in result.stderr
        ends.append(weights(copy))
    assert any(not torch.equal(ends[0][k], ends[1][k]) for k in ends[0])
    config = json.loads((tmp_path / "lr-0.0001" / "config.json").read_text())
    assert config["train"]["lr"] == 0.0001 and config["train"]["data_in"] == "disk" and config["train"]["epochs"] == 2


# --- 2. image modes --------------------------------------------------------------------------------

def _saved(image: Image.Image, path: Path) -> Image.Image:
    image.save(path)
    return Image.open(path)


GRAY16 = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)  # 0, 1, 128, 255 at 8 bits


@pytest.mark.parametrize("mode, make, expected", [
    ("I;16", lambda d: _saved(Image.fromarray(GRAY16), d / "a.png"), [0, 1, 128, 255]),
    ("I;16B", lambda d: _saved(Image.frombytes("I;16B", (4, 4), GRAY16.astype(">u2").tobytes()), d / "a.tif"),
     [0, 1, 128, 255]),
    ("I", lambda d: _saved(Image.fromarray(GRAY16.astype(np.int32)), d / "a.tif"), [0, 1, 128, 255]),
    ("F", lambda d: _saved(Image.fromarray(np.array([[0, 0.5, 1, 1 / 255]] * 4, np.float32)), d / "a.tif"),
     [0, 128, 255, 1]),
    ("L", lambda d: _saved(Image.fromarray(np.array([[0, 1, 128, 255]] * 4, np.uint8)), d / "a.png"), [0, 1, 128, 255]),
    ("1", lambda d: _saved(Image.fromarray(np.array([[0, 0, 255, 255]] * 4, np.uint8)).convert("1"), d / "a.png"),
     [0, 0, 255, 255]),
])
def test_gray_modes_keep_their_values(tmp_path, mode, make, expected):
    image = make(tmp_path)
    assert image.mode == mode
    pixels = center_crop_resize(image, (4, 4))
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 4, 3)
    assert pixels[0, :, 0].tolist() == expected and (pixels[..., 0] == pixels[..., 2]).all()


def test_transparency_is_composited_over_white_and_colour_modes_convert(tmp_path):
    palette = Image.new("P", (4, 4))
    palette.putpalette([200, 10, 10, 0, 0, 0] + [0] * 762)
    palette.putdata([0, 1] * 8)
    palette.info["transparency"] = 1
    cases = {
        "P": (_saved(palette, tmp_path / "p.png"), [[200, 10, 10], [255, 255, 255]]),
        "LA": (_saved(Image.merge("LA", [Image.new("L", (4, 4), 40), Image.frombytes("L", (4, 4), bytes([255, 0] * 8))]),
                      tmp_path / "la.png"), [[40, 40, 40], [255, 255, 255]]),
        "RGBA": (_saved(Image.merge("RGBA", [Image.new("L", (4, 4), v) for v in (0, 0, 200)]
                                    + [Image.frombytes("L", (4, 4), bytes([255, 0] * 8))]), tmp_path / "rgba.png"),
                 [[0, 0, 200], [255, 255, 255]]),
        "CMYK": (_saved(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), tmp_path / "c.tif"), [[255, 0, 0], [255, 0, 0]]),
    }
    for mode, (image, expected) in cases.items():
        assert image.mode == mode
        if mode == "P":
            assert "transparency" in image.info
        pixels = Image.fromarray(center_crop_resize(image, (4, 4)))
        assert [list(pixels.getpixel((0, 0))), list(pixels.getpixel((1, 0)))] == expected, mode


@pytest.mark.parametrize("mode, make, words", [
    ("LAB", lambda d: _saved(Image.new("LAB", (4, 4)), d / "a.tif"), "image mode 'LAB' cannot be converted"),
    ("I", lambda d: _saved(Image.fromarray(np.full((4, 4), 70000, np.int32)), d / "a.tif"),
     "image mode 'I' (32-bit integer) with values from 70000 to 70000"),
    ("F", lambda d: _saved(Image.fromarray(np.full((4, 4), 3.5, np.float32)), d / "a.tif"),
     "image mode 'F' (32-bit float) with values from 3.5 to 3.5"),
])
def test_modes_that_cannot_be_converted_faithfully_are_refused_by_name(tmp_path, mode, make, words):
    image = make(tmp_path)
    assert image.mode == mode
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        center_crop_resize(image, (4, 4))


def _folder(root: Path, images: dict[str, Image.Image]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, image) in enumerate(images.items()):
        image.save(root / name)
        rows.append(f"{name},{i % 2},{(i // 2) % 2}")
    (root / "attributes.csv").write_text("\n".join(["filename,a,b", *rows]) + "\n")
    return root


def test_a_16_bit_png_is_cached_with_its_values_and_a_lab_image_is_named(tmp_path):
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)  # up to 63000
    images = {f"{i}.png": Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)) for i in range(5)}
    images["deep.png"] = Image.fromarray(ramp)
    root = _folder(tmp_path / "data", images)
    info, _ = genkit.prepare_dataset("folder", root=root, image_size=8, cache_dir=tmp_path / "c", workers=1)
    import h5py

    with h5py.File(info.path, "r") as f:
        cached = f["images"][5, 0]
    np.testing.assert_array_equal(cached, np.round(ramp / 257).astype(np.uint8))
    assert cached.max() == 245 and cached.min() == 0  # not clipped to white

    Image.new("LAB", (8, 8)).save(root / "lab.tif")
    (root / "attributes.csv").write_text((root / "attributes.csv").read_text() + "lab.tif,1,1\n")
    result = cli("data", "prepare", "--data", "folder", "--root", root, "--image-size", "8", "--workers", "1",
                 "--cache-dir", tmp_path / "c")
    assert result.exit_code == 2
    message = one_line(result)
    assert f"cannot read image {root / 'lab.tif'}" in message and "image mode 'LAB'" in message


# --- 3. disk full ----------------------------------------------------------------------------------

def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("victim", ["state", "weights"])
def test_a_full_disk_while_checkpointing_is_one_line_and_the_last_checkpoint_survives(tiny_run, tmp_path, monkeypatch,
                                                                                      victim):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_run), str(run)], check=True)
    good = genkit.training.checkpoints.latest_checkpoint(run)
    before = weights(good)
    if victim == "state":
        monkeypatch.setattr(genkit.training.checkpoints.torch, "save", _enospc)
    else:
        import safetensors.torch

        real = safetensors.torch.save_file
        calls = {"n": 0}

        def save_file(*args, **kwargs):  # the checkpoint's weights are written; the run folder's fail
            calls["n"] += 1
            if calls["n"] > 1:
                _enospc()
            real(*args, **kwargs)

        monkeypatch.setattr("genkit.store.weights.save_file", save_file)
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 1, result.output
    message = one_line(result)
    assert "no space left on the device" in message
    latest = genkit.training.checkpoints.latest_checkpoint(run)
    assert f"the last complete checkpoint, {latest}, is intact" in message
    assert f"`genkit train --resume {run}`" in message
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not list(run.glob(".*tmp*"))
    loaded = weights(latest)
    if latest == good:
        assert all(torch.equal(before[k], loaded[k]) for k in before)
    monkeypatch.undo()
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 0, result.output


DISK_FULL_BUILD = """
import errno, faulthandler, os, sys
faulthandler.dump_traceback_later(60, exit=True)  # a hang shows where it is
import genkit_datasets.cache as cache
cache._check_disk_space = lambda path, needed: None  # let the build start, then the disk fills
real, written = os.pwrite, [0]
def pwrite(fd, data, offset):
    written[0] += len(data)
    if written[0] > 200_000:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(fd, data, offset)
os.pwrite = pwrite
from genkit.cli.app import main
sys.argv = ["genkit", "data", "prepare", "--data", "shapes", "--data-opt", "count=400", "--image-size", "32",
            "--workers", "2", "--cache-dir", sys.argv[1]]
main()
"""


def test_a_cache_build_onto_a_full_disk_is_one_line_exit_1_without_a_crash_or_leftovers(tmp_path):
    """HDF5 never sees the failed write, so nothing segfaults (it did: exit 139) and no partial is left."""
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", DISK_FULL_BUILD, str(cache)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(cache.iterdir()) == []


def test_a_cache_larger_than_the_free_space_is_refused_before_the_build(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    result = cli("data", "prepare", "--data", "shapes", "--data-opt", "count=400", "--image-size", "32",
                 "--workers", "1", "--cache-dir", tmp_path)
    assert result.exit_code == 1
    message = one_line(result)
    assert "needs about" in message and "has 0.0 MB free" in message and "--cache-dir" in message
    assert list(tmp_path.iterdir()) == []


def test_a_cache_build_on_a_real_full_tmpfs(tmp_path):
    """The same with a real 1 MB tmpfs, where the test may mount one (root on Linux)."""
    with _tmpfs(tmp_path / "small", "size=1M") as mount:
        script = DISK_FULL_BUILD.replace("os.pwrite = pwrite", "")
        done = subprocess.run([sys.executable, "-c", script, str(mount)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
        assert "no space left on the device" in done.stderr and "Traceback" not in done.stderr
        assert list(mount.iterdir()) == []


@contextmanager
def _tmpfs(mount, options: str):
    """A small tmpfs at ``mount`` for the test (skipped where the test may not mount one), unmounted after."""
    with tmpfs(mount, options) as mounted:
        if mounted is None:
            pytest.skip(f"cannot mount a tmpfs ({options}) here")
        yield mounted


# --- 4. runaway memory -----------------------------------------------------------------------------

def test_a_huge_sample_count_is_refused_with_the_bound_and_a_large_one_streams(tiny_run, tmp_path):
    target = tmp_path / "many.png"
    result = cli("sample", "--run", tiny_run, "--n", "100000000", "--out", target)
    assert result.exit_code == 2
    message = one_line(result)
    assert "--n 100000000 would make a grid of" in message and "ask for at most" in message
    bound = int(message.split("ask for at most ")[1].split()[0])
    assert 0 < bound < 100000000 and not target.exists()

    run = genkit.load_run(tiny_run)
    condition = run.conditioner.encode("shape::circle").reshape(1, -1).expand(300, -1)
    write_grid(run.batches(condition, run.noise(300, 3), None, batch_size=16), 300, 17, tuple(run.config.image_shape),
               tmp_path / "streamed.png")  # 19 batches
    save_grid(run.sample("shape::circle", n=300, seed=3, rest="off"), tmp_path / "whole.png", nrow=17)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "streamed.png")),
                                  np.asarray(Image.open(tmp_path / "whole.png")))


def test_huge_image_sizes_are_refused_before_allocating(tiny_run, tmp_path, monkeypatch):
    result = cli("train", *TINY, "--image-size", "100000", "--out", tmp_path / "a")
    assert result.exit_code == 2
    assert "image size 100000x100000 is larger than genkit's maximum of 8192 pixels a side" in one_line(result)
    monkeypatch.setattr(genkit.runtime.memory, "available_bytes", lambda: 8 * 10**9)
    result = cli("train", *TINY, "--image-size", "4096", "--out", tmp_path / "b")
    assert result.exit_code == 2
    message = one_line(result)
    assert "the 'cvae' model at image size 4096x4096" in message and "of the 8.0 GB of memory available" in message
    assert not (tmp_path / "b").exists()

    edited = tmp_path / "edited"
    subprocess.run(["cp", "-r", str(tiny_run), str(edited)], check=True)
    for size, words, commands in (
            ([100000, 100000], "maximum of 8192", (["sample", "--run", edited, "--out", tmp_path / "x.png"],
                                                   ["train", "--resume", edited])),
            ([4096, 4096], "needs about", (["train", "--resume", edited],))):  # training needs 16 bytes a weight
        config = json.loads((edited / "config.json").read_text())
        config["data"]["image_size"] = size
        (edited / "config.json").write_text(json.dumps(config))
        for command in commands:
            result = cli(*command)
            assert result.exit_code == 2, (command, result.output)
            message = one_line(result)
            assert str(edited / "config.json") in message and words in message


# --- 5. clear lines instead of tracebacks -----------------------------------------------------------

def test_out_that_is_a_file_or_under_a_file_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, words in ((a_file, "is an existing file, not a folder"), (a_file / "run", f"lies under {a_file}")):
        result = cli("train", *TINY, "--out", out)
        assert result.exit_code == 2 and words in one_line(result)
    result = cli("sample", "--run", tmp_path, "--out", a_file / "x.png")
    assert result.exit_code == 2 and f"--out {a_file / 'x.png'} is under {a_file}, which is a file" in one_line(result)
    assert a_file.read_text() == "x"


def test_out_on_a_read_only_file_system_is_refused(tmp_path):
    with _tmpfs(tmp_path / "ro", "size=1M,ro") as mount:
        result = cli("train", *TINY, "--out", mount / "run")
        assert result.exit_code == 2
        assert f"--out {mount / 'run'} cannot be written: {mount} is read-only" in one_line(result)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["model"]["options"].update(latent_dim="four"),
     "model 'cvae' option latent_dim is 'four', but it must be a whole number, like latent_dim=32"),
    (lambda c: c["model"]["options"].update(depth=3), "model 'cvae' has no option 'depth'; its options are:"),
    (lambda c: c["train"].update(epochs="6"), 'train.epochs is "6" (text), but it must be a whole number'),
    (lambda c: c["train"].update(warmup=3), "section 'train' has no setting 'warmup'"),
    (lambda c: c.update(format=2, genkit_version="9.0"),
     "was written by a newer genkit (format 2); upgrade genkit (pip install --upgrade genkit-cvae) to read it"),
])
def test_a_hand_edited_or_newer_config_is_one_line_naming_the_file(tiny_run, tmp_path, edit, words):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_run), str(run)], check=True)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    for command in (["sample", "--run", run, "--out", tmp_path / "x.png"], ["train", "--resume", run, "--epochs", "2"],
                    ["evaluate", "--run", run]):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        message = one_line(result)
        assert str(run / "config.json") in message and words in message, message


def test_genkit_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("GENKIT_DEBUG", "1")
    result = cli("train", "--model", "cvea")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "unknown model 'cvea'" in result.stderr


# --- 6. paths --------------------------------------------------------------------------------------

@pytest.mark.parametrize("row", ["../outside.png", "../../../etc/passwd", "pics/../../outside.png"])
def test_a_csv_row_leading_out_of_root_is_refused_naming_the_row(tmp_path, row):
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    root = _folder(tmp_path / "data", {f"{i}.png": Image.new("RGB", (4, 4), (i, i, i)) for i in range(4)})
    (root / "pics").mkdir()
    (root / "attributes.csv").write_text((root / "attributes.csv").read_text() + f"{row},1,0\n")
    result = cli("data", "info", "--data", "folder", "--root", root)
    assert result.exit_code == 2
    message = one_line(result)
    assert f"{root / 'attributes.csv'}, line 6: file name '{row}' must be a path inside {root}" in message


def test_runs_store_an_absolute_root_and_resume_takes_a_new_one(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", {f"{i}.png": Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(6)})
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    result = cli("train", "--data", "folder", "--root", "data", "--image-size", "8", "--epochs", "1", "--batch-size", "4",
                 "--latent-dim", "4", "--out", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["data"]["root"] == str(root.resolve())
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    root.rename(moved)
    monkeypatch.chdir(moved.parent)
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 2 and f"data folder {root.resolve()} does not exist" in one_line(result)
    result = cli("train", "--resume", run, "--epochs", "2", "--root", "data")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["data"]["root"] == str(moved.resolve())


# --- 7. advice that works --------------------------------------------------------------------------

def test_the_skip_bad_advice_of_train_names_a_command_that_works(tmp_path):
    root = _folder(tmp_path / "data", {f"{i}.png": Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(8)})
    (root / "3.png").write_bytes(b"not a png")
    args = ["--data", "folder", "--root", root, "--image-size", "8", "--cache-dir", tmp_path / "cache"]
    result = cli("train", *args, "--epochs", "1", "--batch-size", "4", "--latent-dim", "4", "--out", tmp_path / "run")
    assert result.exit_code == 2
    message = one_line(result)
    assert f"cannot read image {root / '3.png'}" in message
    advice = message.split("`")[1]
    assert advice.startswith("genkit data prepare --data folder") and advice.endswith("--skip-bad")
    result = cli(*shlex.split(advice)[1:])
    assert result.exit_code == 0, result.output
    result = cli("train", *args, "--epochs", "1", "--batch-size", "4", "--latent-dim", "4", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_state_pt_holding_code_is_refused_without_advising_the_unsafe_loader(tiny_run, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_run), str(run)], check=True)
    checkpoint = genkit.training.checkpoints.latest_checkpoint(run)
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "x": _Payload(str(marker))}, checkpoint / "state.pt")
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 2
    message = one_line(result)
    assert str(checkpoint / "state.pt") in message and "genkit will not load it" in message
    assert "weights_only" not in message and "can still be loaded" not in message
    assert not marker.exists()


# --- 8. memory placement ---------------------------------------------------------------------------

def test_placement_uses_mem_available_and_the_start_line_says_why(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         4000000 kB\nMemAvailable:   23000000 kB\n")
    monkeypatch.setattr(genkit.runtime.memory, "MEMINFO", meminfo)
    assert genkit.runtime.memory.available_bytes() == 23000000 * 1024
    from genkit.data.batches import choose_placement

    class CelebaSized:  # the train split of CelebA at 64x64: 162,770 images, 2.0 GB
        image_shape = (3, 64, 64)

        def __len__(self):
            return 162770

    placement, why = choose_placement("auto", CelebaSized(), torch.device("cpu"))
    assert (placement, why) == ("ram", "ram (2.0 GB of 23.6 GB available)")
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    4000000 kB\n")
    placement, why = choose_placement("auto", CelebaSized(), torch.device("cpu"))
    assert placement == "disk" and why.startswith("disk (2.0 GB is more than 40% of the 4.1 GB")
    monkeypatch.setattr(genkit.runtime.memory, "MEMINFO", tmp_path / "none")
    assert genkit.runtime.memory.available_bytes() == os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    result = cli("train", *TINY, "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0 and "data in ram (98.3 kB of " in result.stderr


# --- 9. the rest -----------------------------------------------------------------------------------

def test_a_megabyte_of_attrs_is_not_echoed_whole(tiny_run, tmp_path):
    for attrs in ("x" * 1_000_000, "shape::circle," + "y" * 1_000_000):
        result = cli("sample", "--run", tiny_run, "--attrs", attrs, "--out", tmp_path / "x.png")
        assert result.exit_code == 2
        message = one_line(result)
        assert len(message) < 400 and "(1000000 characters)" in message
    result = cli("train", "--model", "m" * 100_000)
    assert result.exit_code == 2 and len(one_line(result)) < 300


def test_a_rebuilt_cache_is_announced_with_the_reason(tmp_path):
    root = _folder(tmp_path / "data", {f"{i}.png": Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(6)})
    args = ["data", "prepare", "--data", "folder", "--root", root, "--image-size", "8", "--workers", "1",
            "--cache-dir", tmp_path / "cache"]
    result = cli(*args)
    assert result.exit_code == 0 and "was rebuilt" not in result.stderr
    path = Path(result.stdout.strip())
    path.write_bytes(path.read_bytes()[:500])
    result = cli(*args)
    assert result.exit_code == 0 and "the cache was rebuilt: it is corrupt or truncated" in result.stderr
    csv = root / "attributes.csv"
    csv.write_text(csv.read_text().replace("0.png,0,0", "0.png,1,0"))
    result = cli(*args)
    assert result.exit_code == 0 and "the cache was rebuilt: the source files changed since it was built" in result.stderr
    result = cli("train", "--data", "folder", "--root", root, "--image-size", "8", "--epochs", "1", "--batch-size", "4",
                 "--latent-dim", "4", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run")
    assert result.exit_code == 0 and "was rebuilt" not in result.stderr
    path.write_bytes(b"garbage")
    result = cli("train", "--resume", tmp_path / "run", "--epochs", "2", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0 and f"the cache {path} was rebuilt: it is corrupt or truncated" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_killing_data_prepare_exits_with_the_signal_in_one_line_and_leaves_no_partial(tmp_path, signum):
    command = [sys.executable, "-m", "genkit", "data", "prepare", "--data", "shapes", "--data-opt", "count=20000",
               "--image-size", "64", "--workers", "2", "--cache-dir", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "*.partial-*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(proc.pid, signum)  # as a terminal's Ctrl-C does: the workers get it too
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    lines = [line for line in err.splitlines() if line.strip() and "━" not in line and "preparing" not in line]
    assert lines == [f"error: interrupted by {signal.Signals(signum).name}; unfinished files were removed"], err
    assert list(tmp_path.iterdir()) == []


# --- fault injection: crash at random steps, resume, same weights ----------------------------------

class _Crash(Exception):
    pass


class _CrashAt:
    """An observer that kills the run (an exception the loop does not handle) at a given step."""

    def __init__(self, step: int):
        self.step = step
        self.seen = 0

    def on_step(self, epoch, step, metrics):
        self.seen += 1
        if self.seen == self.step:
            raise _Crash


def _config():
    return genkit.plan_run(data="shapes", data_options={"count": 80, "seed": 5}, image_size=16, epochs=2,
                           batch_size=16, model_options={"latent_dim": 4, "channels": [8, 16]}, seed=0,
                           checkpoint_every=3, log_every=2, device="cpu")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    genkit.train(_config(), out)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_crashed_at_random_steps_resume_to_the_weights_of_an_uninterrupted_run(straight_run, tmp_path,
                                                                                      monkeypatch, seed):
    total = 2 * 4  # two epochs of 64 training images in batches of 16
    rng = random.Random(seed)
    run = tmp_path / "crashed"
    crashes = 0
    try:
        genkit.train(_config(), run, observer=_CrashAt(rng.randint(1, total - 1)))
    except _Crash:
        crashes += 1
    real_save = torch.save
    for _ in range(30):
        # the next fault: a crash at a random step, or while a checkpoint is being written
        if rng.random() < 0.5:
            observer, save = _CrashAt(rng.randint(1, total)), real_save
        else:
            calls = {"n": 0, "fail_at": rng.randint(1, 3)}

            def save(obj, f, *args, _calls=calls, **kwargs):
                _calls["n"] += 1
                if _calls["n"] == _calls["fail_at"]:
                    raise _Crash
                return real_save(obj, f, *args, **kwargs)

            observer = None
        monkeypatch.setattr(genkit.training.checkpoints.torch, "save", save)
        try:
            finished = genkit.resume(run, observer=observer) is None
        except _Crash:
            crashes += 1
            continue
        finally:
            monkeypatch.setattr(genkit.training.checkpoints.torch, "save", real_save)
        if finished or genkit.resume(run) is None:
            break
    genkit.resume(run)  # finishes the run if the faults above never let it
    assert crashes >= 1
    a, b = weights(straight_run), weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]

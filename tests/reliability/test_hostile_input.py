"""Hostile input, one test per numbered case of docs/reliability.md's second table (checkpoint rotation, umask,
seeds, JSONL, float32 options, memory, hand-edited run folders, a full disk, ...).

The server's cases (2, and the server parts of 3, 9 and 16) are in tests/serve/test_serve_bounds.py; the
docs mechanism (15) is tests/docs/test_doc_examples.py.
"""

from __future__ import annotations

import functools

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import genkit
from genkit.cli.app import build_app
from conftest import tmpfs

TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]"]
runner = CliRunner()


def cli(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def one_line(result, code: int = 2) -> str:
    """The one ``error:`` line a refusal prints, with the exit code asserted and no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and "━" not in line]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and (code != 2 or len(lines) == 1), result.stderr  # a refusal prints nothing else
    assert "Traceback" not in result.output
    return " ".join(errors[0].split())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny finished run (1 epoch, 48 images): copy it before changing anything in it."""
    out = tmp_path_factory.mktemp("round3") / "tiny"
    result = cli("train", *TINY, "--limit", "48", "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def copy(run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# --- 1. checkpoint rotation deletes only genkit's own folders ----------------------------------------

def test_resume_never_deletes_a_folder_genkit_did_not_create(copy):
    checkpoints = copy / "checkpoints"
    mine = checkpoints / "best-epoch1"
    shutil.copytree(genkit.training.checkpoints.latest_checkpoint(copy), mine)
    (mine / "notes.txt").write_text("the good one")
    lookalike = checkpoints / "step-keep"  # not a name genkit makes
    lookalike.mkdir()
    (checkpoints / "README").write_text("mine")
    leftover = checkpoints / ".step-000000001.partial-99999"  # genkit's own, from a save that was killed
    leftover.mkdir()
    result = cli("train", "--resume", copy, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert (mine / "notes.txt").read_text() == "the good one" and (mine / "model.safetensors").is_file()
    assert lookalike.is_dir() and (checkpoints / "README").read_text() == "mine"
    assert not leftover.exists()
    steps = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-0"))
    assert len(steps) == 2 and genkit.training.checkpoints.latest_checkpoint(copy).name == steps[-1]


# --- 3. sampling does not need loss.safetensors ------------------------------------------------------

def test_a_run_without_loss_safetensors_samples_and_the_loss_names_the_missing_file(copy, tmp_path):
    (copy / "loss.safetensors").unlink()
    result = cli("sample", "--run", copy, "--n", "4", "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    loaded = genkit.load_run(copy, device="cpu")
    assert loaded.sample("large", n=2).shape == (2, 3, 16, 16)
    with pytest.raises(genkit.UsageError, match="loss.safetensors does not exist"):
        loaded.loss  # noqa: B018  the loss's own state is read only when the loss is used


# --- 4. weights follow the umask; an unreadable file says so -----------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_of_a_run_follows_the_umask(tmp_path, umask):
    config = genkit.plan_run("cvae", "shapes", data_options={"count": 40, "seed": 1}, image_size=8, epochs=1,
                             batch_size=16, model_options={"latent_dim": 2, "channels": [4, 8]}, device="cpu")
    previous = os.umask(umask)
    try:
        genkit.train(config, out_dir=tmp_path / "run")
    finally:
        os.umask(previous)
    paths = [p for p in (tmp_path / "run").rglob("*")]
    files = {p.relative_to(tmp_path): oct(p.stat().st_mode & 0o777) for p in paths if p.is_file()}
    folders = {p.relative_to(tmp_path): oct(p.stat().st_mode & 0o777) for p in paths if p.is_dir()}
    assert set(files.values()) == {oct(0o666 & ~umask)}, files
    assert set(folders.values()) == {oct(0o777 & ~umask)}, folders
    assert any(p.name == "model.safetensors" for p in files)


def test_weights_the_user_may_not_read_are_named_as_unreadable(copy):
    import tempfile

    from genkit.store.weights import load_weights

    model = genkit.load_run(copy, device="cpu").model
    shared = Path(tempfile.mkdtemp(prefix="genkit-perm-"))  # under /tmp, which every user may enter
    try:
        os.chmod(shared, 0o755)
        target = shared / "model.safetensors"
        shutil.copy(copy / "model.safetensors", target)
        os.chmod(target, 0o600)
        message = _load_as_another_user(load_weights, model, target)
    finally:
        shutil.rmtree(shared)
    assert f"{target} cannot be read: permission denied (mode 0600, owner uid {os.geteuid()})" in message, message
    assert "does not exist" not in message and "chmod a+r" in message


def _load_as_another_user(load_weights, model, target: Path) -> str:
    """The message of ``load_weights`` on ``target`` for a user who may not read it."""
    if os.geteuid() != 0:
        os.chmod(target, 0o000)
        with pytest.raises(genkit.UsageError) as refused:
            load_weights(model, target)
        return str(refused.value).replace("mode 0000", "mode 0600")
    read, write = os.pipe()  # root reads everything: read it as nobody, in a child process
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            load_weights(model, target)
            os.write(write, b"loaded")
        except BaseException as exc:  # noqa: BLE001
            os.write(write, str(exc).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    message = os.read(read, 8192).decode()
    os.close(read)
    return message


# --- 5. sweep folder names -----------------------------------------------------------------------

def test_sweep_values_that_print_alike_get_folders_of_their_own(tmp_path):
    from genkit.sweep.vary import Varied, parse_vary
    from genkit.sweep.plan import check_folders, plan_sweep

    varied = parse_vary(["train.lr=0.001,0.0010000001"], {"data": "shapes", "conditioner": "tiled-onehot",
                                                             "model": "cvae", "loss": "gaussian-elbo"})
    plan = plan_sweep(varied, tmp_path / "sweep", data_options={"count": 40}, image_size=8, epochs=1)
    assert [plan.folder(i).name for i in range(2)] == ["lr-0.001", "lr-0.0010000001"]
    assert [plan.label(i) for i in range(2)] == ["lr=0.001", "lr=0.0010000001"]
    short = parse_vary(["train.lr=0.001,0.002"], {"data": "shapes", "conditioner": "tiled-onehot",
                                                   "model": "cvae", "loss": "gaussian-elbo"})
    assert short[0].show(0.002) == "0.002"  # values that differ when short keep the short form
    alike = [Varied("model", "name", ("a b", "a-b"), "--vary model.name")]
    with pytest.raises(genkit.UsageError, match="would share the folder .*name-a-b"):
        check_folders(tmp_path / "s", [{"model.name": "a b"}, {"model.name": "a-b"}], alike)


# --- 6. seeds in 0 ... 2**63 - 1 everywhere -----------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["sample", "--run", "{run}", "--seed", str(10**23)],
    ["sample", "--run", "{run}", "--seed", str(-2**63 - 1)],
    ["train", *TINY, "--seed", str(10**23), "--out", "{tmp}/x"],
    ["train", *TINY, "--seed", "-1", "--out", "{tmp}/x"],
    ["evaluate", "--run", "{run}", "--seed", str(2**63)],
    ["reconstruct", "--run", "{run}", "--seed", str(-2**63 - 1)],
    ["classifier", "train", "--data", "shapes", "--seed", str(10**23), "--cache-dir", "{tmp}/cache"],
    ["sweep", "--out", "{tmp}/s", *TINY, "--vary", "train.seed=1e30,1", "--cache-dir", "{tmp}/cache"],
])
def test_seeds_beyond_64_bits_are_refused_before_any_work(run, tmp_path, command):
    args = [a.format(run=run, tmp=tmp_path) for a in command]
    message = one_line(cli(*args))
    assert "must be a whole number from 0 to 9223372036854775807 (2**63 - 1)" in message
    assert not (tmp_path / "cache").exists() and not (tmp_path / "x").exists() and not (tmp_path / "s").exists()


# --- 7. a truncated last line of a JSONL log ------------------------------------------------------------

def test_a_cut_last_jsonl_line_is_dropped_and_the_run_resumes(copy):
    from genkit.store.run_folder import read_jsonl

    metrics = copy / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + whole.splitlines()[0][:25])  # a second record cut short, no newline
    assert read_jsonl(metrics) == [json.loads(whole)]
    result = cli("train", "--resume", copy, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_jsonl(metrics)] == [1, 2]
    metrics.write_text("{not json\n" + whole)
    message = one_line(cli("train", "--resume", copy, "--epochs", "3"))
    assert f"{metrics}, line 1: not a JSON record" in message and "fix or delete that line" in message


# --- 8. loss options outside float32 -------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--kl-weight", "1e300"], "kl_weight 1e+300 is outside the float32 range"),
    (["--decoder-sigma", "1e-300"], "sigma 1e-300 is outside 1e-18 to 1e+18"),
    (["--loss-opt", "log_sigma_floor=1e300"], "log_sigma_floor 1e+300 is outside the float32 range"),
    (["--loss-opt", "log_sigma_floor=-1e300"], "log_sigma_floor -1e+300 is outside the float32 range"),
    (["--loss-opt", "log_sigma_floor=-100"], "log_sigma_floor -100 is outside -43 to 44"),
    (["--loss-opt", "free_bits=1e300"], "free_bits 1e+300 is outside the float32 range"),
    (["--loss-opt", "free_bits=1e-40"], "free_bits 1e-40 is outside the float32 range"),
])
def test_loss_options_float32_cannot_hold_are_refused_before_training(tmp_path, args, words):
    message = one_line(cli("train", *TINY, "--loss", "gaussian-elbo", *args, "--out", tmp_path / "x"))
    assert words in message and "--loss-opt" in message
    assert not (tmp_path / "x").exists()


def test_float32_option_is_the_plugin_api_helper():
    from genkit.plugin_api import float32_option

    assert float32_option("w", 2, 1) == 2.0 and float32_option("w", 0, 1) == 0.0
    for bad in (math.nan, math.inf, 1e39, -1e39, 1e-39, 10**400, "1", True, None):
        with pytest.raises(genkit.UsageError, match="--loss-opt w=1"):
            float32_option("w", bad, 1)


def test_a_loss_non_finite_on_the_initial_weights_does_not_advise_a_lower_lr(tmp_path):
    class NaNLoss:
        def __call__(self, output, images):
            total = output.reconstruction.float().mean() * float("nan")
            return genkit.LossResult(total=total, terms={})

    class Plugin:
        @genkit.hookimpl
        def register_losses(self, register):
            register("nan-loss", lambda: NaNLoss())

    name = genkit.register_plugin(Plugin(), name="round3-nan-loss")
    try:
        message = one_line(cli("train", *TINY, "--limit", "32", "--loss", "nan-loss", "--out", tmp_path / "x"), code=1)
    finally:
        genkit.unregister_plugin(name)
    assert "the loss was non-finite at step 1, on the initial weights before any update, so a lower --lr cannot " \
           "help: check the options of loss 'nan-loss' ({})" in message
    assert "--resume" not in message


# --- 10. memory sized before allocating; out of memory is one line --------------------------------------

def test_vary_decodes_in_bounded_batches_and_a_grid_that_cannot_fit_is_refused(run, tmp_path, monkeypatch):
    from genkit.runtime import memory
    from genkit.sampling import compare, draw

    loaded = genkit.load_run(run, device="cpu")
    sizes = []
    real = loaded.model.sample
    @functools.wraps(real)  # the same signature: the model's sampling options are read from it
    def counting(c, z, *args, **kwargs):
        sizes.append(len(z))
        return real(c, z, *args, **kwargs)

    monkeypatch.setattr(loaded.model, "sample", counting)
    whole = compare.vary(loaded, "shape::circle", ["large"], 40, 0, "off").images
    monkeypatch.setattr(draw, "SAMPLE_BATCH", 16)
    sizes.clear()
    images = compare.vary(loaded, "shape::circle", ["large"], 40, 0, "off").images
    assert images.shape == (80, 3, 16, 16) and max(sizes) == 16
    torch.testing.assert_close(images, whole, rtol=0, atol=1e-6)  # the same images, batch by batch
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)
    monkeypatch.setattr("genkit.sampling.grids.available_bytes", lambda: 64 << 20)
    message = one_line(cli("sample", "--run", run, "--vary", "large", "--n", "50000", "--out", tmp_path / "v.png"))
    assert "--n 50000 with 1 --vary (100000 images) would make a grid of" in message
    with pytest.raises(genkit.UsageError, match="n=50000 with 1 varied attribute"):
        compare.vary(loaded, "", ["large"], 50000)
    message = one_line(cli("evaluate", "--run", run, "--samples", "1000000000"))
    assert "--samples 1000000000 (128 images at a time, 4 latent values per draw) needs about" in message
    assert "ask for at most --samples" in message


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
    MemoryError(),
])
def test_out_of_memory_anywhere_is_one_line_exit_1(run, tmp_path, monkeypatch, error):
    def allocate(*_args, **_kwargs):
        raise error

    monkeypatch.setattr("genkit.sampling.grids.write_grid", allocate)
    message = one_line(cli("sample", "--run", run, "--n", "4", "--out", tmp_path / "s.png"), code=1)
    assert message.startswith("error: out of memory; ask for less")
    if not isinstance(error, MemoryError):
        assert message.endswith(("(it tried to allocate 40.0 TB)", "(it tried to allocate 2.00 GiB)"))


# --- 11. non-finite --vary values ------------------------------------------------------------------------

@pytest.mark.parametrize("vary", ["model.latent_dim=NaN,4", "model.latent_dim=1e400,4", "train.epochs=Infinity,1",
                                  "loss.kl_weight=-Infinity,1"])
def test_non_finite_vary_values_are_refused_with_exit_2(tmp_path, vary):
    message = one_line(cli("sweep", "--out", tmp_path / "s", *TINY, "--vary", vary, "--cache-dir", tmp_path / "c"))
    assert "is not a finite number" in message and not (tmp_path / "c").exists()


# --- 12. hand-edited run folders ---------------------------------------------------------------------------

def test_damaged_attribute_tables_and_names_are_refused_when_the_run_is_loaded(copy, tmp_path, monkeypatch):
    table = copy / "train_attributes.safetensors"
    stored = load_file(str(table))
    metadata = {"attribute_names": json.dumps(genkit.load_run(copy).attribute_names)}
    save_file({"vectors": stored["vectors"], "counts": torch.zeros_like(stored["counts"])}, str(table), metadata)
    message = one_line(cli("sample", "--run", copy, "--rest", "data", "--out", tmp_path / "s.png"))
    assert f"{table} is damaged (its counts must be 0 or more, and not all 0); delete it" in message
    monkeypatch.setattr("genkit.serve.app.serve", lambda *a, **k: pytest.fail("the server started"))
    assert "is damaged" in one_line(cli("serve", "--run", copy, "--port", "1"))  # refused before the port check
    save_file({"vectors": stored["vectors"] * 3, "counts": stored["counts"]}, str(table), metadata)
    assert "its vectors must hold only 0 and 1" in one_line(cli("sample", "--run", copy))
    table.unlink()
    config = json.loads((copy / "config.json").read_text())
    config["data"]["attribute_names"][0] = 1
    (copy / "config.json").write_text(json.dumps(config))
    message = one_line(cli("sample", "--run", copy))
    assert "data.attribute_names[0] is 1, but every name must be non-empty text" in message


# --- 13. evaluate --sigma whose square underflows -------------------------------------------------------------

@pytest.mark.parametrize("sigma, words", [("1e-300", "--sigma 1e-300 is too small"), ("1e200", "--sigma 1e+200 is too large")])
def test_a_sigma_whose_square_float64_cannot_hold_is_refused(run, sigma, words):
    message = one_line(cli("evaluate", "--run", run, "--sigma", sigma))
    assert words in message and "between 1e-150 and 1e+150" in message


# --- 14. a full disk while writing the weights during training ---------------------------------------------

def test_a_full_disk_while_writing_weights_during_training_is_one_line_exit_1(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "small", "size=64k") as mount:
        if mount is None:  # no tmpfs here: the error safetensors raises on a full disk, as it words it
            def save_file_full(*_args, **_kwargs):
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            monkeypatch.setattr("genkit.store.weights.save_file", save_file_full)
            target = tmp_path / "run"
        else:
            target = mount / "run"
        message = one_line(cli("train", *TINY, "--limit", "32", "--epochs", "1", "--out", target), code=1)
        assert f"cannot write {target}/model.safetensors: no space left on the device;" in message
        assert f"`genkit train --resume {target}`" in message
        assert not [p for p in target.rglob(".*") if "tmp" in p.name or "partial" in p.name]


# --- 16. the minor cases ---------------------------------------------------------------------------------------

def test_minor_cases_are_one_line_each(run, copy, tmp_path):
    assert "'+-large' names no attribute clearly" in one_line(cli("sample", "--run", run, "--attrs", "+-large"))
    assert "outside the whole numbers genkit passes on (-2**63 to 2**63 - 1)" in \
        one_line(cli("train", *TINY, "--latent-dim", str(2**64), "--out", tmp_path / "x"))
    config = json.loads((copy / "config.json").read_text())
    config["train"]["batch_size"] = 0
    (copy / "config.json").write_text(json.dumps(config))
    message = one_line(cli("train", "--resume", copy, "--epochs", "2"))
    assert f"{copy / 'config.json'}: train.batch_size 0 must be a positive integer" in message
    from genkit.sampling.grids import check_grid

    with pytest.raises(genkit.UsageError) as wide:
        check_grid(2**27, 2**27, (3, 16, 16), asked="--n 4 with --steps 134217728", columns_flag=None)
    assert "ask for fewer images" in str(wide.value) and "--nrow" not in str(wide.value)

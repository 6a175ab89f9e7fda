"""The command line end to end on a tiny shapes set, and every bad input of the core."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import error_line, invoke, run_genkit
from genkit.cli.app import build_app

TINY = ["--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "16"]


@pytest.fixture(scope="module")
def trained_run(runner, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = runner.invoke(build_app(), ["train", "--model", "cvae", "--data", "shapes", *TINY, "--epochs", "2",
                                         "--batch-size", "16", "--limit", "96", "--latent-dim", "4",
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_run_folder(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "steps.jsonl", "loss_curve.png", "samples"} <= names
    epochs = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("train_loss", "train_mse", "train_kl", "val_loss", "val_mse", "val_kl", "images_per_s"):
        assert key in epochs[-1]
    assert epochs[-1]["step"] == 2 * 6  # 96 images / batch 16, two epochs
    assert (trained_run / "samples" / "epoch_001.png").is_file()
    assert (trained_run / "samples" / "epoch_002.png").is_file()
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["name"] == "cvae"
    assert {"latent_dim": 4, "channels": [32, 64], "kernel_size": 3}.items() <= config["model"]["options"].items()
    # the default recipe: gaussian-elbo with a learned σ and cvae's learned prior
    assert config["loss"] == {"name": "gaussian-elbo", "options": {"sigma": "learned", "kl_weight": 1.0,
                                                                  "log_sigma_floor": -6.0, "free_bits": 0.0}}
    assert config["model"]["options"]["prior"] == "learned"
    assert config["data"]["image_size"] == [16, 16] and config["data"]["limit"] == 96
    assert len(config["data"]["attribute_names"]) == 12


def test_sample_writes_a_grid_with_the_requested_count(runner, trained_run, tmp_path):
    target = tmp_path / "grid.png"
    result = runner.invoke(build_app(), ["sample", "--run", str(trained_run), "--attrs",
                                         "shape::circle,color::red,-large", "--n", "10", "--nrow", "5",
                                         "--out", str(target)])
    assert result.exit_code == 0, result.output
    with Image.open(target) as image:
        # make_grid: 5 columns and 2 rows of 16-pixel images with 2-pixel padding
        assert image.size == (5 * 18 + 2, 2 * 18 + 2)


def test_sampling_is_reproducible_by_seed(trained_run):
    import genkit

    run = genkit.load_run(trained_run)
    a = run.sample("color::blue", n=4, seed=7)
    b = run.sample("color::blue", n=4, seed=7)
    c = run.sample("color::blue", n=4, seed=8)
    assert a.shape == (4, 3, 16, 16)
    assert (a == b).all() and not (a == c).all()
    assert run.attribute_names[:2] == ["shape::circle", "shape::square"]


def test_python_module_entry_point_works():
    out = run_genkit("--help")
    assert out.returncode == 0 and "train" in out.stdout


def test_plugins_json_names_each_bundled_component(runner):
    result = runner.invoke(build_app(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    components = {p["name"]: p["components"] for p in payload["plugins"]}
    assert components["cvae"] == {"models": ["cvae"]}
    assert components["tiled-onehot"] == {"conditioners": ["tiled-onehot"]}
    assert components["beta-elbo"] == {"losses": ["beta-elbo"]}
    assert components["shapes"] == {"datasets": ["shapes"]}
    assert all(p["version"] for p in payload["plugins"] if p["distribution"] == "genkit-cvae")


def test_data_info_json(runner):
    result = runner.invoke(build_app(), ["data", "info", "--data", "shapes", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["attribute_names"][4:8] == ["color::red", "color::green", "color::blue", "color::yellow"]
    assert info["splits"] == {"train": 128, "valid": 16, "test": 16}
    assert info["image_size"] == [16, 16]
    assert info["cache_path"].startswith(os.environ["GENKIT_CACHE"])


BAD_TRAIN = [
    (["--model", "cvea"], "unknown model 'cvea'; available: cvae"),
    (["--data", "shape"], "unknown dataset 'shape'"),
    (["--conditioner", "onehot"], "unknown conditioner 'onehot'"),
    (["--loss", "elbo"], "unknown loss 'elbo'"),
    (["--image-size", "30"], "image size 30x30 is not divisible by 4"),
    (["--image-size", "big"], "image size 'big' is not valid"),
    (["--loss", "beta-elbo", "--beta", "1.5"], "beta 1.5 is outside [0, 1]"),
    (["--loss", "beta-elbo", "--beta", "-0.1"], "beta -0.1 is outside [0, 1]"),
    (["--decoder-sigma", "0"], "sigma 0 must be a positive number"),
    (["--epochs", "0"], "--epochs 0 must be a positive integer"),
    (["--batch-size", "-4"], "--batch-size -4 must be a positive integer"),
    (["--lr", "0"], "learning rate 0.0 must be a positive number"),
    (["--model-opt", "depth=3"], "model 'cvae' has no option 'depth'"),
    (["--conditioning", "tiled"], "conditioning mode 'tiled' is not known"),
]


@pytest.mark.parametrize("args, message", BAD_TRAIN, ids=[a[0] + "=" + a[1] for a, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(runner, tmp_path, args, message):
    out = tmp_path / "run"
    cache = Path(os.environ["GENKIT_CACHE"])
    before = sorted(cache.iterdir()) if cache.exists() else []
    result = runner.invoke(build_app(), ["train", *TINY, *args, "--out", str(out)])
    assert message in error_line(result)
    assert "Traceback" not in result.output
    assert not out.exists()
    assert sorted(cache.iterdir()) == before


def test_unknown_attribute_in_sample_is_one_line_exit_2(runner, trained_run, tmp_path):
    target = tmp_path / "x.png"
    result = runner.invoke(build_app(), ["sample", "--run", str(trained_run), "--attrs", "colour::red",
                                         "--out", str(target)])
    assert result.exit_code == 2
    assert "unknown attribute 'colour::red'; did you mean 'color::red'" in result.stderr
    assert not target.exists()


def test_missing_run_folder_is_one_line_exit_2(runner, tmp_path):
    result = runner.invoke(build_app(), ["sample", "--run", str(tmp_path / "nope"), "--attrs", "large"])
    assert result.exit_code == 2
    assert "run folder" in result.stderr and "does not exist" in result.stderr


def test_existing_run_is_not_overwritten(runner, trained_run):
    before = (trained_run / "model.safetensors").read_bytes()
    result = runner.invoke(build_app(), ["train", *TINY, "--limit", "32", "--out", str(trained_run)])
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_version_flag_prints_the_version(runner):
    import genkit

    result = runner.invoke(build_app(), ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"genkit {genkit.__version__}"


def test_a_resume_error_is_its_line_alone_with_no_blank_lines_from_unshown_bars(tmp_path):
    result = invoke(["train", "--resume", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.stderr == (f"error: run folder {tmp_path / 'missing'} does not exist; pass the folder "
                             "`genkit train` wrote\n")

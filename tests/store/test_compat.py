"""Run folders written by genkit 0.1.0 (before models declared their capabilities), and flow runs saved
before partial conditions (no ``conditioner.partial``, no ``model.attribute_dropout`` in config.json), load,
sample, evaluate and resume exactly as they did."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

import genkit
import genkit.training.checkpoints
from conftest import FLOW_E2E, error_line, invoke

#: config.json as genkit 0.1.0 wrote it for the default recipe (no ``train.ema``), shrunk to 16x16
RELEASE_CONFIG = {
    "data": {"name": "shapes", "options": {"count": 160, "seed": 5}, "root": None, "image_size": [16, 16],
             "limit": None,
             "attribute_names": ["shape::circle", "shape::square", "shape::triangle", "shape::cross", "color::red",
                                 "color::green", "color::blue", "color::yellow", "large", "left", "top", "outline"],
             "cache_fingerprint": None, "exclusive_groups": ["shape", "color"]},
    "conditioner": {"name": "tiled-onehot", "options": {"mode": "fused"}},
    "model": {"name": "cvae", "options": {"latent_dim": 4, "channels": [8, 16], "kernel_size": 3, "prior": "learned"}},
    "loss": {"name": "gaussian-elbo", "options": {"sigma": "learned", "kl_weight": 1.0, "log_sigma_floor": -6.0,
                                                   "free_bits": 0.0}},
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.002, "seed": 0, "device": "cpu", "precision": "fp32",
              "compile": False, "log_every": 25, "data_in": "auto", "workers": 0, "checkpoint_every": 0},
    "genkit_version": "0.1.0", "format": 1,
}


def _release_folder(path):
    """A run folder with the release's config.json and freshly initialised weights."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(RELEASE_CONFIG, indent=2))
    config = genkit.RunConfig.from_dict(RELEASE_CONFIG)
    from genkit.components.build import build_components

    torch.manual_seed(11)
    _, model, loss = build_components(config)
    with torch.no_grad():
        model.prior_net[-1].weight.normal_(0, 0.3)  # a prior that is not N(0, I), so it must be used
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    save_file(loss.state_dict(), str(path / "loss.safetensors"))
    return path


def test_a_release_run_folder_samples_exactly_as_its_model_defines(tmp_path):
    run = genkit.load_run(_release_folder(tmp_path / "old"), device="cpu")
    assert run.config.train.ema == 0.0 and run.capabilities["posterior"]
    model, spec = run.model, "shape::circle,color::red"
    condition = run.condition(spec, 4)
    eps = torch.randn(4, 4, generator=torch.Generator().manual_seed(9))
    mu, logvar = model.prior_params(condition)
    for temperature in (1.0, 0.5):
        expected = model.decode(mu + torch.exp(0.5 * logvar) * eps * temperature, condition)
        images = run.sample(spec, n=4, seed=9, rest="off", temperature=temperature)
        assert torch.equal(images, expected)


def test_a_release_run_resumes_to_the_same_weights_as_a_run_that_never_stopped(tmp_path):
    tiny = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
            "--latent-dim", "4", "--model-opt", "channels=[8,16]", "--device", "cpu"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert invoke(["train", *tiny, "--epochs", "2", "--out", straight]).exit_code == 0
    assert invoke(["train", *tiny, "--epochs", "1", "--out", stopped]).exit_code == 0
    # make the stopped run look as 0.1.0 wrote it: no train.ema in config.json, no grid_cols in state.pt, and
    # the one optimizer's state under "optimizer" (before optimizers had names)
    config = json.loads((stopped / "config.json").read_text())
    del config["train"]["ema"]
    (stopped / "config.json").write_text(json.dumps(config, indent=2))
    state_file = genkit.training.checkpoints.latest_checkpoint(stopped) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["grid_cols"]
    state["optimizer"] = state.pop("optimizers")["model"]
    torch.save(state, state_file)
    result = invoke(["train", "--resume", stopped, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


#: the options a flow run saved before partial conditions lacks, and what they meant then
BEFORE_PARTIAL = {"conditioner": ("partial", False), "model": ("attribute_dropout", 0.0)}
OLD_FLOW = [*FLOW_E2E, "--conditioner-opt", "partial=false", "--model-opt", "attribute_dropout=0"]


def _as_before_partial(run_dir):
    """``run_dir``'s config.json as genkit wrote it before partial conditions: without the options added since."""
    config = json.loads((run_dir / "config.json").read_text())
    for section, (option, value) in BEFORE_PARTIAL.items():
        assert config[section]["options"].pop(option) == value
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))


def test_a_flow_run_saved_before_partial_conditions_samples_bit_identically_and_resumes_equal(tmp_path):
    from genkit_plugins.flow import build
    from genkit_plugins.tiled_onehot import TiledOneHot

    straight, old = tmp_path / "straight", tmp_path / "old"
    assert invoke(["train", "--model", "flow", *OLD_FLOW, "--epochs", "2", "--out", straight]).exit_code == 0
    assert invoke(["train", "--model", "flow", *OLD_FLOW, "--epochs", "1", "--out", old]).exit_code == 0
    _as_before_partial(old)
    run = genkit.load_run(old, device="cpu")
    # what that genkit built: the full vector with its null feature (vector_dim A + 1), full conditions only
    assert type(run.conditioner) is TiledOneHot and run.conditioner.vector_dim == len(run.attribute_names) + 1
    assert run.model.attribute_dropout == 0.0 and not run.capabilities["partial_conditions"]
    assert run.rest_modes == ("data", "off")
    options = json.loads((old / "config.json").read_text())["model"]["options"]
    then = build((3, 16, 16), TiledOneHot(run.attribute_names), **options, attribute_dropout=0.0)
    then.load_state_dict(load_file(str(old / "model.safetensors")))
    expected = then.eval().sample(run.condition("shape::circle,large", 2), run.noise(2, 4), steps=3)
    assert torch.equal(run.sample("shape::circle,large", n=2, seed=4, rest="off", steps=3), expected)
    out = tmp_path / "never.png"
    line = error_line(invoke(["sample", "--run", old, "--rest", "model", "--out", out]))
    assert line == ("error: --rest model needs a model trained with attributes left unspecified (attribute dropout); "
                    "this run's model 'flow' was not: use --rest data or --rest off")
    assert not out.exists()
    # resumed, it trains on as it would have: the same weights as the run that never stopped
    result = invoke(["train", "--resume", old, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(old / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "partial" not in json.loads((old / "config.json").read_text())["conditioner"]["options"]

"""Weight averaging (``--ema``): the update rule, what the run folder holds, and bit-exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import genkit
import genkit.training.checkpoints
from conftest import error_line, invoke
from genkit.training.averaging import EMA_FILE, WeightAverage

TINY = ["train", "--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]", "--device", "cpu"]


def test_the_average_follows_the_weights_with_a_warm_up():
    model = nn.Linear(2, 1)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    average = WeightAverage(model, decay=0.9)
    expected = torch.zeros(1, 2)
    for step in range(100):
        with torch.no_grad():
            model.weight.add_(1.0)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * model.weight.detach()
        average.update(model)
        assert torch.allclose(average.model.weight, expected), step
    assert average.current_decay() == 0.9 and not average.model.weight.requires_grad


def test_the_run_folder_holds_the_average_and_checkpoints_hold_both(tmp_path):
    run = tmp_path / "run"
    result = invoke([*TINY, "--epochs", "1", "--ema", "0.95", "--out", run])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["ema"] == 0.95
    checkpoint = genkit.training.checkpoints.latest_checkpoint(run)
    averaged, raw = load_file(str(checkpoint / EMA_FILE)), load_file(str(checkpoint / "model.safetensors"))
    folder = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(folder[k], averaged[k]) for k in folder)
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)
    loaded = genkit.load_run(run, device="cpu")
    assert all(torch.equal(loaded.model.state_dict()[k], averaged[k]) for k in averaged)


def test_a_resumed_run_with_averaging_ends_bit_identical(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert invoke([*TINY, "--epochs", "2", "--ema", "0.9", "--out", straight]).exit_code == 0
    assert invoke([*TINY, "--epochs", "1", "--ema", "0.9", "--out", stopped]).exit_code == 0
    result = invoke(["train", "--resume", stopped, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors",):
        a, b = load_file(str(straight / name)), load_file(str(stopped / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("model.safetensors", EMA_FILE):
        a = load_file(str(genkit.training.checkpoints.latest_checkpoint(straight) / name))
        b = load_file(str(genkit.training.checkpoints.latest_checkpoint(stopped) / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    records = [[{k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "seconds")}
                for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, stopped)]
    assert records[0] == records[1]


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan"])
def test_a_decay_outside_0_to_1_is_refused(tmp_path, value):
    result = invoke([*TINY, "--ema", value, "--out", tmp_path / "run"])
    assert f"--ema {float(value)} must be 0 (off) or a decay below 1" in error_line(result)
    assert not (tmp_path / "run").exists()

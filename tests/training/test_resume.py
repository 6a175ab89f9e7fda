"""Checkpoints: resume equality, interrupts, diverging losses and damaged files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import genkit
import genkit.training.checkpoints
from genkit.cli.app import build_app
from genkit_plugins.beta_elbo import BetaELBO

TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _train(args: list[str]):
    return CliRunner().invoke(build_app(), ["train", *TINY, *args])


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert _train(["--epochs", "3", "--out", str(straight)]).exit_code == 0
    assert _train(["--epochs", "1", "--out", str(stopped)]).exit_code == 0
    first = _weights(stopped)
    assert any(not torch.equal(first[k], v) for k, v in _weights(straight).items())
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(stopped), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = ("images_per_s", "seconds")

    def losses(run):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    assert losses(stopped) == losses(straight) and len(losses(stopped)) == 3


def test_resuming_a_finished_run_says_so_and_exits_0(tmp_path):
    run = tmp_path / "done"
    assert _train(["--epochs", "1", "--out", str(run)]).exit_code == 0
    before = _weights(run)
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run)])
    assert result.exit_code == 0
    assert "already finished" in result.stderr
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_of_a_missing_folder_is_exit_2(tmp_path):
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("victim", ["state.pt", "model.safetensors"])
def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path, victim):
    run = tmp_path / "run"
    assert _train(["--epochs", "1", "--out", str(run)]).exit_code == 0
    checkpoint = genkit.training.checkpoints.latest_checkpoint(run)
    target = checkpoint / victim
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code == 2, result.output
    assert str(target) in result.stderr and ("truncated" in result.stderr or "corrupt" in result.stderr)
    assert "Traceback" not in result.output


class _NanAfter:
    """A loss plugin that turns NaN at a chosen step: a diverging run, on demand."""

    calls = 0

    @genkit.hookimpl
    def register_losses(self, register):
        def build(beta: float = 0.75, nan_at: int = 5):
            inner = BetaELBO(beta)

            def loss(output, images):
                _NanAfter.calls += images.device.type != "meta"  # planning tries the pair once on the meta device
                result = inner(output, images)
                if _NanAfter.calls >= nan_at:
                    result.total = result.total * float("nan")
                return result

            return loss

        register("nan-loss", build)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    _NanAfter.calls = 0
    genkit.register_plugin(_NanAfter(), name="nan-test-plugin")
    try:
        run = tmp_path / "run"
        result = _train(["--loss", "nan-loss", "--loss-opt", "nan_at=7", "--epochs", "2", "--checkpoint-every", "3",
                         "--log-every", "2", "--out", str(run)])
    finally:
        genkit.unregister_plugin("nan-test-plugin")
    assert result.exit_code == 1, result.output
    assert "non-finite at step 7" in result.stderr and "lower --lr" in result.stderr
    checkpoint = genkit.training.checkpoints.latest_checkpoint(run)
    assert checkpoint.name == "step-000000006"
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_exits_130_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "genkit", "train", *TINY, "--data-opt", "count=800", "--epochs", "40",
            "--log-every", "1", "--out", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "latest").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"genkit train --resume {run}" in err
    assert "Traceback" not in err
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code in (0,), result.output
    assert (run / "model.safetensors").is_file()

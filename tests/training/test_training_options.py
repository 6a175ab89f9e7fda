"""Precision and compile where unsupported: a one-line warning and a correct fallback."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from genkit.cli.app import build_app

TINY = ["--data-opt", "count=160", "--image-size", "16", "--batch-size", "16", "--epochs", "1", "--limit", "32",
        "--latent-dim", "4"]


def test_bf16_on_cpu_warns_and_trains_in_fp32(tmp_path):
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--device", "cpu", "--precision", "bf16",
                                              "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: bf16 is not supported on cpu here; training in fp32 instead" in result.stderr
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert all(isinstance(v, (int, float)) and v == v for v in record.values())


def test_compile_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken_compile(model, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--compile", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: torch.compile failed (no working C++ compiler); running eagerly" in result.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_unknown_precision_is_exit_2(tmp_path):
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--precision", "fp8", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "precision 'fp8' is not known; choose one of: fp32, bf16" in result.stderr


def test_streaming_from_disk_trains_like_ram(tmp_path):
    from safetensors.torch import load_file

    runs = {}
    for placement in ("ram", "disk"):
        out = tmp_path / placement
        result = CliRunner().invoke(build_app(), ["train", *TINY, "--data-in", placement, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[placement] = load_file(str(out / "model.safetensors"))
    for key, value in runs["ram"].items():
        assert torch.equal(value, runs["disk"][key]), key


def test_grad_clip_bounds_each_update_and_is_recorded(tmp_path):
    from genkit.runtime.distributed import World
    from genkit.training.step import TrainingStep

    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    step = TrainingStep({"model": optimizer}, World(), {}, grad_clip=0.5)
    step.update("model", (weight * torch.tensor([300.0, 400.0, 0.0])).sum())  # gradient norm 500
    assert torch.allclose(weight.detach(), torch.tensor([-0.3, -0.4, 0.0]))  # scaled to norm 0.5
    unclipped = torch.nn.Parameter(torch.zeros(3))
    TrainingStep({"model": torch.optim.SGD([unclipped], lr=1.0)}, World(), {}).update(
        "model", (unclipped * torch.tensor([300.0, 400.0, 0.0])).sum())
    assert torch.equal(unclipped.detach(), torch.tensor([-300.0, -400.0, 0.0]))  # 0, the default: untouched
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--device", "cpu", "--grad-clip", "1",
                                              "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["grad_clip"] == 1.0
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--grad-clip", "-1", "--out", str(tmp_path / "no")])
    assert result.output.startswith("error: gradient clipping -1.0 must be 0 (off) or a positive norm, for example 1")
    assert result.exit_code == 2 and not (tmp_path / "no").exists()

"""A loss may own the training step too (the same methods a model would define), and the contract's
mistakes are refused before anything is written, each in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import genkit
from conftest import cli, error_line, invoke

TINY = ["--data", "shapes", "--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "8", "--epochs", "1",
        "--batch-size", "16", "--device", "cpu", "--latent-dim", "4"]


class TwoRateElbo(torch.nn.Module):
    """A loss that owns the step: the model's weights by Adam, its own scale by SGD at a tenth of the rate."""

    headline = "mse"

    def __init__(self, parameter_in_both: bool = False, not_a_dict: bool = False):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros(()))
        self.parameter_in_both, self.not_a_dict = parameter_in_both, not_a_dict

    def optimizers(self, lr, model):
        if self.not_a_dict:
            return [torch.optim.Adam(model.parameters(), lr)]
        own = [self.log_scale, *(list(model.parameters())[:1] if self.parameter_in_both else [])]
        return {"model": torch.optim.Adam(model.parameters(), lr), "scale": torch.optim.SGD(own, lr / 10)}

    def _terms(self, model, images, condition):
        out = model(images, condition)
        mse = (out.reconstruction - images).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + out.logvar - out.mu.pow(2) - out.logvar.exp()).sum(1)).mean()
        return mse, kl

    def training_step(self, images, condition, step):
        mse, kl = self._terms(step.model, images, condition)
        total = mse * self.log_scale.exp() + kl
        step.update("model", total)
        step.update("scale", (mse.detach() * self.log_scale.exp() - self.log_scale).abs())
        return genkit.LossResult(total=total.detach(), terms={"mse": mse.detach(), "kl": kl.detach()})

    def validation_step(self, images, condition, step):
        mse, kl = self._terms(step.model, images, condition)
        return genkit.LossResult(total=mse + kl, terms={"mse": mse})


class WrongUpdate(TwoRateElbo):
    def validation_step(self, images, condition, step):
        step.update("model", images.mean())


class OwnedLossPlugin:
    @genkit.hookimpl
    def register_losses(self, register):
        def two_rate(parameter_in_both: bool = False, not_a_dict: bool = False):
            """A loss owning its training step."""
            return TwoRateElbo(parameter_in_both, not_a_dict)

        register("two-rate", two_rate)
        register("wrong-update", lambda: WrongUpdate())


@pytest.fixture(scope="module")
def plugin():
    genkit.register_plugin(OwnedLossPlugin(), name="owned-loss")
    yield
    genkit.unregister_plugin("owned-loss")


def test_a_loss_that_owns_the_step_trains_both_optimizers_and_resumes_them(plugin, tmp_path):
    out = tmp_path / "run"
    code, output = cli("train", "--model", "cvae", "--loss", "two-rate", *TINY, "--out", str(out))
    assert code == 0, output
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_mse", "train_kl", "val_loss", "val_mse"} <= set(record) and record["headline"] == "mse"
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    state = torch.load(latest / "state.pt", weights_only=True)
    assert set(state["optimizers"]) == {"model", "scale"}
    assert state["optimizers"]["scale"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    assert "log_scale" in load_file(str(out / "loss.safetensors"))
    code, output = cli("train", "--resume", str(out), "--epochs", "2", "--lr", "1e-3")
    assert code == 0, output
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    groups = torch.load(latest / "state.pt", weights_only=True)["optimizers"]
    # --lr on resume reaches every optimizer as the loss builds them from it (a tenth for the scale)
    assert groups["model"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert groups["scale"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("option, message", [
    ("parameter_in_both=true", "a parameter is in both 'model' and 'scale'"),
    ("not_a_dict=true", "returned list, not a dict of names to torch.optim optimizers"),
])
def test_optimizers_that_break_the_contract_are_refused_before_anything_is_written(plugin, tmp_path, option,
                                                                                   message):
    line = error_line(invoke(["train", "--model", "cvae", "--loss", "two-rate", "--loss-opt", option, *TINY,
                              "--out", str(tmp_path / "run")]))
    assert message in line and not (tmp_path / "run").exists()


def test_an_update_in_validation_is_a_runtime_error_naming_it(plugin, tmp_path):
    result = invoke(["train", "--model", "cvae", "--loss", "wrong-update", *TINY, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "step.update('model') was called in validation_step" in result.stderr


def test_a_forward_after_an_update_in_the_same_autocast_step_sees_the_updated_weights():
    from genkit.runtime.distributed import World
    from genkit.training.step import TrainingStep

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    step = TrainingStep({"m": torch.optim.SGD(layer.parameters(), lr=0.5)}, World(), {})
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's --precision bf16 region
        before = layer(x)
        step.update("m", before.float().pow(2).sum())
        after = layer(x)
    assert not torch.equal(before, after)  # not the bf16 copy of the weights cached before the update


class NoUpdate(TwoRateElbo):
    def training_step(self, images, condition, step):
        mse, kl = self._terms(step.model, images, condition)
        return genkit.LossResult(total=mse + kl, terms={})


def test_a_step_that_updates_nothing_is_refused_naming_the_step(plugin, tmp_path):
    genkit.register_plugin(type("P", (), {"register_losses": genkit.hookimpl(
        lambda self, register: register("no-update", lambda: NoUpdate()))})(), name="no-update-loss")
    try:
        line = error_line(invoke(["train", "--model", "cvae", "--loss", "no-update", *TINY,
                                  "--out", str(tmp_path / "run")]))
    finally:
        genkit.unregister_plugin("no-update-loss")
    assert line.startswith("error: the training step of loss 'no-update' cannot run with model 'cvae'")
    assert "step.update for none of its optimizers" in line and not (tmp_path / "run").exists()

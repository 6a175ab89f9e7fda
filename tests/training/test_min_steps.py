"""``--min-steps``: the epochs raised until a run takes enough optimizer steps, kept by ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genkit
from genkit.config import planned_epochs
from conftest import error_line, invoke

#: 32 images at 16x16 in one batch: one optimizer step per epoch, a few seconds a run
TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--limit", "32", "--batch-size", "32",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]", "--device", "cpu", "--no-tensorboard"]
DATA = {"data_options": {"count": 160, "seed": 5}, "image_size": 16}


def _train(out: Path, *args: str):
    return invoke(["train", *TINY, *args, "--out", out])


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["train"]


def _epochs_done(run: Path) -> int:
    return len((run / "metrics.jsonl").read_text().splitlines())


def test_planned_epochs_are_the_epochs_raised_to_take_min_steps():
    assert planned_epochs(6, 7200, 1200) == 6  # the flow on the full shapes set: unchanged
    assert planned_epochs(6, 7200, 150) == 48  # on 1,200 images in batches of 8
    assert planned_epochs(6, 7201, 150) == 49  # every step asked for is taken
    assert planned_epochs(60, 7200, 150) == 60  # never lowered
    assert planned_epochs(6, 0, 150) == 6  # 0: off


def test_the_plan_raises_the_epochs_and_says_so_in_one_line():
    notes: list[str] = []
    config = genkit.plan_run("cvae", "shapes", **DATA, batch_size=32, min_steps=40, say=notes.append)  # 128 images
    assert (config.train.epochs, config.train.min_steps) == (10, 40)
    assert notes == ["min_steps 40 raised the epochs from 6 to 10 (4 steps each); --epochs 6 trains exactly 6"]
    notes.clear()
    assert genkit.plan_run("cvae", "shapes", **DATA, batch_size=32, min_steps=20, say=notes.append).train.epochs == 6
    assert notes == []  # 6 epochs take 24 steps already


def test_the_flow_asks_for_7200_steps_and_the_cvae_for_none():
    flow = genkit.plan_run("flow", "shapes", **DATA)  # 128 images in batches of 8: 16 steps an epoch
    assert (flow.train.min_steps, flow.train.epochs) == (7200, 450)
    assert genkit.plan_run("flow", "shapes").train.epochs == 6  # the full set's 1,200 steps an epoch: unchanged
    cvae = genkit.plan_run("cvae", "shapes", **DATA)
    assert (cvae.train.min_steps, cvae.train.epochs) == (0, 6)


def test_epochs_given_without_min_steps_train_exactly_those(flow_run):
    assert genkit.plan_run("flow", "shapes", **DATA, epochs=2).train.epochs == 2  # the advice, followed
    assert genkit.plan_run("flow", "shapes", **DATA, epochs=2, min_steps=64).train.epochs == 4  # both: the larger
    train = _config(flow_run)  # conftest's: genkit train --model flow ... --epochs 1
    assert (train["epochs"], train["min_steps"]) == (1, 0)
    assert _epochs_done(flow_run) == 1


def test_the_train_command_says_the_raise_and_trains_it(tmp_path):
    result = _train(tmp_path / "run", "--epochs", "1", "--min-steps", "3")
    assert result.exit_code == 0, result.output
    assert "min_steps 3 raised the epochs from 1 to 3 (1 step each); --epochs 1 trains exactly 1" in result.stderr
    assert _config(tmp_path / "run")["epochs"] == 3 and _epochs_done(tmp_path / "run") == 3


def test_a_refusal_after_the_raise_is_still_its_one_line(tmp_path):
    out = tmp_path / "never"
    line = error_line(_train(out, "--min-steps", "100", "--loss", "flow-matching"))  # planned, then refused
    assert line.startswith("error: loss 'flow-matching' cannot train model 'cvae'") and not out.exists()


class _Stopped(Exception):
    pass


class _StopAfterFirstEpoch:
    """An observer that stops training once the first epoch's checkpoint is written (observers hear it after)."""

    def on_epoch_end(self, epoch, record):
        raise _Stopped


def test_a_resumed_run_keeps_the_raised_plan_and_ends_as_one_that_never_stopped(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert _train(straight, "--epochs", "1", "--min-steps", "3").exit_code == 0
    config = genkit.plan_run("cvae", "shapes", **DATA, limit=32, batch_size=32, model_options={"latent_dim": 4,
                             "channels": [8, 16]}, device="cpu", epochs=1, min_steps=3)
    with pytest.raises(_Stopped):
        genkit.train(config, out_dir=stopped, observer=_StopAfterFirstEpoch(), tensorboard=False)
    assert _epochs_done(stopped) == 1
    result = invoke(["train", "--resume", stopped, "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert _config(stopped) == _config(straight) and _epochs_done(stopped) == 3
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_changes_the_plan_as_a_new_run_would(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1").exit_code == 0
    result = invoke(["train", "--resume", run, "--min-steps", "2", "--grad-clip", "0.5", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert "min_steps 2 raised the epochs from 1 to 2 (1 step each); --epochs 1 trains exactly 1" in result.stderr
    assert (_config(run)["epochs"], _config(run)["min_steps"], _config(run)["grad_clip"]) == (2, 2, 0.5)
    result = invoke(["train", "--resume", run, "--epochs", "3", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert (_config(run)["epochs"], _config(run)["min_steps"], _epochs_done(run)) == (3, 0, 3)  # exactly 3
    changed = [json.loads(line)["changed"] for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert changed[0] == {"min_steps": {"from": 0, "to": 2}, "epochs": {"from": 1, "to": 2},
                          "grad_clip": {"from": 0.0, "to": 0.5}}
    assert changed[1] == {"epochs": {"from": 2, "to": 3}, "min_steps": {"from": 2, "to": 0}}


@pytest.mark.parametrize("value, message", [
    ("-1", "error: --min-steps -1 must be 0 (off) or a whole number of steps, for example 7200"),
    ("1.5", "error: --min-steps '1.5' is not a whole number; Train at least this many optimizer steps"),
    ("many", "error: --min-steps 'many' is not a whole number;"),
])
def test_bad_min_steps_are_one_line_and_write_nothing(tmp_path, value, message):
    out = tmp_path / "never"
    assert error_line(_train(out, "--min-steps", value)).startswith(message)
    assert not out.exists()


@pytest.mark.parametrize("value, message", [
    (-1, "--min-steps -1 must be 0 (off) or a whole number of steps"),
    (2.5, "--min-steps 2.5 is not a whole number; give 0 (off) or a whole number of steps, for example 7200"),
    ("7200", "--min-steps '7200' is not a whole number"),
    (True, "--min-steps True is not a whole number"),
])
def test_bad_min_steps_from_python_are_one_line_usage_errors(value, message):
    with pytest.raises(genkit.UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        genkit.plan_run("cvae", "shapes", **DATA, min_steps=value)


def test_a_wrong_type_of_any_setting_is_one_line_on_resume_and_in_a_sweep(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1").exit_code == 0
    line = error_line(invoke(["train", "--resume", run, "--grad-clip", "abc"]))
    assert line == "error: gradient clipping 'abc' is not a number; Clip each update's gradients to this global " \
                   "norm, e.g. 1 (default 0: off, or the model's own)."
    assert error_line(invoke(["train", "--resume", run, "--min-steps", "-3"])).startswith("error: --min-steps -3 must")
    with pytest.raises(genkit.UsageError, match="^--epochs 2.5 is not a whole number"):
        genkit.resume(run, epochs=2.5)
    config = json.loads((run / "config.json").read_text())
    config["train"]["min_steps"] = "lots"
    (run / "config.json").write_text(json.dumps(config))
    assert "train.min_steps is \"lots\" (text), but it must be a whole number, like 0" in error_line(
        invoke(["train", "--resume", run]))
    for vary, says in (("train.min_steps=1.5", "--vary train.min_steps value '1.5' is not a whole number"),
                       ("train.grad_clip=abc", "--vary train.grad_clip value 'abc' is not a number")):
        line = error_line(invoke(["sweep", "--out", tmp_path / "sweep", *TINY, "--vary", vary]))
        assert line == f"error: {says}" and not (tmp_path / "sweep").exists()

"""Tracking runs: TensorBoard event files (read back with TensorBoard's own reader), `genkit runs`
and `genkit runs diff`, and their bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import error_line, invoke
from genkit.cli.app import build_app
from genkit.errors import UsageError

TINY = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--batch-size", "16",
        "--latent-dim", "4", "--model-opt", "channels=[8,16]", "--log-every", "2"]


def _events(folder: Path) -> tuple[dict[str, list], object]:
    """Tag -> its events, as TensorBoard itself reads the folder (restarts purged)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    reader.Reload()
    return {tag: reader.Tensors(tag) for tag in reader.Tags()["tensors"]}, reader


def _value(event) -> float:
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto))


def _hparams(reader) -> dict:
    from tensorboard.plugins.hparams import metadata

    content = reader.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    values = metadata.parse_session_start_info_plugin_data(content).hparams
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in values.items()}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(*args: str):
    return CliRunner().invoke(build_app(), ["train", *TINY, *args])


def _check_events_match_the_records(run: Path) -> tuple[dict[str, list], object]:
    """Every steps.jsonl and metrics.jsonl record is in the events once, at its step, with its value."""
    events, reader = _events(run)
    steps, epochs = _records(run / "steps.jsonl"), _records(run / "metrics.jsonl")
    for key in ("loss", "kl", "mse", "images_per_s", "data_wait_s"):
        assert [e.step for e in events[f"step/{key}"]] == [s["step"] for s in steps], key
    assert [_value(e) for e in events["step/loss"]] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    for key in ("train_loss", "val_loss", "val_mse", "val_kl", "images_per_s"):
        assert [e.step for e in events[f"epoch/{key}"]] == [r["step"] for r in epochs], key
        assert [_value(e) for e in events[f"epoch/{key}"]] == pytest.approx([r[key] for r in epochs], rel=1e-6)
    assert [e.step for e in events["samples"]] == [r["step"] for r in epochs]
    assert "config/text_summary" in events
    return events, reader


def test_event_files_hold_every_record_and_continue_across_a_resume(tmp_path):
    run = tmp_path / "run"
    assert _train("--epochs", "1", "--out", str(run)).exit_code == 0
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one per session
    events, reader = _check_events_match_the_records(run)
    steps = [e.step for e in events["step/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # 128 images / 16 = 8 steps per epoch, 2 epochs
    assert [e.step for e in events["epoch/val_loss"]] == [8, 16]
    config = json.loads((run / "config.json").read_text())
    hparams = _hparams(reader)
    assert hparams["train.lr"] == config["train"]["lr"] and hparams["model.name"] == "cvae"
    assert hparams["model.options.latent_dim"] == 4 and hparams["loss.name"] == config["loss"]["name"]
    assert "data.root" not in hparams and "data.attribute_names" not in hparams
    from tensorboard.util import tensor_util

    grid = tensor_util.make_ndarray(events["samples"][-1].tensor_proto)  # [width, height, png]
    assert grid[2][:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resume_from_an_earlier_checkpoint_drops_what_came_after_it(tmp_path):
    """As after a crash: the events go past the checkpoint resumed from; the rerun steps appear once."""
    run = tmp_path / "run"
    assert _train("--epochs", "1", "--checkpoint-every", "4", "--out", str(run)).exit_code == 0
    (run / "checkpoints" / "latest").write_text("step-000000004")  # the crash came after step 4
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    events, _ = _check_events_match_the_records(run)
    assert [e.step for e in events["step/loss"]] == [2, 4, 6, 8]
    assert [e.step for e in events["epoch/val_loss"]] == [8]


def test_a_run_trained_without_tensorboard_gets_its_history_when_resumed_with_it(tmp_path):
    run = tmp_path / "run"
    assert _train("--epochs", "1", "--no-tensorboard", "--out", str(run)).exit_code == 0
    assert not list(run.glob("events.out.tfevents.*"))
    result = CliRunner().invoke(build_app(), ["train", "--resume", str(run), "--epochs", "2", "--tensorboard"])
    assert result.exit_code == 0, result.output
    events, _ = _check_events_match_the_records(run)
    assert [e.step for e in events["epoch/val_loss"]] == [8, 16]


def test_tensorboard_asked_for_but_missing_is_one_line_before_any_work(tmp_path, monkeypatch):
    from genkit.training import tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    assert tensorboard.wanted(None) is False and tensorboard.wanted(False) is False
    for command in (["train", *TINY, "--out", str(tmp_path / "run")],
                    ["train", "--resume", str(tmp_path / "run")],
                    ["sweep", "--beta", "0.25,0.5", "--loss", "beta-elbo", "--out", str(tmp_path / "sweep")],
                    ["evaluate", "--run", str(tmp_path / "run")]):
        line = error_line(invoke([*command, "--tensorboard"]))
        assert 'needs the tensorboard package' in line and 'pip install "genkit-cvae[tensorboard]"' in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    import genkit

    with pytest.raises(UsageError, match="needs the tensorboard package"):
        genkit.train(genkit.plan_run("cvae", "shapes", data_options={"count": 160}, image_size=16), tmp_path / "r",
                     tensorboard=True)
    assert not (tmp_path / "r").exists()


def test_evaluation_figures_go_to_a_sub_run_nulls_left_out_and_a_rerun_replaces_them(tmp_path):
    from genkit.training.tensorboard import log_evaluation

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "step": 8}\n{"epoch": 2, "step": 16}\n')
    result = {"images": 40, "mse": 12.5, "attribute_accuracy": 0.75, "fd": None, "diversity_ratio": None,
              "weakest_attribute": "large", "per_attribute_accuracy": {"large": 0.5, "top": 1.0}, "seed": 0}
    folder = log_evaluation(run, "evaluation_test", result)
    log_evaluation(run, "evaluation_test", {**result, "mse": 10.0})  # evaluated again
    assert folder == run / "evaluation_test"
    events, _ = _events(folder)
    assert set(events) == {"evaluation/mse", "evaluation/attribute_accuracy", "attribute_accuracy/large",
                           "attribute_accuracy/top"}
    assert [(e.step, _value(e)) for e in events["evaluation/mse"]] == [(16, 10.0)]


def test_a_failing_tensorboard_write_warns_once_and_logging_stops(tiny_run, tmp_path):
    """A full disk under the event files: one warning, the training goes on (metrics.jsonl is the record)."""
    from genkit.config import RunConfig
    from genkit.training.tensorboard import TensorBoardLog

    warnings = []
    log = TensorBoardLog(tmp_path, RunConfig.load(tiny_run / "config.json"), 0, [], [], warn=warnings.append)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    log.events.writer.add_scalar = full
    log.on_step(1, 2, {"step": 2, "epoch_float": 0.1, "loss": 1.0})
    log.on_step(1, 4, {"step": 4, "epoch_float": 0.2, "loss": 0.9})
    log.on_epoch_end(1, {"epoch": 1, "step": 4, "val_loss": 0.8})
    log.close()
    assert len(warnings) == 1 and warnings[0].startswith("warning: TensorBoard logging stopped (OSError: [Errno 28] "
                                                         "No space left on device)")


def test_the_cli_display_and_the_log_both_get_every_event(tmp_path):
    """The Trainer's observer and the TensorBoard log side by side; on_step gets the steps.jsonl record."""
    import genkit

    seen = []

    class Recorder:
        def on_step(self, epoch, step, record):
            if record is not None:
                seen.append(record)

    config = genkit.plan_run("cvae", "shapes", data_options={"count": 160, "seed": 5}, image_size=16, epochs=1,
                             batch_size=32, log_every=2, model_options={"latent_dim": 4, "channels": [8, 16]})
    genkit.train(config, tmp_path / "run", observer=Recorder())
    assert seen == _records(tmp_path / "run" / "steps.jsonl")
    events, _ = _events(tmp_path / "run")
    assert [e.step for e in events["step/loss"]] == [r["step"] for r in seen]


# -- genkit runs -------------------------------------------------------------------------------

def _copy_run(source: Path, target: Path, **train) -> Path:
    """A run folder from ``source``'s JSON files (no weights needed to list it), settings changed."""
    target.mkdir(parents=True)
    config = json.loads((source / "config.json").read_text())
    config["train"].update(train)
    (target / "config.json").write_text(json.dumps(config))
    shutil.copy(source / "metrics.jsonl", target / "metrics.jsonl")
    return target


def _evaluation(folder: Path, fd, ratio, weakest=0.5, split="test") -> None:
    (folder / f"evaluation_{split}.json").write_text(json.dumps({
        "relative_attribute_accuracy": ratio, "min_attribute_accuracy": weakest, "weakest_attribute": "large",
        "diversity_ratio": 0.8, "fd": fd, "mse": 10.0, "images": 40}))


@pytest.fixture
def runs_folder(tiny_run, tmp_path) -> Path:
    """Good runs (two in a sweep folder), a broken config, damaged metrics, a foreign folder."""
    root = tmp_path / "runs"
    _evaluation(_copy_run(tiny_run, root / "sweep" / "lr-0.001", lr=0.001), fd=3.0, ratio=0.9)
    _evaluation(_copy_run(tiny_run, root / "sweep" / "lr-0.002", lr=0.002), fd=1.5, ratio=0.7)
    (root / "sweep" / "table.csv").write_text("lr\n")
    _copy_run(tiny_run, root / "plain")
    damaged = _copy_run(tiny_run, root / "damaged-metrics")
    (damaged / "metrics.jsonl").write_text('{"epoch": 1, "step": 8}\n{"epoch": 2, "st')
    broken = root / "broken-config"
    broken.mkdir()
    (broken / "config.json").write_text('{"data": {"name": ')
    (root / "notes" / "old").mkdir(parents=True)
    (root / "notes" / "todo.txt").write_text("compare priors")
    other = root / "hf-model"
    other.mkdir()
    (other / "config.json").write_text('{"architectures": ["Bert"]}')
    return root


def test_runs_lists_good_runs_and_marks_broken_and_foreign_folders(runs_folder):
    result = invoke(["runs", runs_folder, "--json"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).relative_to(runs_folder).as_posix(): r for r in json.loads(result.stdout)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "sweep/lr-0.001": "ok", "sweep/lr-0.002": "ok", "plain": "ok", "damaged-metrics": "ok",
        "broken-config": "broken", "notes": "not-a-run", "hf-model": "not-a-run"}
    good = rows["sweep/lr-0.001"]
    assert (good["model"], good["data"], good["image_size"], good["epochs_done"], good["epochs_planned"]) == \
        ("cvae", "shapes", [16, 16], 1, 1)
    assert set(good["validation"]) >= {"val_loss", "val_mse", "val_kl"}
    assert (good["attribute_ratio"], good["weakest_attribute"], good["fd"], good["evaluation_split"]) == \
        (0.9, "large", 3.0, "test")
    assert rows["plain"]["fd"] is None and rows["plain"]["problem"] is None
    assert rows["damaged-metrics"]["problem"] == "metrics.jsonl is damaged (line 2 is not JSON)"
    assert rows["broken-config"]["problem"].startswith("config.json is damaged (")
    assert rows["notes"]["problem"] == "not a genkit run (no config.json, and no run folder inside)"
    assert rows["hf-model"]["problem"] == "not a genkit run (its config.json is not a genkit config)"

    table = invoke(["runs", runs_folder])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert any(str(runs_folder / "sweep" / "lr-0.002") in line and "shapes 16x16" in line and "1.5" in line
               for line in lines)
    notes = [line for line in lines if line.startswith("! ") and ": " in line]
    assert [n.split(": ")[0][2:] for n in notes] == [str(runs_folder / name) for name in
                                                      ("damaged-metrics", "broken-config", "hf-model", "notes")]
    assert f"! {runs_folder / 'broken-config'}: config.json is damaged" in table.stdout
    row = next(line for line in lines if line.startswith(f"! {runs_folder / 'damaged-metrics'} "))
    assert "cvae" in row and "?/1" in row  # the run is listed, marked, its epochs unknown
    assert "Traceback" not in table.output


def test_runs_sorts_best_first_and_lists_the_keys_it_knows(runs_folder):
    def order(key):
        result = invoke(["runs", runs_folder, "--sort", key, "--json"])
        assert result.exit_code == 0, result.output
        return [Path(r["path"]).name for r in json.loads(result.stdout) if r["status"] == "ok"]

    assert order("fd")[:2] == ["lr-0.002", "lr-0.001"]  # lower fd first, runs without one after
    assert order("attribute_ratio")[:2] == ["lr-0.001", "lr-0.002"]  # higher first
    assert order("name") == ["damaged-metrics", "plain", "lr-0.001", "lr-0.002"]
    line = error_line(invoke(["runs", runs_folder, "--sort", "speed"]))
    assert line.startswith("error: --sort 'speed' is not a column; sort by one of: name, model, loss, data, epochs,")
    assert "fd" in line and "val_loss" in line


def test_runs_bad_paths_are_one_line(tmp_path, monkeypatch):
    assert "does not exist" in error_line(invoke(["runs", tmp_path / "nowhere"]))
    (tmp_path / "file.txt").write_text("x")
    assert "is a file, not a folder" in error_line(invoke(["runs", tmp_path / "file.txt"]))
    monkeypatch.chdir(tmp_path)  # the default, runs/, does not exist here
    assert error_line(invoke(["runs"])) == ("error: runs does not exist; name the folders holding your runs: "
                                           "genkit runs PATH... (the default is runs)")


def test_an_unreadable_folder_is_a_marked_row_or_one_line(runs_folder, monkeypatch):
    real_scandir = os.scandir
    locked = {str(runs_folder / "notes"), str(runs_folder / "locked")}
    (runs_folder / "locked").mkdir()

    def scandir(path):
        if str(path) in locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # (the tests run as root, whom chmod does not stop)
    result = invoke(["runs", runs_folder])
    assert result.exit_code == 0 and f"! {runs_folder / 'locked'}: cannot be read (Permission denied)" in result.stdout
    locked.add(str(runs_folder))
    assert error_line(invoke(["runs", runs_folder])) == \
        f"error: {runs_folder} cannot be read (Permission denied); check its permissions"


def test_runs_diff_shows_only_the_settings_that_differ_and_both_runs_figures(runs_folder):
    a, b = runs_folder / "sweep" / "lr-0.001", runs_folder / "sweep" / "lr-0.002"
    result = invoke(["runs", "diff", a, b, "--json"])
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert diff["settings"] == [["train.lr", 0.001, 0.002]]
    metrics = {m[0]: m[1:] for m in diff["metrics"]}
    assert metrics["epochs"] == ["1/1", "1/1"] and metrics["eval.fd"] == [3.0, 1.5]
    assert metrics["eval.weakest_attribute"] == ["large", "large"] and "eval.images" not in metrics
    assert diff["split"] == "test" and metrics["val_loss"][0] == metrics["val_loss"][1]
    shown = invoke(["runs", "diff", a, b])
    assert shown.exit_code == 0 and "train.lr" in shown.stdout and "model.name" not in shown.stdout
    same = invoke(["runs", "diff", a, a])
    assert "the two configs are the same" in same.stdout
    assert "holds no config.json, so it is not a run folder" in error_line(invoke(["runs", "diff", a,
                                                                                   runs_folder / "notes"]))
    assert "config.json is damaged" in error_line(invoke(["runs", "diff", a, runs_folder / "broken-config"]))
    assert "is not a folder" in error_line(invoke(["runs", "diff", a, runs_folder / "nowhere"]))


def test_genkit_runs_starts_without_torch_or_plugins(runs_folder):
    code = ("import sys; sys.argv = ['genkit', 'runs', sys.argv[1], '--json']\n"
            "from genkit.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "loaded = [m for m in ('torch', 'genkit_plugins.cvae', 'genkit.components.loading') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code, str(runs_folder)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 7

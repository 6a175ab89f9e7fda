"""`genkit sweep`: one run per value of any option (β, the prior, a grid), evaluated, with the table,
figures and plot; reuse on every dataset, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_line
from genkit.cli.app import build_app
from genkit.errors import UsageError
from genkit.sweep.vary import parse_values

TINY = ["--loss", "beta-elbo", "--prior", "standard", "--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "16", "--epochs", "1", "--limit", "64",
        "--latent-dim", "4", "--batch-size", "16", "--samples", "4"]


@pytest.fixture(scope="module")
def sweep(runner, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sweep")
    out, cache = base / "out", base / "cache"
    result = runner.invoke(build_app(), ["sweep", *TINY, "--beta", "0.25,0.9", "--cache-dir", str(cache),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, cache


def test_sweep_writes_one_evaluated_run_per_beta_and_the_table(sweep):
    out, _ = sweep
    for beta in ("0.25", "0.9"):
        config = json.loads((out / f"beta-{beta}" / "config.json").read_text())
        assert config["loss"]["options"]["beta"] == float(beta)
        assert config["train"]["seed"] == 0 and config["data"]["options"] == {"count": 160, "seed": 3}
        assert (out / f"beta-{beta}" / "evaluation_test.json").is_file()
    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["beta"]) for r in rows] == [0.25, 0.9]
    assert {"beta", "mse", "kl", "elbo", "cll", "attribute_accuracy"} <= set(rows[0])
    for row in rows:
        assert float(row["cll"]) >= float(row["elbo"])
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| beta | mse |") and len(table) == 4
    assert [r["beta"] for r in json.loads((out / "sweep.json").read_text())] == [0.25, 0.9]


def test_sweep_figures(sweep):
    out, _ = sweep
    for name in ("figure3.png", "figure4.png", "mse_kl_vs_beta.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300 and image.size[1] > 100, name
    with Image.open(out / "figure3.png") as three, Image.open(out / "figure4.png") as four:
        assert four.size[1] > three.size[1]  # two rows per β against one


def test_rerunning_a_sweep_reuses_finished_runs(runner, sweep):
    out, cache = sweep
    weights = out / "beta-0.25" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    result = runner.invoke(build_app(), ["sweep", *TINY, "--beta", "0.25,0.9", "--cache-dir", str(cache),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reusing the finished run" in result.stderr
    assert weights.stat().st_mtime_ns == before


def test_a_sweep_folder_holding_other_runs_is_refused(runner, sweep, tmp_path):
    out, cache = sweep
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY[:-2], "--samples", "4", "--epochs", "2",
                                                   "--vary", "loss.beta=0.25", "--cache-dir", str(cache), "--out", str(out)]))
    assert f"{out / 'beta-0.25'} holds a run with epochs=1, not the 2 asked for" in line
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--data-opt", "count=200", "--vary", "loss.beta=0.9",
                                                   "--cache-dir", str(cache), "--out", str(out)]))
    assert "holds a run with data.count=160, not the 200 asked for" in line
    other = tmp_path / "other"
    (other / "beta-0.5").mkdir(parents=True)
    config = json.loads((out / "beta-0.25" / "config.json").read_text())
    config["data"]["name"] = "celeba"
    (other / "beta-0.5" / "config.json").write_text(json.dumps(config))
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--vary", "loss.beta=0.5", "--out", str(other)]))
    assert "holds a run for celeba (12 attributes), not the shapes asked for" in line


@pytest.mark.parametrize("betas, message", [
    ("", "--beta is empty; give one or more values separated by commas"),
    (" , ", "--beta is empty"),
    ("0.5,half", "--beta value 'half' is not a number"),
    ("0.5,0.5", "--beta value 0.5 is listed twice"),
])
def test_bad_beta_lists_are_one_line_errors_and_write_nothing(runner, tmp_path, betas, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_values(betas, "--beta", 0.75)
    line = error_line(runner.invoke(build_app(), ["sweep", "--loss", "beta-elbo", "--beta", betas, "--out", str(tmp_path / "s")]))
    assert message in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("betas, message", [
    ("0.25,1.5", "beta 1.5 is outside [0, 1]"),
    ("-0.1,0.5", "beta -0.1 is outside [0, 1]"),
])
def test_values_the_loss_refuses_fail_before_anything_is_written(runner, tmp_path, betas, message):
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--beta", betas, "--out", str(tmp_path / "s")]))
    assert message in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("vary, message", [
    ("loss.gamma=1,2", "--vary loss.gamma: loss 'beta-elbo' has no option 'gamma'; its options are: beta"),
    ("decoder.width=1,2", "--vary decoder.width: 'decoder' is not a kind of option; use one of data, conditioner, "
                          "model, loss, train"),
    ("model.latent_dim=4,half", "--vary model.latent_dim value 'half' is not a number"),
    ("model.latent_dim=4,4.5", "--vary model.latent_dim value '4.5' is not a whole number"),
    ("train.speed=1,2", "--vary train.speed: there is no training setting 'speed'"),
    ("loss.beta", "--vary 'loss.beta' is not KIND.OPTION=V1,V2"),
    ("model.prior=standard,sideways", "prior 'sideways' is not known; choose one of: standard, learned"),
])
def test_bad_vary_is_one_line_and_writes_nothing(runner, tmp_path, vary, message):
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--vary", vary, "--out", str(tmp_path / "s")]))
    assert message in line
    assert not (tmp_path / "s").exists()


def test_nothing_to_vary_is_refused(runner, tmp_path):
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--beta", "0.5", "--out", str(tmp_path / "s")]))
    assert "nothing to vary; give --vary KIND.OPTION=V1,V2" in line


def test_a_grid_over_two_components_options(runner, sweep, tmp_path):
    _, cache = sweep
    out = tmp_path / "grid"
    result = runner.invoke(build_app(), ["sweep", *TINY, "--vary", "model.prior=standard,learned",
                                         "--vary", "loss.beta=0.5,0.9", "--cache-dir", str(cache), "--out", str(out)])
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["prior-learned_beta-0.5", "prior-learned_beta-0.9", "prior-standard_beta-0.5",
                       "prior-standard_beta-0.9"]
    config = json.loads((out / "prior-learned_beta-0.9" / "config.json").read_text())
    assert config["model"]["options"]["prior"] == "learned" and config["loss"]["options"]["beta"] == 0.9
    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["prior"], float(r["beta"])) for r in rows] == [("standard", 0.5), ("standard", 0.9),
                                                              ("learned", 0.5), ("learned", 0.9)]
    assert {"val_loss", "val_mse", "val_kl"} <= set(rows[0])  # the loss's own terms
    with Image.open(out / "mse_kl_vs_prior.png") as image:
        assert image.size[0] > 300


def test_a_missing_split_or_bad_samples_fail_before_any_training(runner, sweep, tmp_path):
    _, cache = sweep
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--vary", "loss.beta=0.5", "--split", "holdout",
                                                   "--cache-dir", str(cache), "--out", str(tmp_path / "s")]))
    assert "split 'holdout' does not exist in shapes" in line
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--vary", "loss.beta=0.5", "--sigma", "0",
                                                   "--out", str(tmp_path / "s")]))
    assert "--sigma 0.0 must be a positive number" in line
    assert not (tmp_path / "s" / "beta-0.5").exists()


def test_parse_values_keeps_the_order_given():
    assert parse_values("0.9, 0.25,0.5", "--beta", 0.75) == (0.9, 0.25, 0.5)


def test_a_loss_without_beta_is_refused(runner, tmp_path):
    line = error_line(runner.invoke(build_app(), ["sweep", *TINY, "--loss", "nope", "--beta", "0.5",
                                                   "--out", str(tmp_path / "s")]))
    assert "unknown loss 'nope'" in line


def _folder(root: Path) -> Path:
    """A folder dataset of 40 small images, two attributes."""
    (root / "pics").mkdir(parents=True)
    rows = []
    for i in range(40):
        pixels = np.full((16, 16, 3), 30, dtype=np.uint8)
        pixels[..., 0], pixels[..., 2] = 200 * (i % 2), 200 * ((i // 2) % 2)
        Image.fromarray(pixels).save(root / "pics" / f"{i:03d}.png")
        rows.append(f"pics/{i:03d}.png,{i % 2},{(i // 2) % 2}")
    (root / "attributes.csv").write_text("filename,red,blue\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["folder", "cub"])
def test_rerunning_a_sweep_reuses_its_runs_on_datasets_scanned_from_disk(runner, tmp_path, dataset):
    from fixtures_real_formats import write_cub

    root = _folder(tmp_path / "data") if dataset == "folder" else write_cub(tmp_path / "data", n_classes=2,
                                                                             per_class=10).root
    args = ["sweep", "--loss", "beta-elbo", "--data", dataset, "--root", str(root), "--image-size", "16", "--epochs", "1",
            "--latent-dim", "4", "--batch-size", "8", "--samples", "2", "--beta", "0.25,0.75",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    first = runner.invoke(build_app(), args)
    assert first.exit_code == 0, first.output
    config = json.loads((tmp_path / "out" / "beta-0.25" / "config.json").read_text())
    assert "placeholder" not in config["data"]["attribute_names"] and len(config["data"]["attribute_names"]) >= 2
    second = runner.invoke(build_app(), args)
    assert second.exit_code == 0, second.output
    assert second.stderr.count("reusing the finished run") == 2


def test_an_option_varied_twice_is_refused(runner, tmp_path):
    for extra in (["--beta", "0.5,0.9", "--vary", "loss.beta=0.25"], ["--vary", "loss.beta=0.5", "--vary", "loss.beta=0.9"]):
        line = error_line(runner.invoke(build_app(), ["sweep", *TINY, *extra, "--out", str(tmp_path / "s")]))
        assert "loss.beta is varied twice; give all its values once" in line
    assert not (tmp_path / "s").exists()


def test_each_point_of_a_sweep_is_a_tensorboard_run_with_its_settings_and_evaluation(sweep):
    """`tensorboard --logdir OUT` overlays the points: one event log each, the varied option as an hparam."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    out, _ = sweep
    for beta in ("0.25", "0.9"):
        run = EventAccumulator(str(out / f"beta-{beta}"))
        run.Reload()
        content = run.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
        assert metadata.parse_session_start_info_plugin_data(content).hparams["loss.options.beta"].number_value == \
            float(beta)
        assert {"epoch/val_loss", "step/loss", "samples"} <= set(run.Tags()["tensors"])
        evaluation = EventAccumulator(str(out / f"beta-{beta}" / "evaluation_test"))
        evaluation.Reload()
        assert {"evaluation/cll", "evaluation/attribute_accuracy"} <= set(evaluation.Tags()["tensors"])


def test_sweep_takes_every_training_setting_train_takes():
    import typer

    from genkit.config import TrainSpec, training_settings

    commands = typer.main.get_command(build_app()).commands
    flags = {name: {o for p in commands[name].params for o in getattr(p, "opts", ())} for name in ("train", "sweep")}
    wanted = {option.flag for option in training_settings().values()}
    assert len(wanted) == len(TrainSpec.__dataclass_fields__)
    assert wanted <= flags["train"] and wanted <= flags["sweep"]  # --min-steps, --grad-clip, --compile included


def test_the_sweeps_plan_raises_epochs_by_min_steps_and_says_it_once(tmp_path):
    from genkit.sweep.plan import plan_sweep
    from genkit.sweep.vary import parse_vary

    components = {"data": "shapes", "conditioner": "tiled-onehot", "model": "cvae", "loss": "beta-elbo"}
    notes: list[str] = []
    plan = plan_sweep(parse_vary(["loss.beta=0.25,0.9"], components), tmp_path / "s", loss="beta-elbo",
                      data_options={"count": 160, "seed": 3}, image_size=16, limit=64, batch_size=16, min_steps=40,
                      grad_clip=1.0, say=notes.append)
    assert [(c.train.epochs, c.train.min_steps, c.train.grad_clip) for c in plan.configs] == [(10, 40, 1.0)] * 2
    assert notes == ["min_steps 40 raised the epochs from 6 to 10 (4 steps each); --epochs 6 trains exactly 6"] * 2


def test_reuse_compares_every_setting_that_changes_a_run_and_no_other(runner, sweep):
    out, cache = sweep
    run = ["sweep", *TINY, "--vary", "loss.beta=0.25", "--cache-dir", str(cache), "--out", str(out)]
    for given, held in ((["--grad-clip", "1"], "grad_clip=0.0, not the 1.0"), (["--min-steps", "2"], "min_steps=0, "
                        "not the 2"), (["--ema", "0.5"], "ema=0.0, not the 0.5"), (["--compile"], "compile=false, "
                        "not the true")):
        line = error_line(runner.invoke(build_app(), [*run, *given]))
        assert f"{out / 'beta-0.25'} holds a run with {held} asked for" in line, given
    result = runner.invoke(build_app(), [*run, "--log-every", "3", "--workers", "1", "--checkpoint-every", "7"])
    assert result.exit_code == 0, result.output
    assert "reusing the finished run" in result.stderr  # where and how a run ran does not change what it computed

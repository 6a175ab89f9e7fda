"""The conditional GAN of docs/hooks.md ("A model that owns its training step"), taken from the docs
alone, through everything a model gets: it trains with its own two optimizers, samples, evaluates,
resumes bit for bit, sweeps, runs under torchrun, and reports what it lacks (a posterior, an
inversion) as absent. The discriminator stays out of the run's weights and the weight average; the
checkpoints hold it and both optimizers. Steps that go wrong get the loop's one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genkit
from genkit.cli.runs_cmd import COLUMNS
from conftest import cli, error_line, invoke

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
TINY = ["--data", "shapes", "--data-opt", "count=160", "--data-opt", "seed=3", "--image-size", "8",
        "--batch-size", "16", "--device", "cpu", "--model-opt", "width=8", "--model-opt", "noise_dim=8"]


def gan_source() -> str:
    """The python block of the docs' GAN section, exactly as written."""
    text = HOOKS.read_text()
    section = text[text.index("### A model that owns its training step"):]
    return re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)


def load_gan() -> dict:
    namespace: dict = {"__name__": "cgan_from_docs"}
    exec(compile(gan_source(), "docs/hooks.md (the GAN)", "exec"), namespace)
    return namespace


GAN = load_gan()


@pytest.fixture(scope="module")
def plugin():
    genkit.register_plugin(GAN["ConditionalGANPlugin"](), name="cgan-docs")
    yield
    genkit.unregister_plugin("cgan-docs")


def train(out: Path, *extra: str) -> str:
    code, output = cli("train", "--model", "cgan", *TINY, "--epochs", "2", *extra, "--out", str(out))
    assert code == 0, output
    return output


@pytest.fixture(scope="module")
def gan_run(plugin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "run"
    train(out, "--ema", "0.9")
    return out


def epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def test_it_trains_with_its_own_two_optimizers_and_logs_what_its_step_returns(gan_run):
    config = json.loads((gan_run / "config.json").read_text())
    assert config["loss"]["name"] == "hinge" and config["train"]["lr"] == 2e-4  # its own loss and defaults
    last = epochs(gan_run)[-1]
    assert {"train_loss", "train_d_loss", "train_g_loss"} <= set(last)
    assert {"val_loss", "val_gap"} <= set(last) and last["headline"] == "gap"
    state = torch.load(checkpoint(gan_run) / "state.pt", weights_only=True)
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    # the discriminator's own rate: d_lr_scale times --lr, betas as the model chose them
    groups = state["optimizers"]["discriminator"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(4e-4) and tuple(groups[0]["betas"]) == (0.0, 0.99)


def test_the_discriminator_is_in_checkpoints_but_not_in_the_runs_weights(gan_run):
    sampling = load_file(str(gan_run / "model.safetensors"))
    assert sampling and not any(k.startswith("discriminator.") for k in sampling)
    kept = load_file(str(checkpoint(gan_run) / "model.safetensors"))
    assert any(k.startswith("discriminator.") for k in kept)
    averaged = load_file(str(checkpoint(gan_run) / "ema.safetensors"))
    trained = kept
    # --ema averages the generator; the discriminator is a copy of the trained one, not an average
    d_key = next(k for k in trained if k.startswith("discriminator.") and k.endswith("bias"))
    assert torch.equal(averaged[d_key], trained[d_key])
    g_key = next(k for k in trained if k.startswith("generator.") and k.endswith("weight"))
    assert not torch.equal(averaged[g_key], trained[g_key])
    assert torch.equal(sampling[g_key], averaged[g_key])  # what samples is the average


def test_it_samples_with_its_sampling_option_and_refuses_a_bad_one(gan_run, tmp_path):
    run = genkit.load_run(gan_run, device="cpu")
    images = run.sample("shape::circle,color::red", n=4, seed=1, truncation=0.5)
    assert images.shape == (4, 3, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, run.sample("shape::circle,color::red", n=4, seed=1, truncation=0.5))
    code, output = cli("sample", "--run", str(gan_run), "--attrs", "color::blue", "--n", "4", "--truncation", "0.7",
                       "--out", str(tmp_path / "gan.png"))
    assert code == 0 and (tmp_path / "gan.png").is_file(), output
    line = error_line(invoke(["sample", "--run", str(gan_run), "--attrs", "color::blue", "--truncation", "2",
                              "--out", str(tmp_path / "bad.png")]))
    assert "--truncation 2" in line and not (tmp_path / "bad.png").exists()


def test_evaluate_reports_what_it_lacks_as_null_and_edit_refuses_in_one_line(gan_run, tmp_path):
    assert genkit.load_run(gan_run, device="cpu").capabilities == {"posterior": False, "invert": False,
                                                                      "partial_invert": False,
                                                                      "log_likelihood": False,
                                                                      "partial_conditions": False}
    code, output = cli("evaluate", "--run", str(gan_run), "--json", "--samples", "2", "--limit", "8", "--train-classifier")
    assert code == 0, output
    report = json.loads((gan_run / "evaluation_test.json").read_text())
    assert report["elbo"] is None and report["log_likelihood"] is None
    line = error_line(invoke(["edit", "--run", str(gan_run), "--index", "0", "--set", "color::blue",
                              "--out", str(tmp_path / "edit.png")]))
    assert "cgan" in line and not (tmp_path / "edit.png").exists()


def test_genkit_runs_shows_the_declared_headline(gan_run):
    code, output = cli("runs", str(gan_run.parent), "--json")
    assert code == 0, output
    (row,) = json.loads(output)
    assert row["headline"] == "val_gap" and list(row["validation"])[0] == "val_gap"
    result = invoke(["runs", str(gan_run.parent)])
    cells = re.split(r"\s{2,}", result.output.splitlines()[1])
    assert cells[COLUMNS.index("val loss")].startswith("gap ")  # the headline, named, in the first figure's column
    assert "gap" not in cells[COLUMNS.index("val terms")]  # and not again among the other terms


def test_a_resumed_run_ends_with_the_weights_and_optimizers_of_one_that_never_stopped(plugin, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(straight, "--ema", "0.9")
    code, output = cli("train", "--model", "cgan", *TINY, "--epochs", "1", "--ema", "0.9", "--out", str(resumed))
    assert code == 0, output
    code, output = cli("train", "--resume", str(resumed), "--epochs", "2")
    assert code == 0, output
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(checkpoint(straight) / name)), load_file(str(checkpoint(resumed) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a = torch.load(checkpoint(straight) / "state.pt", weights_only=True)["optimizers"]
    b = torch.load(checkpoint(resumed) / "state.pt", weights_only=True)["optimizers"]
    for name in ("generator", "discriminator"):
        for index, moments in a[name]["state"].items():
            assert torch.equal(moments["exp_avg"], b[name]["state"][index]["exp_avg"])
    assert epochs(straight)[-1]["val_gap"] == epochs(resumed)[-1]["val_gap"]


def test_a_checkpoint_missing_an_optimizer_is_refused_on_resume_in_one_line(gan_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(gan_run, copy)
    state_file = checkpoint(copy) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["optimizers"]["discriminator"]
    torch.save(state, state_file)
    line = error_line(invoke(["train", "--resume", str(copy), "--epochs", "3"]))
    assert "generator" in line and "discriminator" in line and "start a new run" in line


def test_a_sweep_varies_a_model_option_and_a_sampling_option(plugin, gan_run, tmp_path):
    code, output = cli("sweep", "--run", str(gan_run), "--vary", "sample.truncation=0.5,1", "--samples", "2",
                       "--limit", "8", "--out", str(tmp_path / "sampling"))
    assert code == 0, output
    code, output = cli("sweep", "--model", "cgan", *TINY, "--epochs", "1", "--vary", "model.d_steps=1,2",
                       "--samples", "2", "--limit", "8", "--out", str(tmp_path / "trained"))
    assert code == 0, output
    runs = sorted(p.parent for p in (tmp_path / "trained").rglob("config.json"))
    assert [json.loads((r / "config.json").read_text())["model"]["options"]["d_steps"] for r in runs] == [1, 2]
    # two discriminator updates per batch are two updates of its optimizer per step
    steps = [torch.load(checkpoint(r) / "state.pt", weights_only=True)["optimizers"]["discriminator"]["state"][0]
             ["step"] for r in runs]
    assert float(steps[1]) == 2 * float(steps[0])


class Forgetful(GAN["ConditionalGAN"]):
    def optimizers(self, lr, model):
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr)}


class Diverging(GAN["ConditionalGAN"]):
    def training_step(self, images, condition, step):
        result = super().training_step(images, condition, step)
        if step.number == 2:  # the third step's discriminator loss, given to an update
            step.update("discriminator", torch.tensor(float("nan"), requires_grad=True))
        return result


class Refusing(GAN["ConditionalGAN"]):
    def training_step(self, images, condition, step):
        raise ValueError("d_steps must divide the batch")


class Broken:
    @genkit.hookimpl
    def register_models(self, register):
        def make(cls):
            def factory(image_shape, conditioner, width: int = 8, noise_dim: int = 8):
                """A broken GAN."""
                return cls(image_shape, conditioner, noise_dim, width, 1, 2.0)
            return factory

        register("forgetful-gan", make(Forgetful), default_loss="hinge")
        register("diverging-gan", make(Diverging), default_loss="hinge")
        register("refusing-gan", make(Refusing), default_loss="hinge")


@pytest.fixture(scope="module")
def broken(plugin):
    genkit.register_plugin(Broken(), name="broken-gans")
    yield
    genkit.unregister_plugin("broken-gans")


def test_optimizers_that_leave_parameters_out_are_refused_before_anything_is_written(broken, tmp_path):
    line = error_line(invoke(["train", "--model", "forgetful-gan", *TINY, "--epochs", "1",
                              "--out", str(tmp_path / "run")]))
    assert "no optimizer" in line and "discriminator." in line and not (tmp_path / "run").exists()


def test_a_components_value_error_in_the_trial_step_is_a_one_line_refusal(broken, tmp_path):
    line = error_line(invoke(["train", "--model", "refusing-gan", *TINY, "--epochs", "1",
                              "--out", str(tmp_path / "run")]))
    assert "d_steps must divide the batch" in line and not (tmp_path / "run").exists()


def test_a_non_finite_update_stops_the_run_with_the_loops_message(broken, tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", "--model", "diverging-gan", *TINY, "--epochs", "1", "--log-every", "1",
                     "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "the loss became non-finite at step 3" in result.stderr and f"genkit train --resume {out}" in result.stderr


def _installed_copy(site: Path) -> dict[str, str]:
    """The docs' plugin as an installed distribution with an entry point, on the returned environment's path."""
    (site / "cgan_docs-0.1.dist-info").mkdir(parents=True)
    (site / "cgan_docs.py").write_text(gan_source() + "\nplugin = ConditionalGANPlugin()\n")
    (site / "cgan_docs-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: cgan-docs\nVersion: 0.1\n")
    (site / "cgan_docs-0.1.dist-info" / "entry_points.txt").write_text("[genkit]\ncgan = cgan_docs:plugin\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    env.pop("GENKIT_DISABLE_PLUGINS", None)
    return env


@pytest.mark.slow
def test_under_torchrun_two_processes_train_one_gan(tmp_path):
    """An installed copy of the docs' plugin (an entry point), trained by two gloo processes."""
    env = _installed_copy(tmp_path / "site")
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genkit",
               "train", "--model", "cgan", *TINY, "--epochs", "1", "--out", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert epochs(run)[-1]["step"] == 8  # 128 images, global batch 16: 8 steps on each process
    assert (run / "samples" / "epoch_001.png").is_file()
    sampling = load_file(str(run / "model.safetensors"))
    assert not any(k.startswith("discriminator.") for k in sampling)
    code = textwrap.dedent("""
        import sys, genkit
        run = genkit.load_run(sys.argv[1], device="cpu")
        print(tuple(run.sample("color::red", n=2).shape))
    """)
    shown = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env)
    assert shown.stdout.strip() == "(2, 3, 8, 8)", shown.stderr[-2000:]


def test_compile_says_in_one_line_that_an_owned_step_runs_eagerly(plugin, tmp_path):
    code, output = cli("train", "--model", "cgan", *TINY, "--epochs", "1", "--compile", "--out", str(tmp_path / "run"))
    assert code == 0, output
    assert "model 'cgan' runs its own training step; training eagerly" in output


@pytest.mark.slow
def test_under_torchrun_a_resumed_gan_ends_as_one_that_never_stopped(tmp_path):
    """Each process's noise is its own and checkpointed: two epochs straight equal one, then a resume."""
    env = _installed_copy(tmp_path / "site")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genkit"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for command in (["train", "--model", "cgan", *TINY, "--epochs", "2", "--ema", "0.9", "--out", str(straight)],
                    ["train", "--model", "cgan", *TINY, "--epochs", "1", "--ema", "0.9", "--out", str(resumed)],
                    ["train", "--resume", str(resumed), "--epochs", "2"]):
        done = subprocess.run(torchrun + command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(checkpoint(straight) / name)), load_file(str(checkpoint(resumed) / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    noise = torch.load(checkpoint(straight) / "state.pt", weights_only=True)["rng_cpu_ranks"]
    assert len(noise) == 2 and not torch.equal(noise[0], noise[1])  # each process draws its own noise


def test_a_value_error_from_its_optimizers_is_a_one_line_refusal(plugin, tmp_path):
    line = error_line(invoke(["train", "--model", "cgan", *TINY, "--model-opt", "d_lr_scale=-1",
                              "--out", str(tmp_path / "run")]))
    assert line == "error: model 'cgan' refused this run: Invalid learning rate: -0.0002"
    assert not (tmp_path / "run").exists()

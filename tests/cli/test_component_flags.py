"""Components declare their own CLI flags: a third-party loss gets `--its-flag` like the bundled ones."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import genkit
from genkit.components import loading as plugins
from genkit.components.registry import Registry, option_docs

runner = CliRunner()
TINY = ["--data-opt", "count=160", "--image-size", "16", "--batch-size", "16", "--epochs", "1", "--limit", "32",
        "--latent-dim", "4", "--device", "cpu"]


class ScaledMSE:
    def __init__(self, scale: float, exact: bool):
        self.scale, self.exact = scale, exact

    def __call__(self, output: genkit.ModelOutput, images: torch.Tensor) -> genkit.LossResult:
        mse = (output.reconstruction.float() - images.float()).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + output.logvar - output.mu.pow(2) - output.logvar.exp()).sum(1)).mean()
        return genkit.LossResult(total=self.scale * mse + kl, terms={"scaled": self.scale * mse, "kl": kl})


def build_scaled(scale: float = 1.0, exact: bool = False, tag: str = "x") -> ScaledMSE:
    """MSE times a scale, plus KL.

    :param scale: multiplies the squared error,
        a positive number.
    :param exact: a switch, for the test.
    """
    if scale <= 0:
        raise genkit.UsageError(f"scale {scale} must be positive")
    return ScaledMSE(scale, exact)


class ScaledPlugin:
    @genkit.hookimpl
    def register_losses(self, register):
        register("scaled-mse", build_scaled, flags=("scale", "exact"))


@pytest.fixture
def scaled():
    plugins.load_plugins()
    genkit.register_plugin(ScaledPlugin(), name="scaled-plugin")
    yield
    genkit.unregister_plugin("scaled-plugin")


def _app():
    from genkit.cli.app import build_app

    return build_app()


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return " ".join(lines[0].split())


def test_help_lists_the_chosen_components_flags_with_their_docstring_help(scaled):
    default = runner.invoke(_app(), ["train", "--help"])
    assert default.exit_code == 0
    assert "--decoder-sigma" in default.output and "--scale" not in default.output
    mine = runner.invoke(_app(), ["train", "--loss", "scaled-mse", "--help"])
    text = " ".join(mine.output.split())
    assert "Options of loss scaled-mse" in text and "--scale FLOAT multiplies the squared error, a positive number." \
        in text and "(default 1.0)" in text
    assert "--beta FLOAT" not in text  # beta-elbo is not chosen


def test_a_plugin_flag_sets_its_option_and_its_terms_are_logged(scaled, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(_app(), ["train", *TINY, "--loss", "scaled-mse", "--scale", "0.5", "--exact",
                                    "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["loss"] == {"name": "scaled-mse", "options": {"scale": 0.5, "exact": True, "tag": "x"}}
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_scaled", "val_scaled", "train_kl"} <= set(record)
    assert "val_scaled" in result.stderr  # the epoch line prints every term


def test_an_option_given_as_its_flag_and_as_an_option_pair_is_refused(scaled, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(_app(), ["train", *TINY, "--loss", "scaled-mse", "--loss-opt", "scale=3",
                                    "--scale=2", "--no-exact", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "loss option scale is given twice, by its own flag and by --loss-opt scale=3; give it once" \
        in " ".join(result.output.split())
    result = runner.invoke(_app(), ["train", *TINY, "--loss", "scaled-mse", "--loss-opt", "exact=true",
                                    "--scale=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["loss"]["options"]["scale"] == 2.0


@pytest.mark.parametrize("args, message", [
    (["--loss", "scaled-mse", "--beta", "0.5"],
     "--beta is an option of loss 'beta-elbo', not of the chosen loss 'scaled-mse' (its flags: --scale, --exact); "
     "choose --loss beta-elbo, or set 'scaled-mse''s options with --loss-opt KEY=VALUE"),
    (["--scale", "2"], "--scale is an option of loss 'scaled-mse', not of the chosen loss 'gaussian-elbo'"),
    (["--loss", "scaled-mse", "--scale", "big"], "--scale 'big' is not a number; multiplies the squared error"),
    (["--loss", "scaled-mse", "--scale", "-1"], "scale -1.0 must be positive"),
    (["--loss", "scaled-mse", "--scale"], "--scale needs a value"),
    (["--latent-dimension", "4"], "no such option --latent-dimension (did you mean --latent-dim?)"),
    (["--loss", "nope", "--scale", "2"], "unknown loss 'nope'; available:"),
])
def test_misplaced_or_bad_flags_are_one_line_and_write_nothing(scaled, tmp_path, args, message):
    line = _one_line_error(runner.invoke(_app(), ["train", *args, "--out", str(tmp_path / "run")]))
    assert message in line
    assert not (tmp_path / "run").exists()


def test_resume_refuses_component_flags(tmp_path):
    line = _one_line_error(runner.invoke(_app(), ["train", "--resume", str(tmp_path), "--kl-weight", "0.5"]))
    assert "cannot change" in line


def test_a_flag_for_an_option_the_factory_lacks_is_refused_when_registering():
    registry = Registry("losses")
    with pytest.raises(genkit.PluginError, match="flag '--gamma' for 'gamma', which is not an option"):
        registry.add("x", build_scaled, plugin="p", flags=("gamma",))
    with pytest.raises(genkit.PluginError, match="flags look like --name"):
        registry.add("x", build_scaled, plugin="p", flags={"scale": "-s"})
    registry.add("x", build_scaled, plugin="p", flags={"scale": "--factor"})
    assert [f.flag for f in registry.get("x").cli_flags()] == ["--factor"]


def test_option_help_comes_from_sphinx_or_google_docstrings():
    def google(beta: float = 1.0, width: int = 2):
        """Summary.

        Args:
            beta (float): the weight of
                the KL term.
            width: how wide.

        Returns:
            nothing.
        """

    assert option_docs(google) == {"beta": "the weight of the KL term.", "width": "how wide."}
    assert option_docs(build_scaled)["scale"] == "multiplies the squared error, a positive number."


class ClashingPlugin:
    """A loss declaring a core option's flag (--seed) and a flag the cvae has too (--prior)."""

    @genkit.hookimpl
    def register_losses(self, register):
        def build_clash(seed: int = 0, prior: str = "x") -> ScaledMSE:
            """A loss whose flags clash.

            :param seed: clashes with the core --seed.
            :param prior: clashes with the cvae's --prior.
            """
            return ScaledMSE(1.0, False)

        register("clash-loss", build_clash, flags=("seed", "prior"))


def test_clashing_flags_leave_the_core_option_alone_and_an_ambiguous_flag_is_refused(tmp_path):
    plugins.load_plugins()
    genkit.register_plugin(ClashingPlugin(), name="clash-plugin")
    try:
        help_text = " ".join(runner.invoke(_app(), ["train", "--loss", "clash-loss", "--help"]).output.split())
        assert "clashes with the core --seed" not in help_text  # the core's --seed wins
        out = tmp_path / "run"
        result = runner.invoke(_app(), ["train", *TINY, "--loss", "clash-loss", "--seed", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        config = json.loads((out / "config.json").read_text())
        assert config["train"]["seed"] == 3 and config["loss"]["options"]["seed"] == 0
        line = _one_line_error(runner.invoke(_app(), ["train", *TINY, "--loss", "clash-loss", "--prior", "learned",
                                                      "--out", str(tmp_path / "r2")]))
        assert "--prior is declared by both model 'cvae' and loss 'clash-loss'" in line
        assert not (tmp_path / "r2").exists()
    finally:
        genkit.unregister_plugin("clash-plugin")

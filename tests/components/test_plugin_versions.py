"""Plugins that change over time: config.json names the plugin and version of each component; an option
added later with a default reads older runs with that default, or with the value ``older_runs`` declares
for them while new runs get the default; weights that no longer fit are one short line naming the first
tensors, how many more, and what to do."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import genkit
from conftest import cli, error_line, invoke

TINY = ["--data", "shapes", "--data-opt", "count=120", "--image-size", "8", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--no-tensorboard"]


class Blocks(nn.Module):
    """A toy model of ``depth`` linear layers (many tensors, so a changed default changes many keys)."""

    def __init__(self, image_shape, conditioner, depth: int = 12, gain: float = 1.0):
        super().__init__()
        self.noise_shape = (4,)
        self.gain = gain
        self.shape = tuple(image_shape)
        self.inp = nn.Linear(4 + conditioner.dim, 16)
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(depth))
        self.out = nn.Linear(16, int(torch.tensor(image_shape).prod()))

    def decode(self, z, condition):
        h = self.inp(torch.cat([z, condition], 1))
        for layer in self.layers:
            h = torch.relu(layer(h))
        return torch.sigmoid(self.gain * self.out(h)).view(-1, *self.shape)

    def forward(self, images, condition):
        return self.decode(torch.randn(len(images), 4, device=images.device), condition)

    @torch.no_grad()
    def sample(self, condition, noise=None, generator=None):
        return self.decode(noise, condition)


class SquaredError:
    def __call__(self, output, images):
        mse = (output - images).pow(2).flatten(1).sum(1).mean()
        return genkit.LossResult(total=mse, terms={"mse": mse})


def plugin(version: str, factory, older_runs=None):
    """A plugin module-like object at ``version`` whose model ``blocks`` is built by ``factory``."""
    class Versioned:
        __version__ = version

        @genkit.hookimpl
        def register_models(self, register):
            register("blocks", factory, default_loss="squared", older_runs=older_runs)

        @genkit.hookimpl
        def register_losses(self, register):
            register("squared", SquaredError)

    return Versioned()


def first_release(image_shape, conditioner, depth: int = 12):
    """Version 1: no ``gain`` option yet."""
    return Blocks(image_shape, conditioner, depth)


@pytest.fixture
def registered():
    names = []

    def register(version, factory, older_runs=None):
        for name in names:
            genkit.unregister_plugin(name)
        names[:] = ["versioned"]
        genkit.register_plugin(plugin(version, factory, older_runs), name="versioned")

    yield register
    for name in names:
        genkit.unregister_plugin(name)


@pytest.fixture
def old_run(registered, tmp_path):
    registered("1.0", first_release)
    out = tmp_path / "run"
    code, output = cli("train", "--model", "blocks", *TINY, "--out", str(out))
    assert code == 0, output
    return out


def test_config_json_names_the_plugin_and_version_of_every_component(tmp_path):
    out = tmp_path / "run"
    code, output = cli("train", "--model", "cvae", *TINY, "--out", str(out))
    assert code == 0, output
    recorded = json.loads((out / "config.json").read_text())["plugins"]
    assert set(recorded) == {"data", "conditioner", "model", "loss"}
    assert recorded["model"] == {"plugin": "cvae", "distribution": "genkit-cvae", "version": genkit.__version__}
    assert recorded["data"]["plugin"] == "shapes" and recorded["loss"]["plugin"] == "gaussian-elbo"
    config = genkit.load_run(out).config
    assert genkit.RunConfig.from_json(config.to_json()) == config


def test_a_runtime_plugin_is_recorded_with_its_own_version(old_run):
    recorded = json.loads((old_run / "config.json").read_text())["plugins"]["model"]
    assert recorded == {"plugin": "versioned", "distribution": None, "version": "1.0"}


def test_an_option_added_with_a_default_reads_older_runs_with_that_default(old_run, registered):
    seen = {}

    def second_release(image_shape, conditioner, depth: int = 12, gain: float = 1.0):
        """Version 2: a new option, whose default keeps version 1's behaviour."""
        seen["gain"] = gain
        return Blocks(image_shape, conditioner, depth, gain)

    before = genkit.load_run(old_run).sample("shape::circle", n=2, seed=0)
    registered("2.0", second_release)
    run = genkit.load_run(old_run)
    assert seen["gain"] == 1.0 and "gain" not in run.config.model.options
    assert torch.equal(run.sample("shape::circle", n=2, seed=0), before)
    code, output = cli("sample", "--run", str(old_run), "--attrs", "shape::circle", "--n", "2",
                       "--out", str(old_run / "again.png"))
    assert code == 0, output


def test_an_option_whose_default_changes_what_a_run_is_reads_older_runs_with_their_value(old_run, registered):
    seen = []

    def second_release(image_shape, conditioner, depth: int = 12, gain: float = 2.0):
        """Version 2: a new option whose default for new runs is new behaviour; older runs had gain 1."""
        seen.append(gain)
        return Blocks(image_shape, conditioner, depth, gain)

    before = genkit.load_run(old_run).sample("shape::circle", n=2, seed=0)
    registered("2.0", second_release, older_runs={"gain": 1.0})
    run = genkit.load_run(old_run)
    assert seen and set(seen) == {1.0} and "gain" not in run.config.model.options
    assert torch.equal(run.sample("shape::circle", n=2, seed=0), before)
    seen.clear()
    config = genkit.plan_run("blocks", "shapes", data_options={"count": 120}, image_size=8, device="cpu")
    assert config.model.options["gain"] == 2.0 and set(seen) == {2.0}  # a new plan: the factory's default
    assert genkit.load_run(old_run).model.gain == 1.0
    stated = json.loads((old_run / "config.json").read_text())
    stated["model"]["options"]["gain"] = 3.0  # a saved value is never replaced
    (old_run / "config.json").write_text(json.dumps(stated))
    assert genkit.load_run(old_run).model.gain == 3.0


def test_older_runs_is_available_to_every_kind_and_applied_only_to_saved_options():
    from genkit.components.registry import KINDS, Registry
    from genkit.data.prepare import open_source

    def factory(*positional, size: int = 4, fresh: bool = True):
        return {"size": size, "fresh": fresh}

    for kind in KINDS:
        registry = Registry(kind)
        registry.add("thing", factory, plugin="p", older_runs={"fresh": False})
        component = registry.get("thing")
        assert component.create(size=2) == {"size": 2, "fresh": False}  # saved options without the new one
        assert component.create(**component.resolve_options({"size": 2})) == {"size": 2, "fresh": True}  # planned

    class Data:
        @genkit.hookimpl
        def register_datasets(self, register):
            register("versioned-data", factory, older_runs={"fresh": False})

    genkit.register_plugin(Data(), name="versioned-data")
    try:
        assert open_source("versioned-data", {"size": 2}) == ({"size": 2, "fresh": True}, {"size": 2, "fresh": True})
        assert open_source("versioned-data", {"size": 2}, saved=True)[1] == {"size": 2, "fresh": False}
        assert open_source("versioned-data", {"fresh": True}, saved=True)[1] == {"size": 4, "fresh": True}
    finally:
        genkit.unregister_plugin("versioned-data")


@pytest.mark.parametrize("older_runs, message", [
    ({"colour": 1}, "registered model 'blocks' with older_runs 'colour', which is not an option of its factory"),
    ({"depth": float("nan")}, "registered model 'blocks' with older_runs depth=nan, which config.json cannot hold"),
    (["depth"], "registered model 'blocks' with older_runs ['depth']; give a mapping of option to value"),
])
def test_a_bad_older_runs_is_refused_when_registering(registered, older_runs, message):
    registered("1.0", first_release, older_runs=older_runs)
    problems = [str(e) for e in genkit.plugin_errors() if e.plugin == "versioned"]
    assert any(message in p for p in problems), problems
    assert "blocks" not in genkit.registry("models")


def test_weights_that_no_longer_fit_name_the_first_tensors_and_how_many_more(old_run, registered):
    def third_release(image_shape, conditioner, depth: int = 12):
        """Version 3: the code now builds 18 more layers for the same options (a stored option cannot catch it)."""
        return Blocks(image_shape, conditioner, depth + 18)

    registered("3.0", third_release)
    with pytest.raises(genkit.UsageError) as caught:
        genkit.load_run(old_run)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert "36 tensors missing (layers.12.weight, layers.12.bias, layers.13.weight and 33 more)" in message
    assert message.endswith("; it was trained with versioned 1.0 and versioned 3.0 is installed: load it with that "
                            "version"), message
    line = error_line(invoke(["sample", "--run", str(old_run), "--attrs", "shape::circle"]))
    assert "36 tensors missing" in line and len(line) < 400


def test_a_reshaped_tensor_is_named_with_both_shapes():
    from genkit.store.weights import state_dict_mismatch

    expected = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    found = {"a": torch.zeros(3, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    assert state_dict_mismatch(expected, found) == "1 tensor not expected (c); 1 tensor of another shape (a [3, 3] for [2, 3])"
    assert state_dict_mismatch(expected, dict(expected)) == ""


def test_an_upgraded_distribution_is_named_with_the_version_to_install():
    from genkit.components.loading import changed_plugin_advice

    advice = changed_plugin_advice({"plugin": "cvae", "distribution": "genkit-cvae", "version": "0.0.9"}, "models", "cvae")
    assert advice == (f"it was trained with genkit-cvae 0.0.9 and genkit-cvae {genkit.__version__} is installed: load "
                      'it with that version (pip install "genkit-cvae==0.0.9")')
    same = changed_plugin_advice({"plugin": "cvae", "distribution": "genkit-cvae", "version": genkit.__version__},
                                 "models", "cvae")
    assert same == f"genkit-cvae {genkit.__version__} builds 'cvae' differently from the code that trained it"
    assert "records no plugin version" in changed_plugin_advice({}, "models", "cvae")


def test_a_hand_edited_plugins_section_is_one_line(old_run):
    config = json.loads((old_run / "config.json").read_text())
    config["plugins"] = {"model": {"version": 3}}
    (old_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(genkit.UsageError, match=r"plugins.model.version is 3; it must be text or null"):
        genkit.load_run(old_run)

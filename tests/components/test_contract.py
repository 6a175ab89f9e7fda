"""The plugin contract: every hook works, and a broken plugin never breaks the others.

In-process tests register plugins at run time with ``genkit.register_plugin``; the tests of
entry-point discovery install a fake third-party distribution (a ``.dist-info`` folder on
``PYTHONPATH``) and run ``genkit plugins`` in a subprocess, as a user would.
"""

from __future__ import annotations

import inspect
import json
import math
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import genkit
from conftest import env_with_path, run_genkit
from genkit import hookspecs
from genkit.components import loading as plugins
from genkit.cli.app import build_app
from genkit_plugins import beta_elbo, cvae, shapes, tiled_onehot

runner = CliRunner()
#: genkit's own plugins: the entry points of its distribution.
BUNDLED = {ep.name for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)
           if ep.dist is not None and ep.dist.name == plugins.DISTRIBUTION}


@pytest.fixture
def plugin_state(monkeypatch):
    """Registers plugins for one test; unregisters them and forgets their errors afterwards."""
    plugins.load_plugins()  # installed plugins' errors stay on record
    monkeypatch.setattr(plugins, "_load_errors", [])
    names: list[str] = []

    def register(plugin, name):
        registered = genkit.register_plugin(plugin, name=name)
        if registered is not None:
            names.append(registered)
        return registered

    yield register
    for name in names:
        genkit.unregister_plugin(name)


def errors_of(name: str) -> list[str]:
    return [e.message for e in genkit.plugin_errors() if e.plugin == name]


# --- one test per hook (test_every_hook_has_a_test keeps this complete) ---------------------

def test_hook_register_datasets(plugin_state, tmp_path):
    class Plugin:
        @genkit.hookimpl
        def register_datasets(register):
            register("tiny-shapes", lambda count=40, seed=1: shapes.build(count=count, seed=seed),
                     description="shapes, 40 of them")

    plugin_state(Plugin, "contract-datasets")
    component = genkit.registry("datasets").get("tiny-shapes")
    assert (component.plugin, component.description) == ("contract-datasets", "shapes, 40 of them")
    data = genkit.load_dataset("tiny-shapes", image_size=8, cache_dir=tmp_path, workers=1)
    assert len(data) == 32 and data[0][0].shape == (3, 8, 8)


def test_hook_register_conditioners(plugin_state):
    class Plugin:
        @genkit.hookimpl
        def register_conditioners(register):
            register("naive-tiling", lambda attribute_names, mode="naive": tiled_onehot.build(attribute_names, mode))

    plugin_state(Plugin, "contract-conditioners")
    component = genkit.registry("conditioners").get("naive-tiling")
    conditioner = component.create(["a", "b"], **component.resolve_options({}, skip=("attribute_names",)))
    assert conditioner.mode == "naive" and conditioner.encode("b").tolist() == [0.0, 1.0]


def test_hook_register_models(plugin_state):
    class Plugin:
        @genkit.hookimpl
        def register_models(register):
            register("small-cvae", lambda image_shape, conditioner, latent_dim=3: cvae.build(
                image_shape, conditioner, latent_dim=latent_dim, channels=[4, 8]))

    plugin_state(Plugin, "contract-models")
    component = genkit.registry("models").get("small-cvae")
    assert component.option_defaults(skip=("image_shape", "conditioner")) == {"latent_dim": 3}
    model = component.create((3, 8, 8), tiled_onehot.build(["a"]), latent_dim=2)
    assert model.latent_dim == 2


def test_hook_register_losses(plugin_state):
    def build(weight: float = 2.0):
        """Twice the β-ELBO."""
        inner = beta_elbo.build(0.5)

        def loss(output, images):
            result = inner(output, images)
            return genkit.LossResult(total=weight * result.total, terms=result.terms)

        return loss

    class Plugin:
        @genkit.hookimpl
        def register_losses(register):
            register("double-elbo", build)

    plugin_state(Plugin, "contract-losses")
    component = genkit.registry("losses").get("double-elbo")
    assert component.description == "Twice the β-ELBO."  # taken from the factory's docstring
    with pytest.raises(genkit.UsageError, match="has no option 'beta'; its options are: weight"):
        component.resolve_options({"beta": 0.1})


def test_hook_register_classifiers(plugin_state):
    class Judge(torch.nn.Module):
        def __init__(self, image_shape, attribute_names, hidden=4):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(image_shape), hidden),
                                           torch.nn.Linear(hidden, len(attribute_names)))

        def forward(self, images):
            return self.net(images)

    class Plugin:
        @genkit.hookimpl
        def register_classifiers(register):
            register("tiny-judge", Judge, description="two linear layers")

    plugin_state(Plugin, "contract-classifiers")
    component = genkit.registry("classifiers").get("tiny-judge")
    assert component.resolve_options({}, skip=("image_shape", "attribute_names")) == {"hidden": 4}
    judge = component.create((3, 8, 8), ["a", "b", "c"])
    assert judge(torch.rand(2, 3, 8, 8)).shape == (2, 3)


def test_hook_register_commands(plugin_state):
    class Plugin:
        @genkit.hookimpl
        def register_commands(cli):
            @cli.command("hello")
            def hello(name: str = typer.Option("world", "--name")) -> None:
                """Say hello."""
                typer.echo(f"hello {name}")

    plugin_state(Plugin, "contract-commands")
    result = runner.invoke(build_app(), ["hello", "--name", "genkit"])
    assert result.exit_code == 0 and result.output == "hello genkit\n"


def test_every_hook_has_a_test():
    hooks = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")}
    assert {"register_datasets", "register_models", "register_commands"} <= hooks
    tests = {name for name in globals() if name.startswith("test_hook_")}
    assert {f"test_hook_{h}" for h in hooks} <= tests


# --- broken plugins are reported by name and stop nothing else -----------------------------

def test_plugin_raising_while_registering_is_reported_and_others_still_work(plugin_state):
    class Boom:
        @genkit.hookimpl
        def register_models(register):
            register("boom-model", cvae.build)
            raise RuntimeError("no GPU found")

    plugin_state(Boom, "boom")
    assert errors_of("boom") == ["raised while registering models (RuntimeError: no GPU found)"]
    assert "cvae" in genkit.registry("models")
    result = runner.invoke(build_app(), ["plugins", "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert {"plugin": "boom", "message": "raised while registering models (RuntimeError: no GPU found)"} \
        in payload["errors"]
    assert BUNDLED <= {p["name"] for p in payload["plugins"]}
    result = runner.invoke(build_app(), ["plugins"])
    assert result.exit_code == 0 and "cvae" in result.stdout
    assert "plugin problem: plugin 'boom': raised while registering models" in " ".join(result.stderr.split())


def test_plugin_raising_while_adding_commands_leaves_the_cli_working(plugin_state, capsys):
    class Boom:
        @genkit.hookimpl
        def register_commands(cli):
            raise RuntimeError("oops")

    plugin_state(Boom, "boom-commands")
    app = build_app()
    assert "plugin 'boom-commands': raised while adding commands (RuntimeError: oops)" in capsys.readouterr().err
    assert runner.invoke(app, ["plugins", "--json"]).exit_code == 0


def test_taken_name_is_refused_naming_both_plugins(plugin_state):
    class Thief:
        @genkit.hookimpl
        def register_models(register):
            register("cvae", cvae.build)
            register("thief-model", cvae.build)

    plugin_state(Thief, "thief")
    assert errors_of("thief") == ["cannot register model 'cvae': plugin 'cvae' already registered it"]
    models = genkit.registry("models")
    assert models.get("cvae").plugin == "cvae"
    assert models.get("thief-model").plugin == "thief"  # the refused name does not cost the others


@pytest.mark.parametrize("plugin, message", [
    ("wrong-argument", "invalid hook implementation"),
    ("unknown-hook", "implements unknown hook 'register_widgets'; genkit's hooks are: "),
    ("no-hooks", "implements no genkit hook; mark its hook functions with @genkit.hookimpl"),
])
def test_bad_hook_implementation_is_reported_by_name(plugin_state, plugin, message):
    class WrongArgument:
        @genkit.hookimpl
        def register_models(registrar):
            pass

    class UnknownHook:
        @genkit.hookimpl
        def register_widgets(register):
            pass

    class NoHooks:
        def register_models(register):  # the @genkit.hookimpl marker is missing
            register("never", cvae.build)

    obj = {"wrong-argument": WrongArgument, "unknown-hook": UnknownHook, "no-hooks": NoHooks}[plugin]
    assert plugin_state(obj, plugin) is None
    assert plugin not in {p.name for p in genkit.list_plugins()}
    [error] = errors_of(plugin)
    assert message in error
    assert "\n" not in error  # one line in `genkit plugins`
    if plugin == "wrong-argument":
        assert "register_models(registrar)" in error
    else:
        assert "register_models" in error  # the valid hooks are listed


def test_runtime_plugin_shows_in_registries_and_trains(plugin_state, tmp_path):
    class Plugin:
        @genkit.hookimpl
        def register_datasets(register):
            register("contract-data", lambda count=40: shapes.build(count=count, seed=2))

        @genkit.hookimpl
        def register_models(register):
            register("contract-model", lambda image_shape, conditioner, latent_dim=4: cvae.build(
                image_shape, conditioner, latent_dim=latent_dim, channels=[4, 8]))

    plugin_state(Plugin, "contract-train")
    [info] = [p for p in genkit.list_plugins() if p.name == "contract-train"]
    assert info.components == {"datasets": ["contract-data"], "models": ["contract-model"]}
    assert info.hooks == ["register_datasets", "register_models"]
    config = genkit.plan_run("contract-model", "contract-data", image_size=8, epochs=1, batch_size=16,
                             device="cpu")
    run = genkit.train(config, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert run.config.model.options == {"latent_dim": 4}
    reloaded = genkit.load_run(tmp_path / "run", device="cpu")
    assert reloaded.sample("shape::circle", n=2).shape == (2, 3, 8, 8)


# --- entry-point discovery, as an installed third-party distribution ------------------------

FAKE_PLUGINS = '''
import genkit
from genkit_plugins import cvae


class thief:  # loads before the bundled `cvae` by name, yet must not take its model name
    @genkit.hookimpl
    def register_models(register):
        register("cvae", cvae.build)
        register("thief-model", cvae.build)


class boom:
    @genkit.hookimpl
    def register_losses(register):
        raise RuntimeError("no GPU found")


class bad_arg:
    @genkit.hookimpl
    def register_models(registrar):
        pass


class good:
    @genkit.hookimpl
    def register_models(register):
        register("good-model", cvae.build)
'''

ENTRY_POINTS = {
    "aaa-thief": "contract_fake_plugins:thief",
    "boom": "contract_fake_plugins:boom",
    "bad-arg": "contract_fake_plugins:bad_arg",
    "broken-import": "contract_fake_missing_module",
    "good": "contract_fake_plugins:good",
}


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory) -> Path:
    """A folder that, on PYTHONPATH, is an installed distribution with five genkit plugins."""
    site = tmp_path_factory.mktemp("site")
    (site / "contract_fake_plugins.py").write_text(textwrap.dedent(FAKE_PLUGINS))
    info = site / "genkit_contract_fake-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genkit-contract-fake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[genkit]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items()))
    return site


@pytest.mark.slow
def test_installed_plugins_broken_ones_reported_by_name(fake_site):
    result = run_genkit("plugins", "--json", env=env_with_path(fake_site))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    plugins_by_name = {p["name"]: p for p in payload["plugins"]}
    assert plugins_by_name["good"]["components"] == {"models": ["good-model"]}
    assert plugins_by_name["good"]["distribution"] == "genkit-contract-fake"
    assert plugins_by_name["aaa-thief"]["components"] == {"models": ["thief-model"]}
    assert plugins_by_name["cvae"]["components"] == {"models": ["cvae"]}  # bundled plugins load first
    assert BUNDLED <= set(plugins_by_name)
    errors = {e["plugin"]: e["message"] for e in payload["errors"]}
    assert set(errors) == {"aaa-thief", "boom", "bad-arg", "broken-import"}
    assert errors["aaa-thief"] == "cannot register model 'cvae': plugin 'cvae' already registered it"
    assert errors["boom"] == "raised while registering losses (RuntimeError: no GPU found)"
    assert "registrar" in errors["bad-arg"]
    assert "ModuleNotFoundError" in errors["broken-import"]


@pytest.mark.slow
def test_disable_plugins_loads_only_bundled_ones(fake_site):
    payload = json.loads(run_genkit("plugins", "--json", env=env_with_path(fake_site, disable="1")).stdout)
    assert {p["name"] for p in payload["plugins"]} == BUNDLED
    assert {p["distribution"] for p in payload["plugins"]} == {"genkit-cvae"}
    assert payload["errors"] == []

    disabled = env_with_path(fake_site, disable="broken-import,boom")
    payload = json.loads(run_genkit("plugins", "--json", env=disabled).stdout)
    assert {"good", "aaa-thief"} <= {p["name"] for p in payload["plugins"]}
    assert {e["plugin"] for e in payload["errors"]} == {"aaa-thief", "bad-arg"}

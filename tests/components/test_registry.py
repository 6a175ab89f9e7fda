"""Registries: names, duplicates, unknown names, options, plugins registered at run time."""

from __future__ import annotations

import pytest

import genkit
from genkit.errors import PluginError, UsageError
from genkit.components.registry import Registry


def _factory(size: int = 3, *, flavour: str = "plain"):
    """A test factory."""
    return (size, flavour)


def test_unknown_name_lists_valid_names_and_closest_match():
    reg = Registry("models")
    reg.add("cvae", _factory, plugin="a")
    reg.add("deep-cvae", _factory, plugin="b")
    with pytest.raises(UsageError) as info:
        reg.get("cvea")
    message = str(info.value)
    assert "unknown model 'cvea'" in message
    assert "available: cvae, deep-cvae" in message
    assert "did you mean 'cvae'?" in message


def test_duplicate_name_names_both_plugins():
    reg = Registry("losses")
    reg.add("beta-elbo", _factory, plugin="first-plugin")
    with pytest.raises(PluginError) as info:
        reg.add("beta-elbo", _factory, plugin="second-plugin")
    assert info.value.plugin == "second-plugin"
    assert "first-plugin" in str(info.value) and "second-plugin" in str(info.value)


def test_options_resolve_over_defaults_and_reject_unknown_ones():
    reg = Registry("models")
    reg.add("m", _factory, plugin="p")
    component = reg.get("m")
    assert component.resolve_options({"size": 5, "flavour": None}) == {"size": 5, "flavour": "plain"}
    with pytest.raises(UsageError, match="model 'm' has no option 'colour'; its options are: flavour, size"):
        component.resolve_options({"colour": "red"})


def test_bundled_components_are_registered_through_entry_points():
    assert "cvae" in genkit.registry("models")
    assert "tiled-onehot" in genkit.registry("conditioners")
    assert "beta-elbo" in genkit.registry("losses")
    assert "shapes" in genkit.registry("datasets")
    owners = {c.name: c.plugin for kind in ("models", "losses") for c in genkit.registry(kind)}
    assert owners["cvae"] == "cvae" and owners["beta-elbo"] == "beta-elbo"


class _RuntimeLoss:
    @genkit.hookimpl
    def register_losses(self, register):
        register("runtime-loss", _factory, description="registered by a test")


def test_plugin_registered_at_run_time_appears_and_disappears():
    name = genkit.register_plugin(_RuntimeLoss(), name="runtime-test-plugin")
    try:
        assert name == "runtime-test-plugin"
        component = genkit.registry("losses").get("runtime-loss")
        assert component.plugin == "runtime-test-plugin"
        assert component.create(size=1) == (1, "plain")
    finally:
        genkit.unregister_plugin("runtime-test-plugin")
    assert "runtime-loss" not in genkit.registry("losses")


class _TakesBundledName:
    @genkit.hookimpl
    def register_models(self, register):
        register("cvae", _factory)


def test_a_plugin_registered_again_under_its_name_is_seen_even_at_the_same_address():
    """The registries were cached by the plugins' names and ids: a plugin unregistered and freed, the next one
    under its name could get the same id and find the old registry (an order-dependent failure of
    tests/components/test_plugin_versions.py). The same object registered again is that case, every time."""

    class Releases:
        factory = staticmethod(lambda: "first")

        @genkit.hookimpl
        def register_losses(self, register):
            register("release-probe", self.factory)

    plugin = Releases()
    try:
        genkit.register_plugin(plugin, name="releases")
        assert genkit.registry("losses").get("release-probe").factory() == "first"
        genkit.unregister_plugin("releases")
        plugin.factory = lambda: "second"
        genkit.register_plugin(plugin, name="releases")
        assert genkit.registry("losses").get("release-probe").factory() == "second"
    finally:
        genkit.unregister_plugin("releases")
    assert "release-probe" not in genkit.registry("losses")


def test_plugin_taking_a_bundled_name_is_refused_and_reported():
    genkit.register_plugin(_TakesBundledName(), name="squatter")
    try:
        assert genkit.registry("models").get("cvae").plugin == "cvae"
        messages = [str(e) for e in genkit.plugin_errors() if e.plugin == "squatter"]
        assert messages and "'cvae'" in messages[0] and "already registered" in messages[0]
    finally:
        genkit.unregister_plugin("squatter")


class _WrongArgument:
    @genkit.hookimpl
    def register_models(self, regster):  # misspelt argument
        regster("x", _factory)


class _UnknownHook:
    @genkit.hookimpl
    def register_modles(self, register):  # misspelt hook
        register("x", _factory)


@pytest.mark.parametrize("plugin, expected", [
    (_WrongArgument(), "regster"),
    (_UnknownHook(), "register_modles"),
])
def test_bad_hook_implementations_are_refused_by_name(plugin, expected):
    name = f"bad-{type(plugin).__name__}"
    assert genkit.register_plugin(plugin, name=name) is None
    errors = [e for e in genkit.plugin_errors() if e.plugin == name]
    assert errors and expected in str(errors[-1])
    assert name not in {p.name for p in genkit.list_plugins()}

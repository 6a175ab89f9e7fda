"""Finding, validating and loading plugins; building the registries from their hooks.

Plugins are modules (or objects) implementing the hooks in :mod:`genkit.hookspecs`, announced
through the entry-point group ``genkit``. genkit's own components are registered through that
same group by its own distribution, exactly like a third-party plugin.

A plugin that fails to import, implements a hook that does not exist (or none at all), uses wrong
hook arguments, raises while registering, or registers a name another plugin holds, is reported
by name in :func:`plugin_errors` and ``genkit plugins``; it never stops the other plugins. A
refused name costs only that component. genkit's own plugins load first, so their names are
never taken by a third-party plugin.

Set ``GENKIT_DISABLE_PLUGINS=1`` to load only genkit's bundled plugins, or to a comma-separated
list of plugin names to skip just those.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from genkit import hookspecs
from genkit.components.registry import KINDS, Registry
from genkit.errors import GenkitError, PluginError

ENTRY_POINT_GROUP = "genkit"
DISTRIBUTION = "genkit-cvae"

pm = pluggy.PluginManager("genkit")
pm.add_hookspecs(hookspecs)

_entry_points_loaded = False
_load_errors: list[PluginError] = []
_versions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
_cache: dict[str, tuple[tuple, Registry, list[PluginError]]] = {}
#: bumped by every registration and removal: the registries' cache key. Plugin names and ids alone are not
#: one: an unregistered plugin freed, a new one under its name can get its id back and find the old registry
_generation = 0


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    components: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)


def _disabled() -> tuple[bool, set[str]]:
    value = os.environ.get("GENKIT_DISABLE_PLUGINS", "").strip()
    if value.lower() in ("", "0", "false", "no"):
        return False, set()
    if value.lower() in ("1", "true", "yes", "all"):
        return True, set()
    return False, {v.strip() for v in value.split(",") if v.strip()}


def load_plugins() -> None:
    """Load every entry point of group ``genkit`` once; failures are recorded, not raised."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    only_bundled, skipped = _disabled()
    # genkit's own plugins first, so a third-party plugin cannot take a bundled component's name.
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: (e.dist is None or e.dist.name != DISTRIBUTION, e.name)):
        dist = ep.dist.name if ep.dist is not None else None
        if only_bundled and dist != DISTRIBUTION:
            continue
        if ep.name in skipped or pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # an ImportError, or anything the module raises on import
            _load_errors.append(PluginError(ep.name, f"failed to load ({type(exc).__name__}: {exc})"))
            continue
        version = ep.dist.version if ep.dist is not None else None
        if register_plugin(module, name=ep.name) is not None:
            _versions[ep.name] = (dist or "?", version or "?")


def register_plugin(plugin: Any, name: str | None = None) -> str | None:
    """Register a plugin object or module at run time; returns its name, or None if refused.

    Wrong hook arguments and hooks that do not exist are refused here, with the plugin named,
    rather than failing later when the hook is called.
    """
    global _generation
    name = name or getattr(plugin, "__name__", None) or repr(plugin)
    _generation += 1
    try:
        registered = pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
        _load_errors.append(PluginError(name, f"invalid hook implementation: {detail}"))
        return None
    hooks = pm.get_hookcallers(plugin) or []
    unknown = [hc.name for hc in hooks if not hc.has_spec()]
    if unknown or not hooks:
        pm.unregister(plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        problem = (f"implements unknown hook {unknown[0]!r}" if unknown
                   else "implements no genkit hook; mark its hook functions with @genkit.hookimpl")
        _load_errors.append(PluginError(name, f"{problem}; genkit's hooks are: {known}"))
        return None
    return registered


def unregister_plugin(name: str) -> None:
    global _generation
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
        _generation += 1


def _state_key() -> tuple:
    return _generation, tuple(sorted(n for n, _ in pm.list_name_plugin()))


def registry(kind: str) -> Registry:
    """The registry of ``kind``: "datasets", "conditioners", "models", "losses" or "classifiers"."""
    load_plugins()
    key = _state_key()
    cached = _cache.get(kind)
    if cached is not None and cached[0] == key:
        return cached[1]
    reg = Registry(kind)
    errors: list[PluginError] = []
    hook = getattr(pm.hook, f"register_{kind}")
    # Registration order: the plugin loaded first keeps a contested name.
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(name, factory, *, description: str = "", flags=(), default_loss=None, train_defaults=None,
                     older_runs=None, _plugin=plugin_name):
            try:
                reg.add(name, factory, plugin=_plugin, description=description, flags=flags,
                        default_loss=default_loss, train_defaults=train_defaults, older_runs=older_runs)
            except PluginError as exc:  # refuse this one component; the plugin's others still register
                errors.append(exc)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except PluginError as exc:
            errors.append(exc)
        except Exception as exc:
            errors.append(PluginError(plugin_name, f"raised while registering {kind} ({type(exc).__name__}: {exc})"))
    _cache[kind] = (key, reg, errors)
    return reg


def plugin_errors() -> list[PluginError]:
    """Every problem met while loading plugins or filling the registries."""
    for kind in KINDS:
        registry(kind)
    errors = list(_load_errors)
    for kind in KINDS:
        errors.extend(_cache[kind][2])
    return errors


def list_plugins() -> list[PluginInfo]:
    """The loaded plugins, their versions, and the components each registered."""
    load_plugins()
    infos: dict[str, PluginInfo] = {}
    for name, plugin in pm.list_name_plugin():
        dist, version = _distribution_and_version(name, plugin)
        hooks = sorted(hc.name for hc in pm.get_hookcallers(plugin) or [])
        infos[name] = PluginInfo(name, dist, version, {}, hooks)
    for kind in KINDS:
        for component in registry(kind):
            if component.plugin in infos:
                infos[component.plugin].components.setdefault(kind, []).append(component.name)
    return sorted(infos.values(), key=lambda p: p.name)


def _distribution_and_version(name: str, plugin: Any) -> tuple[str | None, str | None]:
    """The distribution an entry-point plugin came from and its version; for a plugin registered at
    run time, no distribution and its module's ``__version__`` (or None)."""
    dist, version = _versions.get(name, (None, None))
    if dist is None:
        module = sys.modules.get(getattr(plugin, "__module__", "") or "")
        version = getattr(plugin, "__version__", None) or getattr(module, "__version__", None)
    return dist, (str(version) if version is not None else None)


def component_origin(kind: str, name: str) -> dict[str, str | None]:
    """Which plugin registered component ``name`` of ``kind``, from which distribution, at which version:
    recorded in ``config.json`` so a run names the code that wrote it."""
    plugin = registry(kind).get(name).plugin
    return {"plugin": plugin, **dict(zip(("distribution", "version"),
                                         _distribution_and_version(plugin, pm.get_plugin(plugin))))}


def changed_plugin_advice(recorded: dict[str, Any], kind: str, name: str) -> str:
    """What to do when saved weights no longer fit component ``name``: the plugin version the run
    recorded (``RunConfig.plugins``) against the one installed now."""
    try:
        now = component_origin(kind, name)
    except GenkitError:
        return ""
    installed = " ".join(filter(None, (now["distribution"] or now["plugin"], now["version"])))
    if not recorded:
        return (f"the run records no plugin version, and {installed} may build {name!r} differently now: load it "
                "with the version that trained it")
    was = recorded.get("version")
    if was and was != now["version"]:
        trained = " ".join(filter(None, (recorded.get("distribution") or recorded.get("plugin"), was)))
        install = f' (pip install "{recorded["distribution"]}=={was}")' if recorded.get("distribution") else ""
        return f"it was trained with {trained} and {installed} is installed: load it with that version{install}"
    return f"{installed} builds {name!r} differently from the code that trained it"

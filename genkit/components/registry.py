"""One registry per component kind, filled from the plugins' ``register_*`` hooks.

A registry maps a name to a :class:`Component`: the factory, the plugin that registered it and
the options its factory accepts. Unknown names raise a :class:`UsageError` that lists the valid
names and the closest match; a name registered twice is refused, naming both plugins.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from genkit.errors import PluginError, UsageError, shown
from genkit.options import COMPATIBLE, COMPONENT, SCALARS, TYPE_NAMES, Option, convert, signature_options
from genkit.options import option_docs  # noqa: F401  (its documented home before genkit.options)

KINDS = ("datasets", "conditioners", "models", "losses", "classifiers")
SINGULAR = {"datasets": "dataset", "conditioners": "conditioner", "models": "model", "losses": "loss",
            "classifiers": "classifier"}


class DuplicateComponentError(PluginError):
    """A plugin registered a name that another plugin already holds."""


#: a short command-line flag a component declares for one of its options (``--beta``): an Option with its flag
Flag = Option


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    #: option name -> flag (``{"beta": "--beta"}``), as declared by the plugin when registering.
    flags: Mapping[str, str] = field(default_factory=dict)
    #: a model's own loss, trained with when the user names none (``--model flow`` → ``flow-matching``)
    default_loss: str | None = None
    #: training settings a model trains best with, used where the user gives none (``{"ema": 0.999}``)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: values of options added after runs were saved without them: what such a run's config.json means
    #: (``{"partial": False}``); a new plan resolves every option with the factory's defaults instead
    older_runs: Mapping[str, Any] = field(default_factory=dict)

    def cli_flags(self, skip: tuple[str, ...] = ()) -> list[Option]:
        """The declared flags with their defaults and the help text from the factory's docstring.

        A flag's value is read by the type of the option's default (JSON for a list or an object).
        """
        declared = self.options(skip)
        return [Option(option, (type(declared[option].default),) if type(declared[option].default) in SCALARS else None,
                       declared[option].default, help=declared[option].help, flag=flag)
                for option, flag in self.flags.items()]

    def options(self, skip: tuple[str, ...] = ()) -> dict[str, Option]:
        """The factory's keyword options (default ``...`` when required): types, choices, bounds and help."""
        params = [p for p in inspect.signature(self.factory).parameters.values()
                  if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

        def describe(param, types, choices, bounds, help):
            default = ... if param.default is param.empty else param.default
            return Option(param.name, types, default, choices, bounds,
                          help or f"{SINGULAR[self.kind]} option {param.name}",
                          label=f"{SINGULAR[self.kind]} {self.name!r} option {param.name}")

        return signature_options(self.factory, params, describe)

    def option_defaults(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Keyword options the factory accepts, with their defaults (``...`` when required)."""
        return {name: option.default for name, option in self.options(skip).items()}

    def accepts_any_option(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.factory).parameters.values())

    def resolve_options(self, options: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The full option set the factory will be called with: the given ones over the defaults.

        Options set to None are left at the factory's default. An option the factory does not
        accept is a :class:`UsageError` naming the component and the options it does accept.
        """
        defaults = self.option_defaults(skip)
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - set(defaults)) if not self.accepts_any_option() else []
        if unknown:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise UsageError(
                f"{SINGULAR[self.kind]} {self.name!r} has no option {shown(unknown[0])}; its options are: {allowed}"
            )
        declared = self.options(skip)
        label = f"{SINGULAR[self.kind]} {self.name!r} option "
        for key, value in given.items():
            convert(declared.get(key) or Option(key, None, ..., label=label + key), value, COMPONENT)
        resolved = {k: v for k, v in defaults.items() if v is not ...}
        resolved.update(given)
        return resolved

    def with_older_runs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Saved options as the run that saved them means them: an option they lack was added after the run
        was saved, and takes its ``older_runs`` value (else, at the call, the factory's default). A new plan
        holds every option (:meth:`resolve_options`), so this changes nothing for it."""
        return {**self.older_runs, **options}

    def create(self, *args: Any, **options: Any) -> Any:
        """The component, from options as resolved or as saved (:meth:`with_older_runs`): the one place every
        factory is called."""
        return self.factory(*args, **self.with_older_runs(options))


class Registry:
    """Components of one kind, by name."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        self.kind = kind
        self._items: dict[str, Component] = {}

    def add(self, name: str, factory: Callable[..., Any], *, plugin: str, description: str = "",
            flags: Iterable[str] | Mapping[str, str] = (), default_loss: str | None = None,
            train_defaults: Mapping[str, Any] | None = None, older_runs: Mapping[str, Any] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(plugin, f"registered a {SINGULAR[self.kind]} with an invalid name {name!r}")
        what = f"{SINGULAR[self.kind]} {name!r}"
        if not callable(factory):
            raise PluginError(plugin, f"registered {what} with a factory that is not callable")
        declared = _declared_flags(flags, factory, plugin, what)
        if (default_loss is not None or train_defaults) and self.kind != "models":
            raise PluginError(plugin, f"registered {what} with default_loss or train_defaults, which only models declare")
        if default_loss is not None and (not isinstance(default_loss, str) or not default_loss):
            raise PluginError(plugin, f"registered {what} with default_loss {default_loss!r}; give a loss's name")
        train_defaults = _declared_train_defaults(train_defaults, plugin, what)
        older_runs = _declared_older_runs(older_runs, factory, plugin, what)
        if name in self._items:
            holder = self._items[name].plugin
            raise DuplicateComponentError(
                plugin,
                f"cannot register {SINGULAR[self.kind]} {name!r}: plugin {holder!r} already registered it",
            )
        self._items[name] = Component(self.kind, name, factory, plugin, description or _first_line(factory), declared,
                                      default_loss, train_defaults, older_runs)

    def get(self, name: str) -> Component:
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        singular = SINGULAR[self.kind]
        names = sorted(self._items)
        if not names:
            return f"unknown {singular} {shown(name)}: no {self.kind} are installed"
        message = f"unknown {singular} {shown(name)}; available: {', '.join(names)}"
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        return message

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


FLAG_PATTERN = re.compile(r"^--[a-z][a-z0-9-]*$")


def _declared_flags(flags: Iterable[str] | Mapping[str, str], factory: Callable[..., Any], plugin: str,
                    what: str) -> dict[str, str]:
    """``flags`` as option -> flag; each option must be a keyword parameter of the factory."""
    if isinstance(flags, str):
        flags = [flags]
    pairs = dict(flags) if isinstance(flags, Mapping) else {o: "--" + o.replace("_", "-") for o in flags}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    for option, flag in pairs.items():
        param = params.get(option)
        if param is None or param.default is param.empty:
            raise PluginError(plugin, f"registered {what} with flag {flag!r} for {option!r}, which is not an "
                                      "option of its factory (a keyword parameter with a default)")
        if not isinstance(flag, str) or not FLAG_PATTERN.match(flag):
            raise PluginError(plugin, f"registered {what} with flag {flag!r}; flags look like --name")
    return pairs


def _declared_train_defaults(defaults: Mapping[str, Any] | None, plugin: str, what: str) -> dict[str, Any]:
    """``train_defaults`` checked: known training settings, each of its setting's type."""
    from dataclasses import fields

    from genkit.config import TrainSpec

    settings = {f.name: f.default for f in fields(TrainSpec)}
    checked: dict[str, Any] = {}
    for key, value in dict(defaults or {}).items():
        if key not in settings:
            raise PluginError(plugin, f"registered {what} with train_defaults {key!r}, which is not a training setting "
                                      f"(settings: {', '.join(settings)})")
        allowed = COMPATIBLE.get(type(settings[key]), (type(settings[key]),))
        if not isinstance(value, allowed) or (isinstance(value, bool) and not isinstance(settings[key], bool)):
            raise PluginError(plugin, f"registered {what} with train_defaults {key}={value!r}; it must be "
                                      f"{TYPE_NAMES.get(type(settings[key]), type(settings[key]).__name__)}")
        checked[key] = value
    return checked


def _declared_older_runs(values: Mapping[str, Any] | None, factory: Callable[..., Any], plugin: str,
                         what: str) -> dict[str, Any]:
    """``older_runs`` checked: options of the factory (keyword parameters with a default), JSON values."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise PluginError(plugin, f"registered {what} with older_runs {values!r}; give a mapping of option to value, "
                                  'such as {"partial": False}')
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    checked: dict[str, Any] = {}
    for option, value in values.items():
        param = params.get(option)
        if param is None or param.default is param.empty:
            raise PluginError(plugin, f"registered {what} with older_runs {option!r}, which is not an option of its "
                                      "factory (a keyword parameter with a default)")
        try:
            checked[option] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            raise PluginError(plugin, f"registered {what} with older_runs {option}={value!r}, which config.json "
                                      "cannot hold; give a JSON value") from None
    return checked


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""

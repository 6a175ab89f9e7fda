"""Options: one typed description of a value a user gives genkit, and one converter to that value.

Every value a user sets by name is an :class:`Option`: a component's option (read from its
factory's signature), a model's sampling option (read from ``sample``'s signature), a training
setting (a field of :class:`genkit.TrainSpec`), a value of ``genkit sweep --vary``. Where an
option's type, choices and bounds come from a signature, :func:`declared` reads them from the
annotation (``Literal[...]`` gives the choices, ``Annotated[float, genkit.Bounds(gt=0)]`` the
bounds) or else from the default, and :func:`option_docs` reads the help from the docstring.

:func:`convert` is the one place where text (a flag, ``KEY=VALUE``, a ``--vary`` item) or a
JSON/API value becomes an option's value. Values arrive by four :class:`Route` s that differ in
how text is read and how a bad value is told (kept as each was before there was one converter);
a value out of an option's :class:`Bounds` is refused with the same one-line message on every
route.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from genkit.errors import UsageError, shown

#: what a message calls a value of each type
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list",
              tuple: "a list", dict: "an object"}
#: the JSON types a value may have for an option of each type (an int where a number is asked is fine)
COMPATIBLE = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, tuple),
              tuple: (list, tuple), dict: (dict,)}
SCALARS = (bool, int, float, str)
_NAMED = {t.__name__: t for t in COMPATIBLE}
#: the words a true-or-false option is given as (any case)
BOOL_WORDS = ("true", "false")
#: the whole numbers genkit passes on to PyTorch
INT64 = (-2**63, 2**63 - 1)


@dataclass(frozen=True)
class Bounds:
    """The range of a number option, declared on a keyword as ``Annotated[float, genkit.Bounds(gt=0)]``.

    ``ge``/``le`` are inclusive ends, ``gt``/``lt`` exclusive ones; leave out an end that is
    open. ``says`` replaces the range in words that messages give (``"0 (off) or a decay below
    1"``). A value outside is refused with one line naming it and the range, wherever it arrives.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    says: str = ""

    def __post_init__(self) -> None:
        ends = (self.ge, self.gt, self.le, self.lt)
        if any(e is not None and (isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e))
               for e in ends):
            raise TypeError(f"Bounds ends must be finite numbers, not {ends}")
        if (self.ge is not None and self.gt is not None) or (self.le is not None and self.lt is not None):
            raise TypeError("give each end of Bounds once: ge or gt, le or lt")

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is a finite number inside the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        """The range in words: ``1 or more``, ``above 0``, ``from 0 to 1``, ``above 0 and at most 5``."""
        if self.says:
            return self.says
        if self.ge is not None and self.le is not None:
            return f"from {_show(self.ge)} to {_show(self.le)}"
        low = f"at least {_show(self.ge)}" if self.ge is not None else f"above {_show(self.gt)}" \
            if self.gt is not None else ""
        high = f"at most {_show(self.le)}" if self.le is not None else f"below {_show(self.lt)}" \
            if self.lt is not None else ""
        if low and high:
            return f"{low} and {high}"
        if self.ge is not None:
            return f"{_show(self.ge)} or more"
        if self.le is not None:
            return f"{_show(self.le)} or less"
        return low or high or "any number"

    @property
    def low(self) -> float | None:
        return self.ge if self.ge is not None else self.gt

    @property
    def high(self) -> float | None:
        return self.le if self.le is not None else self.lt


@dataclass(frozen=True)
class Option:
    """One option: its name, the types its value may have, default, choices, bounds, help and flag."""

    name: str
    #: the types a value may have (several for ``str | float``); None when genkit does not judge it
    types: tuple[type, ...] | None
    default: Any = None
    choices: tuple[Any, ...] | None = None
    bounds: Bounds | None = None
    help: str = ""
    #: the command-line flag (``--guidance``); empty where the option has none
    flag: str = ""
    #: how messages name it (``model 'mine' option depth``); the flag when empty
    label: str = ""

    @property
    def type(self) -> type | None:
        """The option's one type, or None when it has several or none."""
        return self.types[0] if self.types and len(self.types) == 1 else None

    @property
    def option(self) -> str:  # the name, as a component's Flag called it
        return self.name

    @property
    def called(self) -> str:
        return self.label or self.flag or self.name

    def describe(self) -> str:
        """``--guidance FLOAT  help (default 2.0)``-like text for listings."""
        kind = "|".join(map(str, self.choices)) if self.choices else {bool: "BOOL", int: "INTEGER", float: "FLOAT",
                                                                        str: "TEXT"}.get(self.type, "JSON")
        return f"{self.flag} {kind}  {self.help} (default {self.default})"

    def example(self) -> str:
        """The default as JSON text, for messages (``like latent_dim=32``)."""
        try:
            return json.dumps(list(self.default) if isinstance(self.default, tuple) else self.default)
        except (TypeError, ValueError):
            return str(self.default)


@dataclass(frozen=True)
class Route:
    """How values reach options by one way in, and how a bad one is told.

    ``text``: how text is read: ``"typed"`` by the option's type (``int()``, ``float()``,
    true/false; JSON, else the text, for other types), ``"json"`` as JSON, else the text itself,
    None not at all (the value is a JSON/API value already). The message templates fill in
    ``{where}`` (the option as the route names it), ``{given}`` (the value as given),
    ``{value}`` (as read), ``{wanted}``, ``{help}``, ``{name}`` and ``{example}``.
    """

    text: str | None
    #: numbers must be finite (NaN and infinities refused)
    finite: bool
    #: a whole float (3.0) passes for a whole-number option, and becomes 3; numbers become the option's type
    coerce: bool
    #: choices are checked (else the factory judges them)
    choices: bool
    bad: str
    not_finite: str = ""
    not_whole: str = ""
    #: where a whole number beyond 64 bits is refused, the message
    huge: str = ""
    #: what a message calls each type, where the route differs from :data:`TYPE_NAMES`
    names: Mapping[type, str] = None  # type: ignore[assignment]


#: a component's declared flag (``--beta 0.5``): read by the default's type, judged again as a component option
FLAG = Route("typed", finite=False, coerce=False, choices=False, bad="{where} {given!r} is not {wanted}; {help}")
#: a sampling option, from a flag, ``--sample-opt``, ``--vary sample.X``, the API or the page
SAMPLING = Route("typed", finite=True, coerce=True, choices=True, bad="{where} {given} must be {wanted}; {help}",
                 not_finite="{where} {value} must be a finite number; {help}")
#: one item of ``--vary KIND.OPTION=V1,V2`` or of a component flag given several values
VARY = Route("json", finite=True, coerce=True, choices=False, bad="{where} value {given} is not {wanted}",
             not_finite="{where} value {given} is not a finite number; give numbers such as {example}",
             not_whole="{where} value {given} is not a whole number", names={int: "a number"})
#: a component option's value (``--model-opt`` read as JSON, a flag's value, an API keyword)
COMPONENT = Route(None, finite=False, coerce=False, choices=False,
                  bad="{where} is {given}, but it must be {wanted}, like {name}={example}",
                  huge="{where} holds {value}, outside the whole numbers genkit passes on (-2**63 to 2**63 - 1), "
                       "like {name}={example}")
#: ``KEY=VALUE`` text whose option is not known yet (``--model-opt``): JSON, else the text itself
TEXT = Route("json", finite=False, coerce=False, choices=False, bad="")
ANY = Option("value", None)


def convert(option: Option, value: Any, route: Route = SAMPLING, where: str = "") -> Any:
    """``value`` (text, or a JSON/API value) as ``option``'s value; a one-line :class:`UsageError` otherwise.

    ``where`` names the option in the route's messages (the flag, ``--vary loss.beta``); bounds
    messages name it by :attr:`Option.called` on every route.
    """
    where = where or option.called
    given = value
    if isinstance(value, str) and route.text is not None:
        value = _read(option, value, route)
        if value is _BAD:
            raise _bad(option, route, where, given, given)
    huge = _huge_int(value) if route.huge else None
    if huge is not None:
        raise UsageError(_say(route.huge, option, route, where, given, huge))
    value = _typed(option, value, route, where, given)
    if option.choices is not None and route.choices and value not in option.choices:
        raise _bad(option, route, where, given, value)
    check_bounds(option, value)
    return value


def check_type(option: Option, value: Any, called: str) -> None:
    """A value already typed (a setting built in Python, not parsed from text) of ``option``'s type: a whole
    number for ``--epochs``, not 2.5 nor true; one line naming ``called`` otherwise."""
    kind = option.type
    allowed = (int, float) if kind is float else (kind,)
    if isinstance(value, allowed) and (kind is bool or not isinstance(value, bool)):
        return
    wanted = f"; give {option.bounds.describe()}" if option.bounds is not None else ""
    raise UsageError(f"{called} {shown(value)} is not {TYPE_NAMES[kind]}{wanted}")


def check_bounds(option: Option, value: Any, called: str = "") -> None:
    """A value outside ``option``'s bounds: one line naming it, the range and the default to start from."""
    bounds = option.bounds
    if bounds is None or bounds.admits(value):
        return
    example = "" if bounds.says or not bounds.admits(option.default) else f", for example {_show(option.default)}"
    raise UsageError(f"{called or option.called} {shown(value)} must be {bounds.describe()}{example}")


_BAD = object()


def _read(option: Option, text: str, route: Route) -> Any:
    kind = option.type if route.text == "typed" else None
    if kind is bool:
        word = text.strip().lower()
        return word == BOOL_WORDS[0] if word in BOOL_WORDS else _BAD
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            return _BAD
    if kind is str:
        return text
    try:
        return json.loads(text)
    except ValueError:  # not JSON (or a number too long for Python to read): kept as text
        return text


def _typed(option: Option, value: Any, route: Route, where: str, given: Any) -> Any:
    types = option.types
    if types is None:
        return value
    kind = option.type
    numbers = route.coerce and kind in (int, float)  # 3.0 is read as a whole number, then judged
    allowed = (int, float) if numbers else tuple({t for d in types for t in COMPATIBLE.get(d, (d,))})
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in types):
        raise _bad(option, route, where, given, value)
    if kind in (int, float) and route.finite:
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise UsageError(_say(route.not_finite, option, route, where, given, value))
    if not route.coerce or kind not in (int, float):
        return value
    if kind is int and value != int(value):
        if route.not_whole:
            raise UsageError(_say(route.not_whole, option, route, where, given, value))
        raise _bad(option, route, where, given, value)
    return kind(value)


def _bad(option: Option, route: Route, where: str, given: Any, value: Any) -> UsageError:
    return UsageError(_say(route.bad, option, route, where, given, value))


def _say(template: str, option: Option, route: Route, where: str, given: Any, value: Any) -> str:
    names = {**TYPE_NAMES, **(route.names or {})}
    if option.choices is not None and route.choices:
        wanted = "one of " + ", ".join(map(str, option.choices))
    else:
        wanted = " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in option.types or (str,)))
    example = _show(option.default) if route is VARY else option.example()
    return template.format(where=where, given=shown(given) if "!r" not in template else given, value=shown(value),
                           wanted=wanted, help=option.help, name=option.name, example=example)


def _huge_int(value: Any) -> int | None:
    """The first whole number in ``value`` (or in its lists and objects) that a 64-bit integer cannot hold."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64[0] <= value <= INT64[1] else value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((found for item in items if (found := _huge_int(item)) is not None), None)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- reading options from a signature ----------------------------------------------------------------------

def declared(hint: Any, default: Any) -> tuple[tuple[type, ...] | None, tuple[Any, ...] | None, Bounds | None]:
    """``(types, choices, bounds)`` an annotation declares; the default's type where it declares none.

    ``types`` is None where genkit does not judge the value (``Any``, a class of the plugin's own).
    An annotation that could not be evaluated is read from its text (``"str | float"``).
    """
    bounds = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        bounds = next((e for e in extras if isinstance(e, Bounds)), None)
    if hint is inspect.Parameter.empty or hint is None:
        return ((type(default),) if type(default) in COMPATIBLE else None), None, bounds
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return (type(choices[0]),), tuple(choices), bounds
    if isinstance(hint, str):
        return _types_from_text(hint), None, bounds
    return _types_of(hint), None, bounds


def _types_of(hint: Any) -> tuple[type, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_types_of(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        if not parts or any(part is None for part in parts):
            return None
        return tuple(dict.fromkeys(t for part in parts for t in part))
    hint = origin if origin is not None else hint  # list[int] -> list: a generic's arguments say nothing here
    return (hint,) if hint in COMPATIBLE else None


def _types_from_text(text: str) -> tuple[type, ...] | None:
    while re.search(r"\[[^\[\]]*\]", text):  # list[int] -> list: a generic's arguments say nothing here
        text = re.sub(r"\[[^\[\]]*\]", "", text)
    names = [n.strip().split(".")[-1] for n in re.split(r"[|,]", text.replace("Optional", "").replace("Union", ""))]
    names = [n for n in names if n and n != "None" and n != "NoneType"]
    if not names or any(n.lower() not in _NAMED for n in names):
        return None  # Any, a class of the plugin's own, Literal read from text...: the factory judges it
    return tuple(_NAMED[n.lower()] for n in names)


def signature_options(fn: Callable[..., Any], parameters: list[inspect.Parameter],
                      describe: Callable[[inspect.Parameter, tuple, tuple | None, Bounds | None, str], Option]
                      ) -> dict[str, Option]:
    """An :class:`Option` per parameter of ``fn``, built by ``describe(param, types, choices, bounds, help)``."""
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn, include_extras=True)
    except Exception:  # annotations that cannot be evaluated: read from their text
        hints = {}
    docs = option_docs(fn)
    found = {}
    for param in parameters:
        default = None if param.default is param.empty else param.default
        types, choices, bounds = declared(hints.get(param.name, param.annotation), default)
        found[param.name] = describe(param, types, choices, bounds, docs.get(param.name, ""))
    return found


def option_docs(factory: Callable[..., Any]) -> dict[str, str]:
    """Per-option help from the factory's docstring: ``:param name: text`` or a Google ``Args:`` list."""
    doc = inspect.getdoc(factory) or ""
    docs: dict[str, str] = {}
    current = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        sphinx = re.match(r":param\s+(?:[\w\[\], .|]+\s+)?(\w+):\s*(.*)", stripped)
        google = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s+(.*)", stripped) if in_args and line.startswith((" ", "\t")) else None
        if sphinx or google:
            current, text = (sphinx or google).groups()
            docs[current] = text.strip()
        elif stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, current = True, None
        elif not stripped or stripped.startswith(":") or not line.startswith((" ", "\t")) and in_args:
            current = None
            if not line.startswith((" ", "\t")) and stripped:
                in_args = False
        elif current is not None:
            docs[current] += " " + stripped
    return docs

"""What a sweep varies: ``--vary KIND.OPTION=V1,V2`` (and comma-separated component flags) parsed
into typed values, checked against the option each names."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from genkit.components.build import POSITIONAL_ARGS
from genkit.components.loading import registry
from genkit.config import TrainSpec
from genkit.data.holdout import HOLD_OUT_KEY, hold_out_values
from genkit.errors import UsageError
from genkit.options import ANY, TEXT, VARY, Option, Route, convert

#: ``--vary`` prefix -> (registry kind, plan_run keyword for its options, plan_run keyword for its name)
VARY_KINDS = {"data": ("datasets", "data_options", "data"),
              "conditioner": ("conditioners", "conditioner_options", "conditioner"),
              "model": ("models", "model_options", "model"),
              "loss": ("losses", "loss_options", "loss")}


TRAIN_SETTINGS = {f.name: f.default for f in fields(TrainSpec)}


#: ``--vary sample.OPTION``: one of the model's sampling options; evaluated per value, never retrained
SAMPLE = "sample"


#: the run folder of a sweep that varies only sampling options
SINGLE_RUN = "run"


@dataclass(frozen=True)
class Varied:
    """One swept option: ``kind`` is data, conditioner, model, loss, train or sample."""

    kind: str
    option: str
    values: tuple[Any, ...]
    #: how the user wrote it, for messages (``--vary loss.beta`` or ``--beta``)
    given_as: str

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.option}"

    def show(self, value: Any) -> str:
        """``value`` as its folder name and table label show it: short (``0.001``), unless two of
        this option's values would then look alike (0.001 and 0.0010000001: each exactly)."""
        short = [_show(v) for v in self.values]
        return _show(value, exact=len(set(short)) < len(short))


def parse_values(text: str, given_as: str, default: Any) -> tuple[Any, ...]:
    """``"0.25,0.5"`` to ``(0.25, 0.5)``, each value of the option's type; empties and repeats refused.

    The type is the default's (a number, true or false); other values are read as JSON, else as text,
    and judged when the run is planned.
    """
    kind = type(default) if isinstance(default, (bool, int, float)) else None
    return typed_values(split_values(text, given_as), Option("value", (kind,) if kind else None, default), given_as)


def split_values(text: str, given_as: str) -> list[str]:
    """The comma-separated items of ``text``; none is a UsageError."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError(f"{given_as} is empty; give one or more values separated by commas")
    return items


def typed_values(items: list[str], option: Option, given_as: str, route: Route = VARY) -> tuple[Any, ...]:
    """Each item converted to ``option``'s value (:func:`genkit.options.convert`); a value listed twice refused."""
    values: list[Any] = []
    for item in items:
        value = convert(option, item, route, given_as if route is VARY else "")
        if value in values:
            raise UsageError(f"{given_as} value {item} is listed twice; give each value once")
        values.append(value)
    return tuple(values)


def parse_vary(items: list[str], components: dict[str, str]) -> list[Varied]:
    """``["loss.beta=0.25,0.5"]`` to :class:`Varied`, checked against the chosen ``components``.

    ``components`` maps data/conditioner/model/loss to the chosen names. An unknown kind, an
    option the chosen component does not have, or a value of the wrong type is a UsageError
    listing what is valid.
    """
    varied: list[Varied] = []
    for item in items or []:
        target, sep, text = item.partition("=")
        kind, dot, option = target.strip().partition(".")
        given_as = f"--vary {target.strip()}"
        kinds = ", ".join([*VARY_KINDS, "train", SAMPLE])
        if not sep or not dot or not option:
            raise UsageError(f"--vary {item!r} is not KIND.OPTION=V1,V2; KIND is one of {kinds}, "
                             "for example --vary train.lr=1e-3,2e-3")
        option = option.replace("-", "_")
        if f"{kind}.{option}" == HOLD_OUT_KEY:  # not a dataset option: the run's held-out combinations
            varied.append(Varied(kind, option, hold_out_values(text, given_as), given_as))
            continue
        if kind == "train":
            if option not in TRAIN_SETTINGS:
                raise UsageError(f"{given_as}: there is no training setting {option!r}; settings are: "
                                 f"{', '.join(sorted(TRAIN_SETTINGS))}")
            default = TRAIN_SETTINGS[option]
        elif kind in VARY_KINDS:
            default = option_default(kind, components[kind], option, given_as)
        elif kind == SAMPLE:  # typed against the model's own options once the model is known (plan_sweep)
            varied.append(Varied(kind, option, tuple(split_values(text, given_as)), given_as))
            continue
        else:
            raise UsageError(f"{given_as}: {kind!r} is not a kind of option; use one of {kinds}")
        varied.append(Varied(kind, option, parse_values(text, given_as, default), given_as))
    return varied


def option_default(kind: str, name: str, option: str, given_as: str) -> Any:
    """The default of ``option`` of the chosen component; a UsageError naming its options if it has none."""
    reg_kind = VARY_KINDS[kind][0]
    component = registry(reg_kind).get(name)
    defaults = component.option_defaults(skip=POSITIONAL_ARGS[reg_kind])
    if option not in defaults and not component.accepts_any_option():
        raise UsageError(f"{given_as}: {kind} {name!r} has no option {option!r}; its options are: "
                         f"{', '.join(sorted(defaults)) or 'none'}")
    return defaults.get(option)


def varied_from_flags(flags: dict[str, dict[str, str]], components: dict[str, str]) -> tuple[list[Varied], dict]:
    """Split the components' flags given to ``genkit sweep`` into varied ones (several comma-separated
    values) and fixed ones (one value, or a list-valued option, set for every run)."""
    singular = {v[0]: k for k, v in VARY_KINDS.items()}
    varied, fixed = [], {}
    for reg_kind, values in flags.items():
        kind = singular[reg_kind]
        declared = {f.name: f for f in registry(reg_kind).get(components[kind]).cli_flags(POSITIONAL_ARGS[reg_kind])}
        for option, raw in values.items():
            flag = declared[option]
            if isinstance(flag.default, (list, tuple, dict)):
                fixed.setdefault(reg_kind, {})[option] = convert(ANY, raw, TEXT)
                continue
            parsed = parse_values(raw, flag.flag, flag.default)
            if len(parsed) > 1:
                varied.append(Varied(kind, option, parsed, flag.flag))
            else:
                fixed.setdefault(reg_kind, {})[option] = parsed[0]
    return varied, fixed


def _show(value: Any, exact: bool = False) -> str:
    if isinstance(value, float):
        return repr(value) if exact else f"{value:g}"
    return str(value)

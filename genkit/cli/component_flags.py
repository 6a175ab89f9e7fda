"""Flags that components declare for themselves (``--beta``, ``--latent-dim``, ...).

A plugin registers a component with ``flags=("beta",)`` and documents the option in its
factory's docstring; ``genkit train``/``genkit sweep`` then accept ``--beta`` whenever that
component is chosen, and ``--help`` lists it under the component's name. The core never names
an option: which flags exist follows from the ``--data``/``--conditioner``/``--model``/``--loss``
values on the command line (or their defaults). The commands take the flags as extra
arguments (``ctx.args``), which :func:`given_flags` checks and converts.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from typer.core import TyperCommand

from genkit.components.build import POSITIONAL_ARGS
from genkit.components.recipe import DEFAULT_RECIPE
from genkit.components.registry import SINGULAR
from genkit.errors import UsageError
from genkit.options import BOOL_WORDS, FLAG, Option, convert

#: command parameter name -> component kind
KIND_OF_PARAM = {"data": "datasets", "conditioner": "conditioners", "model": "models", "loss": "losses"}
OPTION_FLAG = {"datasets": "--data-opt", "conditioners": "--conditioner-opt", "models": "--model-opt",
               "losses": "--loss-opt"}
#: let the components' flags through the parser, to :func:`given_flags`
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def chosen_components(command, args: list[str]) -> dict[str, str]:
    """kind -> component name, from ``args`` (``--loss x`` / ``--loss=x``) or the options' defaults (the
    chosen model's own loss when no ``--loss`` is given)."""
    from genkit.components.loading import registry

    chosen: dict[str, str] = {}
    for param in command.params:
        kind = KIND_OF_PARAM.get(param.name or "")
        if kind is None or not hasattr(param, "opts"):
            continue
        value = param.default
        for i, token in enumerate(args):
            if token == "--":
                break
            for opt in param.opts:
                if token == opt and i + 1 < len(args):
                    value = args[i + 1]
                elif token.startswith(opt + "="):
                    value = token[len(opt) + 1:]
        if isinstance(value, str) and value:
            chosen[kind] = value
    if "losses" not in chosen and chosen.get("models") in registry("models"):  # no --loss: the model's own
        from genkit.training.planning import default_loss

        chosen["losses"] = default_loss(chosen["models"])
    return chosen


def declared_flags(chosen: dict[str, str], taken: frozenset[str] = frozenset()) -> list[tuple[str, str, Option]]:
    """``(kind, component, flag)`` for every flag the chosen, installed components declare.

    A flag in ``taken`` (one of the command's own options) is left out: the command's option
    wins, and the component's option stays settable with ``--model-opt`` etc.
    """
    from genkit.components.loading import registry

    found = []
    for kind, name in chosen.items():
        reg = registry(kind)
        if name in reg:
            found += [(kind, name, flag) for flag in reg.get(name).cli_flags(skip=POSITIONAL_ARGS[kind])
                      if flag.flag not in taken]
    return found


def command_options(command) -> frozenset[str]:
    """Every option string of the command itself (``--seed``, ``-m``, ``--no-x`` ...)."""
    return frozenset(o for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())))


class ComponentCommand(TyperCommand):
    """A Typer command whose help also lists the chosen components' flags (they parse as extra args)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        paragraphs, owner = [], None
        for kind, name, flag in declared_flags(chosen_components(self, args), command_options(self)):
            if (kind, name) != owner:
                owner = (kind, name)
                paragraphs.append(f"Options of {SINGULAR[kind]} {name}:")
            default = DEFAULT_RECIPE.options_for(SINGULAR[kind], name).get(flag.name, flag.default)
            shown_default = "" if default is None else f" (default {json.dumps(default)})"
            paragraphs.append(f"  {flag.flag} {_metavar(flag.default)}  {flag.help}{shown_default}")
        if paragraphs:
            self.epilog = "\n\n".join(paragraphs)
        return super().parse_args(ctx, args)


def given_flags(ctx, chosen: dict[str, str], as_text: bool = False) -> dict[str, dict[str, Any]]:
    """``{kind: {option: value}}`` from the extra arguments: the chosen components' declared flags.

    Values are converted to the type of the option's default (JSON for anything else); with
    ``as_text`` they stay strings (``genkit sweep`` splits them on commas). Any other extra
    argument is a :class:`UsageError` naming the component that has that flag, or the closest
    known option.
    """
    known: dict[str, tuple[str, Option]] = {}
    shared: dict[str, list[str]] = {}  # a flag two chosen components declare: ambiguous, refused when used
    for kind, name, flag in declared_flags(chosen, command_options(ctx.command)):
        shared.setdefault(flag.flag, []).append(f"{SINGULAR[kind]} {name!r}")
        known.setdefault(flag.flag, (kind, flag))
    negated = {"--no-" + f[2:]: f for f, (_, flag) in known.items() if isinstance(flag.default, bool)}
    values: dict[str, dict[str, Any]] = {}
    args = list(ctx.args)
    while args:
        token = args.pop(0)
        name, sep, inline = token.partition("=")
        if name in negated and not sep:
            kind, flag = known[negated[name]]
            values.setdefault(kind, {})[flag.name] = "false" if as_text else False
            continue
        if name not in known:
            raise _unknown(token, ctx, chosen)
        kind, flag = known[name]
        if len(shared[name]) > 1:
            raise UsageError(f"{name} is declared by both {shared[name][0]} and {shared[name][1]}; set each one's "
                             f"option with its --model-opt/--loss-opt/--conditioner-opt/--data-opt KEY=VALUE instead")
        if sep:
            raw = inline
        elif isinstance(flag.default, bool) and not (args and args[0].lower() in BOOL_WORDS):
            raw = "true"
        elif args:
            raw = args.pop(0)
        else:
            raise UsageError(f"{name} needs a value: {flag.help}")
        values.setdefault(kind, {})[flag.name] = raw if as_text else convert(flag, raw, FLAG)
    return values


def _metavar(default: Any) -> str:
    if isinstance(default, bool):
        return "/ --no-…"
    return {int: "INTEGER", float: "FLOAT", str: "TEXT"}.get(type(default), "JSON")


def _unknown(token: str, ctx, chosen: dict[str, str]) -> UsageError:
    """An extra argument no chosen component takes: name who has it, or the nearest known option."""
    from genkit.components.loading import registry

    name = token.partition("=")[0]
    if not name.startswith("-"):
        return UsageError(f"unexpected argument {token!r}; options take the form --name VALUE "
                          f"(see `genkit {ctx.info_name} --help`)")
    for kind, chosen_name in chosen.items():
        registry(kind).get(chosen_name)  # an unknown component name is the real problem: say that
    for kind in KIND_OF_PARAM.values():
        for component in registry(kind):
            if any(f.flag == name for f in component.cli_flags(skip=POSITIONAL_ARGS[kind])):
                mine = chosen.get(kind)
                own = [f.flag for _, n, f in declared_flags({kind: mine})] if mine else []
                switch = "--data" if kind == "datasets" else f"--{SINGULAR[kind]}"
                return UsageError(
                    f"{name} is an option of {SINGULAR[kind]} {component.name!r}, not of the chosen {SINGULAR[kind]} "
                    f"{mine!r} (its flags: {', '.join(own) or 'none'}); choose {switch} {component.name}, or set "
                    f"{mine!r}'s options with {OPTION_FLAG[kind]} KEY=VALUE")
    options = [o for p in ctx.command.params for o in getattr(p, "opts", ())]
    options += [f.flag for _, _, f in declared_flags(chosen)]
    close = difflib.get_close_matches(name, options, n=1)
    hint = f" (did you mean {close[0]}?)" if close else f"; see `genkit {ctx.info_name} --help`"
    return UsageError(f"no such option {name}{hint}")

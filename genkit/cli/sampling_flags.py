"""Flags for the options a run's model samples with (``--temperature``, ``--guidance``, ...).

A model declares its sampling options in its ``sample`` signature (:mod:`genkit.sampling.capabilities`);
``genkit sample``, ``evaluate`` and ``serve`` take them as extra arguments, checked against the
model of the ``--run`` given, and ``--sample-opt KEY=VALUE`` sets any of them by name. ``--help``
with a ``--run`` lists that model's options at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import typer
from typer.core import TyperCommand

from genkit.errors import UsageError, shown
from genkit.options import BOOL_WORDS
from genkit.sampling.capabilities import SamplingOption
from genkit.sampling.editing import DEFAULT_EDIT_MODE

#: let the model's flags through the parser, to :func:`given_options`
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
SAMPLE_OPT = typer.Option(None, "--sample-opt", help="A sampling option of the run's model, KEY=VALUE (repeatable); "
                                                     "its own flags are listed at the end of --help with a --run.")
#: how an edit is made (genkit.sampling.editing): ``genkit edit`` and ``genkit evaluate`` take the same three
EDIT_MODE = typer.Option(DEFAULT_EDIT_MODE, "--edit-mode", metavar="redraw|residual",
                         help="redraw: the model's drawing under the new attributes; residual: the image plus what "
                              "the change alters in that drawing (untouched pixels stay).")
EDIT_DEPTH = typer.Option(None, "--edit-depth", metavar="D",
                          help="Part of the path to invert, in (0, 1], for a model that inverts part of the way "
                               "(partial_invert; default 1, the whole way).")
INVERT_OPT = typer.Option(None, "--invert-opt", metavar="KEY=VALUE",
                          help="A sampling option of the run's model used only to invert the image (repeatable); "
                               "the edit is drawn with the others.")


def options_of_config(run_dir: str | Path) -> dict[str, SamplingOption] | None:
    """The sampling options of the model in ``run_dir``'s config.json (built on the meta device), or None."""
    from genkit.components.build import model_outline
    from genkit.config import RunConfig
    from genkit.sampling.capabilities import sampling_options
    from genkit.store.run_folder import CONFIG_FILE

    try:
        return sampling_options(model_outline(RunConfig.load(Path(run_dir) / CONFIG_FILE)))
    except Exception:  # --help must never fail; the command itself reports a bad run folder
        return None


class SamplingCommand(TyperCommand):
    """A command whose help also lists the sampling options of the model of its ``--run``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        runs = [args[i + 1] for i, token in enumerate(args[:-1]) if token in ("--run", "-r")]
        runs += [token.split("=", 1)[1] for token in args if token.startswith("--run=")]
        options = options_of_config(runs[0]) if runs and "--help" in args else None
        if options:
            self.epilog = "\n\n".join([f"Sampling options of the model in {runs[0]}:"] +
                                      [f"  {option.describe()}" for option in options.values()])
        elif options is not None:
            self.epilog = f"The model in {runs[0]} has no sampling options."
        return super().parse_args(ctx, args)


def given_options(extra: list[str], sample_opt: list[str] | None,
                  declared: Mapping[str, SamplingOption], model: str, command: str) -> dict[str, Any]:
    """``{option: text}`` from the extra arguments (the model's flags) and ``--sample-opt KEY=VALUE``.

    Values stay text; :func:`genkit.sampling.capabilities.resolve_sampling_options` converts and checks
    them. A flag the model does not have names the model's own sampling options.
    """
    by_flag = {option.flag: option for option in declared.values()}
    negated = {"--no-" + option.flag[2:]: option for option in declared.values() if option.type is bool}
    own = ", ".join(option.flag for option in declared.values()) or "none"
    values: dict[str, Any] = {}
    args = list(extra)
    while args:
        token = args.pop(0)
        name, sep, inline = token.partition("=")
        if name in negated and not sep:
            values[negated[name].name] = "false"
            continue
        option = by_flag.get(name)
        if option is None:
            if not name.startswith("-"):
                raise UsageError(f"unexpected argument {shown(token)}; options take the form --name VALUE "
                                 f"(see `genkit {command} --help`)")
            raise UsageError(f"{shown(name, quote=False)} is not an option of `genkit {command}` nor a sampling option "
                             f"of model {model!r} (its sampling options: {own})")
        if sep:
            values[option.name] = inline
        elif option.type is bool and not (args and args[0].lower() in BOOL_WORDS):
            values[option.name] = "true"
        elif args:
            values[option.name] = args.pop(0)
        else:
            raise UsageError(f"{option.flag} needs a value: {option.help}")
    for pair in sample_opt or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not declared:
            raise UsageError(f"--sample-opt {shown(pair)}: model {model!r} has no sampling options")
        if not sep or not key:
            example = next(iter(declared.values()))
            raise UsageError(f"--sample-opt {shown(pair)} is not KEY=VALUE; for example --sample-opt "
                             f"{example.name}={example.default}")
        values[key] = raw
    return values


def given_invert_options(pairs: list[str] | None, declared: Mapping[str, SamplingOption]) -> dict[str, str]:
    """``{option: text}`` from ``--invert-opt KEY=VALUE`` (values stay text: ``Run.editor`` converts and checks
    them against the model's sampling options ``declared``); a one-line error for a pair that is not KEY=VALUE."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            example = next(iter(declared.values()), None)
            hint = f"; for example --invert-opt {example.name}={example.default}" if example else ""
            raise UsageError(f"--invert-opt {shown(pair)} is not KEY=VALUE{hint}")
        values[key] = raw
    return values

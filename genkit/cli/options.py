"""The options shared by the commands that train, and parsing of ``KEY=VALUE`` component options."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from genkit.components.recipe import DEFAULT_RECIPE
from genkit.components.registry import SINGULAR
from genkit.config import DataSpec, TrainSpec, setting_metadata, training_settings
from genkit.errors import GenkitError, UsageError, shown
from genkit.options import ANY, FLAG, TEXT, Option, convert

#: every training setting (``TrainSpec``'s fields and their metadata)
SETTINGS = training_settings()
#: the word in :func:`command_options`' list that stands for every training setting, in ``TrainSpec``'s order
TRAINING_SETTINGS = "SETTINGS"


def setting_option(name: str, help: str = "") -> tuple[Any, Any]:
    """The flag of a training setting, from its metadata: None by default where a model may give its own.

    A number is read by the one converter, so a bad one (``--min-steps 1.5``) is one line naming the flag.
    """
    option = SETTINGS[name]
    help = help or option.help
    parser = {"parser": _reader(option)} if option.type in (int, float) else {}
    if setting_metadata(TrainSpec, name)["per_model"]:
        return Optional[option.type], typer.Option(None, option.flag, help=help, show_default=False, **parser)
    return option.type, typer.Option(option.default, option.flag, help=help, **parser)


class FlagRefused(GenkitError):
    """A setting's flag refused while the command line is parsed: a ``UsageError``'s line and exit code 2, but
    not a ``ValueError``, which the parser would wrap in a box of its own."""

    exit_code = 2


def _reader(option: Option) -> Callable[[Any], Any]:
    def read(text: Any) -> Any:
        try:
            return convert(option, text, FLAG)
        except UsageError as exc:
            raise FlagRefused(str(exc)) from None

    return read


#: name -> (annotation, Typer option) of the options shared by every command that trains (``train``, ``sweep``)
SHARED: dict[str, tuple[Any, Any]] = {
    "model": (str, typer.Option(DEFAULT_RECIPE.model, "--model", "-m", help="Model name (see `genkit plugins`).")),
    "data": (str, typer.Option(DEFAULT_RECIPE.dataset, "--data", "-d", help="Dataset name (see `genkit plugins`).")),
    "conditioner": (str, typer.Option(DEFAULT_RECIPE.conditioner, "--conditioner", help="Conditioner name.")),
    "loss": (Optional[str], typer.Option(None, "--loss", show_default=False,
                                         help=f"Loss name (default: the model's own loss, else {DEFAULT_RECIPE.loss}).")),
    **{name: setting_option(name) for name in SETTINGS},
    "image_size": (Optional[str], typer.Option(None, "--image-size", help="S or HxW (default: the dataset's own size).")),
    "limit": (Optional[int], typer.Option(None, "--limit", help="Train on the first N images only.")),
    "hold_out": (Optional[list[str]], typer.Option(
        None, "--hold-out", help='Leave out of training every image with all of these attributes, e.g. '
                                 '"shape::circle+color::red" (repeatable; validation and test keep them).')),
    "root": (Optional[Path], typer.Option(None, "--root", help=setting_metadata(DataSpec, "root")["help"])),
    "tensorboard": (Optional[bool], typer.Option(
        None, "--tensorboard/--no-tensorboard", help="Write TensorBoard event files into each run folder (default: "
                                                     "when the tensorboard package is installed; --tensorboard fails "
                                                     "without it).")),
    "model_opt": (Optional[list[str]], typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable).")),
    "loss_opt": (Optional[list[str]], typer.Option(None, "--loss-opt", help="Loss option KEY=VALUE (repeatable).")),
    "cond_opt": (Optional[list[str]], typer.Option(None, "--conditioner-opt", help="Conditioner option KEY=VALUE.")),
    "data_opt": (Optional[list[str]], typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE (e.g. count=2000).")),
}


def command_options(names: str, **own: tuple[Any, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``ctx`` and the options ``names`` (space-separated, in ``--help``'s order): each from
    :data:`SHARED`, or from ``own`` (``name=(annotation, typer.Option(...))``) for the command's own.
    The word ``SETTINGS`` stands for every training setting not named elsewhere in ``names`` (``own`` may
    word one for its command), so every command that trains takes each one, a new setting included.

    The command is written ``def cmd(ctx: typer.Context, **given)``; Typer reads the options from the
    signature this sets (``__signature__``), so the shared ones are declared once for every command.
    """
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        words = names.split()
        if TRAINING_SETTINGS in words:
            at = words.index(TRAINING_SETTINGS)
            words[at:at + 1] = [s for s in SETTINGS if s not in words]
        for name in words:
            annotation, default = own[name] if name in own else SHARED[name]
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
        command.__signature__ = inspect.Signature(params, return_annotation=None)
        return command

    return decorate


def settings_given(given: dict[str, Any]) -> dict[str, Any]:
    """The training settings among a command's option values, as :func:`genkit.plan_run` keywords."""
    return {name: value for name, value in given.items() if name in SETTINGS}


#: the generic ``KEY=VALUE`` flag of each component kind
OPTION_FLAGS = {"models": "--model-opt", "conditioners": "--conditioner-opt", "losses": "--loss-opt",
                "datasets": "--data-opt"}
#: plan_run's keyword for each component kind's options
PLAN_KEYWORD = {"models": "model_options", "conditioners": "conditioner_options", "losses": "loss_options",
                "datasets": "data_options"}


def component_options(model_opt: Optional[list[str]], loss_opt: Optional[list[str]], cond_opt: Optional[list[str]],
                      data_opt: Optional[list[str]], flags: dict[str, dict[str, Any]] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """The ``*_options`` keyword arguments of :func:`genkit.plan_run` from the CLI's flags.

    ``flags`` are the components' own declared flags (``{kind: {option: value}}``, see
    :mod:`genkit.cli.component_flags`); an option given both as its flag and as
    ``--model-opt``/``--conditioner-opt``/``--loss-opt``/``--data-opt`` is refused, since one of the
    two values would be dropped without a word.
    """
    options = {"model_options": parse_options(model_opt, "--model-opt"),
               "conditioner_options": parse_options(cond_opt, "--conditioner-opt"),
               "loss_options": parse_options(loss_opt, "--loss-opt"),
               "data_options": parse_options(data_opt, "--data-opt")}
    for kind, values in (flags or {}).items():
        given = options[PLAN_KEYWORD[kind]]
        twice = sorted(set(values) & set(given))
        if twice:
            flag = OPTION_FLAGS[kind]
            raise UsageError(f"{SINGULAR[kind]} option {twice[0]} is given twice, by "
                             f"its own flag and by {flag} {twice[0]}={shown(json.dumps(given[twice[0]]), quote=False)};"
                             " give it once")
        given.update(values)
    return options


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["latent_dim=16", "channels=[16,32]"]`` to ``{"latent_dim": 16, "channels": [16, 32]}``.

    Values are read as JSON when they parse (numbers, lists, true/false), else kept as strings.
    Dashes in keys become underscores, so ``latent-dim=16`` works too.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"{flag} {shown(pair)} is not KEY=VALUE; for example {flag} latent_dim=16")
        options[key] = convert(ANY, raw, TEXT)
    return options

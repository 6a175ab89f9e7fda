"""The options shared by the commands that train, and parsing of ``KEY=VALUE`` component options."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from genkit.components.recipe import DEFAULT_RECIPE
from genkit.components.registry import SINGULAR
from genkit.config import TrainSpec
from genkit.errors import UsageError, shown
from genkit.options import ANY, TEXT, convert

_D = TrainSpec()


class TrainingOptions:
    """The Typer options shared by every command that trains (``train``, ``sweep``)."""

    MODEL = typer.Option(DEFAULT_RECIPE.model, "--model", "-m", help="Model name (see `genkit plugins`).")
    DATA = typer.Option(DEFAULT_RECIPE.dataset, "--data", "-d", help="Dataset name (see `genkit plugins`).")
    CONDITIONER = typer.Option(DEFAULT_RECIPE.conditioner, "--conditioner", help="Conditioner name.")
    LOSS = typer.Option(None, "--loss", help=f"Loss name (default: the model's own loss, else {DEFAULT_RECIPE.loss}).",
                        show_default=False)
    BATCH_SIZE = typer.Option(None, "--batch-size", show_default=False,
                              help=f"Images per optimiser step (global: split over processes; default "
                                   f"{_D.batch_size}, or the model's own).")
    LR = typer.Option(None, "--lr", show_default=False,
                      help=f"Adam learning rate (default {_D.lr:g}, or the model's own).")
    EMA = typer.Option(None, "--ema", show_default=False,
                       help="Decay of the weights' moving average that sampling uses, e.g. 0.999 (default 0: off, "
                            "or the model's own).")
    IMAGE_SIZE = typer.Option(None, "--image-size", help="S or HxW (default: the dataset's own size).")
    SEED = typer.Option(_D.seed, "--seed", help="Seed for weights, shuffling and noise.")
    DEVICE = typer.Option(_D.device, "--device", help="auto, cpu, cuda or cuda:N.")
    PRECISION = typer.Option(_D.precision, "--precision", help="fp32, or bf16 autocast on CUDA.")
    LIMIT = typer.Option(None, "--limit", help="Train on the first N images only.")
    HOLD_OUT = typer.Option(None, "--hold-out",
                            help='Leave out of training every image with all of these attributes, e.g. '
                                 '"shape::circle+color::red" (repeatable; validation and test keep them).')
    ROOT = typer.Option(None, "--root", help="Folder holding the dataset's files.")
    DATA_IN = typer.Option(_D.data_in, "--data-in", help="auto, ram, gpu, or disk (stream from the cache).")
    WORKERS = typer.Option(_D.workers, "--workers", help="DataLoader workers when streaming from disk.")
    LOG_EVERY = typer.Option(_D.log_every, "--log-every", help="Steps between progress updates (host syncs).")
    TENSORBOARD = typer.Option(None, "--tensorboard/--no-tensorboard",
                               help="Write TensorBoard event files into each run folder (default: when the "
                                    "tensorboard package is installed; --tensorboard fails without it).")
    MODEL_OPT = typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable).")
    LOSS_OPT = typer.Option(None, "--loss-opt", help="Loss option KEY=VALUE (repeatable).")
    COND_OPT = typer.Option(None, "--conditioner-opt", help="Conditioner option KEY=VALUE.")
    DATA_OPT = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE (e.g. count=2000).")


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

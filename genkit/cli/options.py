"""Parsing of repeated ``KEY=VALUE`` component options."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from genkit.config import TrainSpec
from genkit.errors import UsageError, shown

_D = TrainSpec()


class TrainingOptions:
    """The Typer options shared by every command that trains (``train``, ``sweep``)."""

    MODEL = typer.Option("cvae", "--model", "-m", help="Model name (see `genkit plugins`).")
    DATA = typer.Option("shapes", "--data", "-d", help="Dataset name (see `genkit plugins`).")
    CONDITIONER = typer.Option("tiled-onehot", "--conditioner", help="Conditioner name.")
    BATCH_SIZE = typer.Option(_D.batch_size, "--batch-size",
                              help="Images per optimiser step (global: split over processes).")
    LR = typer.Option(_D.lr, "--lr", help="Adam learning rate.")
    LATENT_DIM = typer.Option(None, "--latent-dim", help="Size of z (model default 32).")
    PRIOR = typer.Option(None, "--prior", help="standard N(0, I) (default) or learned p(z|x) (Sohn et al.).")
    IMAGE_SIZE = typer.Option(None, "--image-size", help="S or HxW, divisible by 4 (default: the dataset's, 64).")
    CONDITIONING = typer.Option(None, "--conditioning", help="fused (exact, fast) or naive (literal tiling).")
    SEED = typer.Option(_D.seed, "--seed", help="Seed for weights, shuffling and noise.")
    DEVICE = typer.Option(_D.device, "--device", help="auto, cpu, cuda or cuda:N.")
    PRECISION = typer.Option(_D.precision, "--precision", help="fp32, or bf16 autocast on CUDA.")
    LIMIT = typer.Option(None, "--limit", help="Train on the first N images only.")
    ROOT = typer.Option(None, "--root", help="Folder holding the dataset's files.")
    DATA_IN = typer.Option(_D.data_in, "--data-in", help="auto, ram, gpu, or disk (stream from the cache).")
    WORKERS = typer.Option(_D.workers, "--workers", help="DataLoader workers when streaming from disk.")
    LOG_EVERY = typer.Option(_D.log_every, "--log-every", help="Steps between progress updates (host syncs).")
    MODEL_OPT = typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable).")
    LOSS_OPT = typer.Option(None, "--loss-opt", help="Loss option KEY=VALUE (repeatable).")
    COND_OPT = typer.Option(None, "--conditioner-opt", help="Conditioner option KEY=VALUE.")
    DATA_OPT = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE (e.g. count=2000).")


def component_options(model_opt: Optional[list[str]], loss_opt: Optional[list[str]], cond_opt: Optional[list[str]],
                      data_opt: Optional[list[str]], *, latent_dim: Optional[int] = None,
                      prior: Optional[str] = None, conditioning: Optional[str] = None,
                      beta: Optional[float] = None) -> dict[str, dict[str, Any]]:
    """The ``*_options`` keyword arguments of :func:`genkit.plan_run` from the CLI's flags.

    The named flags (``--latent-dim``, ``--prior``, ``--conditioning``, ``--beta``) win over the
    same keys given as ``--model-opt``/``--conditioner-opt``/``--loss-opt``.
    """
    model_options = parse_options(model_opt, "--model-opt")
    cond_options = parse_options(cond_opt, "--conditioner-opt")
    loss_options = parse_options(loss_opt, "--loss-opt")
    for target, key, value in ((model_options, "latent_dim", latent_dim), (model_options, "prior", prior),
                               (cond_options, "mode", conditioning), (loss_options, "beta", beta)):
        if value is not None:
            target[key] = value
    return {"model_options": model_options, "conditioner_options": cond_options, "loss_options": loss_options,
            "data_options": parse_options(data_opt, "--data-opt")}


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
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options

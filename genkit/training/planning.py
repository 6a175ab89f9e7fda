"""Planning a run: check every choice and produce its config before anything is written."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Collection

from genkit import __version__
from genkit.components.build import (TRAINING_BYTES_PER_PARAMETER, build_components, check_options, json_options,
                                     model_fits, resolve)
from genkit.components.limits import check_seed
from genkit.components.loading import component_origin, registry
from genkit.components.recipe import DEFAULT_RECIPE
from genkit.config import ComponentSpec, DataSpec, RunConfig, TrainSpec, planned_epochs, training_settings
from genkit.data.prepare import open_source, resolve_root
from genkit.errors import UsageError
from genkit.options import check_bounds, check_type
from genkit.runtime.distributed import resolve_device
from genkit.training.trial import check_pairing
from genkit_datasets.preprocess import parse_image_size



def plan_run(model: str = DEFAULT_RECIPE.model, data: str = DEFAULT_RECIPE.dataset,
             conditioner: str = DEFAULT_RECIPE.conditioner, loss: str | None = None,
             *, model_options: dict | None = None, conditioner_options: dict | None = None,
             loss_options: dict | None = None, data_options: dict | None = None, root: str | Path | None = None,
             image_size: Any = None, limit: int | None = None, hold_out: list[str] | None = None,
             say: Callable[[str], None] | None = None, **train: Any) -> RunConfig:
    """Check every choice and return the run's config; nothing is written or built yet.

    The dataset is scanned (its annotation files read, no image decoded), so the config holds
    the attribute names and the source's fingerprint from the start. ``loss`` defaults to the
    model's own (its ``default_loss``), else the default recipe's; training settings not given
    (None) take the model's ``train_defaults``, else :class:`TrainSpec`'s. Raises
    :class:`UsageError` for an unknown name or option, a missing data folder, a value out of
    range, an image size the model cannot take, or a loss that cannot train the model, before
    any file or cache is touched. ``hold_out`` lists attribute combinations (``"a+b"``) whose
    training images are left out (:mod:`genkit.data.holdout`); they are checked against the dataset's
    labels here. The epochs are raised until the run takes ``min_steps`` optimizer steps (see
    :func:`plan_epochs`; ``epochs`` given without ``min_steps`` means exactly those), and ``say``, when
    given, hears the one line saying so once every check has passed (a refusal stays its one line).
    """
    known = {f.name for f in fields(TrainSpec)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise UsageError(f"unknown training setting {unknown[0]!r}; settings are: {', '.join(sorted(known))}")
    chosen_model = registry("models").get(model)
    loss = loss or default_loss(model)
    given = {k: v for k, v in train.items() if v is not None}
    if "epochs" in given and "min_steps" not in given:  # --epochs N alone trains exactly N
        given["min_steps"] = 0
    spec = TrainSpec(**{**chosen_model.train_defaults, **given})
    check_training_settings(spec)
    if limit is not None:
        _positive("--limit", limit)

    source, data_resolved = open_source(data, data_options)
    size = parse_image_size(image_size) if image_size is not None else tuple(source.default_image_size)
    cond_spec = resolve("conditioners", ComponentSpec(conditioner, {**DEFAULT_RECIPE.options_for("conditioner", conditioner),
                                                                    **(conditioner_options or {})}))
    model_spec = resolve("models", ComponentSpec(model, {**DEFAULT_RECIPE.options_for("model", model),
                                                         **(model_options or {})}))
    loss_spec = resolve("losses", ComponentSpec(loss, {**DEFAULT_RECIPE.options_for("loss", loss), **(loss_options or {})}))
    index = source.scan(resolve_root(data, source, root))
    held_out = plan_hold_out(hold_out, index, limit)
    notes: list[str] = []
    spec = plan_epochs(spec, epoch_steps(training_images(index, limit, held_out), spec.batch_size), notes.append)
    config = RunConfig(
        data=DataSpec(name=data, options=json_options(data_resolved, data), root=absolute_root(root), image_size=size,
                      limit=limit, attribute_names=list(index.attribute_names), cache_fingerprint=index.fingerprint,
                      exclusive_groups=list(index.exclusive_groups), hold_out=held_out),
        conditioner=cond_spec, model=model_spec, loss=loss_spec,
        train=spec,
        genkit_version=__version__,
        plugins={section: component_origin(kind, name) for section, kind, name in (
            ("data", "datasets", data), ("conditioner", "conditioners", conditioner), ("model", "models", model),
            ("loss", "losses", loss))},
    )
    check_training_fits(config)
    for note in notes if say is not None else ():
        say(note)
    return config


def plan_hold_out(hold_out: list[str] | None, index, limit: int | None) -> list[str]:
    """The checked held-out combinations (:mod:`genkit.data.holdout`), against the training split's labels."""
    from genkit.data.holdout import check_training_left, parse_hold_out

    combinations = parse_hold_out(hold_out, index.attribute_names, index.exclusive_groups)
    train = index.splits.get("train")
    if combinations and train is not None:
        check_training_left(combinations, index.attribute_names, index.attributes[train[:limit]])
    return combinations


def training_images(index, limit: int | None, hold_out: list[str]) -> int:
    """How many images a run trains on: the training split's first ``limit``, less the held-out combinations."""
    from genkit.data.holdout import held_out_rows

    train = index.splits.get("train")
    if train is None:
        return 0
    rows = train[:limit]
    if not hold_out:
        return len(rows)
    return int((~held_out_rows(index.attributes[rows], index.attribute_names, hold_out)).sum())


def epoch_steps(images: int, batch_size: int) -> int:
    """Optimizer steps per epoch: the last batch may be short (under torchrun too: each process's share is
    padded to a whole multiple of the processes, which the global batch is)."""
    return math.ceil(images / batch_size)


def plan_epochs(spec: TrainSpec, steps: int, say: Callable[[str], None] | None = None) -> TrainSpec:
    """``spec`` with its epochs raised by ``min_steps`` (:func:`genkit.config.planned_epochs`) for epochs of
    ``steps`` optimizer steps; a raise is told to ``say`` in one line."""
    epochs = planned_epochs(spec.epochs, spec.min_steps, steps)
    if epochs == spec.epochs:
        return spec
    if say is not None:
        say(f"min_steps {spec.min_steps} raised the epochs from {spec.epochs} to {epochs} ({steps} "
            f"step{'s' if steps != 1 else ''} each); --epochs {spec.epochs} trains exactly {spec.epochs}")
    return replace(spec, epochs=epochs)


def steps_per_epoch(config: RunConfig) -> int:
    """The optimizer steps of one epoch of ``config``'s run, from its dataset's index (no image decoded)."""
    data = config.data
    source, _ = open_source(data.name, data.options, saved=True)
    index = source.scan(resolve_root(data.name, source, data.root))
    return epoch_steps(training_images(index, data.limit, list(data.hold_out)), config.train.batch_size)


def default_loss(model: str) -> str:
    """The loss a model trains with when none is named: its own (``default_loss``), else the recipe's."""
    return registry("models").get(model).default_loss or DEFAULT_RECIPE.loss


def absolute_root(root: str | Path | None) -> str | None:
    """The data folder as an absolute path, so a run resumes from any working directory."""
    return str(Path(root).expanduser().resolve()) if root else None


def check_training_fits(config: RunConfig) -> None:
    """The model's own checks (image size, widths), its memory, and whether the loss can train it, on the
    meta device: nothing allocated.

    A model that cannot be built on the meta device is built once for real, as a dry run.
    """
    check_options(config)
    if model_fits(config, TRAINING_BYTES_PER_PARAMETER, batch_size=config.train.batch_size) is None:
        build_components(config)
    check_pairing(config)


#: the command-line flag of each training setting, for messages about a value given as a flag
SETTING_FLAGS = {name: option.flag for name, option in training_settings().items()}


def check_training_settings(spec: TrainSpec, source: str | Path | None = None, given: Collection[str] = ()) -> None:
    """Every training setting in its bounds and choices (``TrainSpec``'s metadata); a :class:`UsageError`
    naming the first that is not.

    A setting is named by its flag (``--epochs``), or, when it was read from the config file
    ``source`` and not among ``given`` (the settings the command line changed), as that file's
    ``train.epochs``: the message points at where the value came from.
    """
    def name(setting: str) -> str:
        if source is None or setting in given:
            return SETTING_FLAGS[setting]
        return f"{source}: train.{setting}"

    for setting, option in training_settings().items():
        value = getattr(spec, setting)
        called = name(setting)
        check_type(option, value, option.label if called == option.flag and option.label else called)
        if option.bounds is not None:
            check_bounds(option, value, option.label if called == option.flag and option.label else called)
        if option.choices is not None and value not in option.choices:
            raise UsageError(f"{called} {value!r} is not known; choose one of: {', '.join(option.choices)}")
    check_seed(spec.seed, name("seed"))
    resolve_device(spec.device)


def _positive(what: str, value: int) -> None:
    if value is None or value < 1:
        raise UsageError(f"{what} {value} must be a positive integer")

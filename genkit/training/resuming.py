"""Continuing a stopped run: ``genkit train --resume DIR`` and :func:`genkit.resume`.

A resume may change the settings that do not change what the checkpoint means (more epochs, a
lower learning rate after a divergence, a data folder that moved, the workers, where the data
lives, the device). They are checked like a new run's, written into the run's ``config.json``,
and logged in ``resumes.jsonl``; everything else the run keeps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from genkit.config import RunConfig, resumable_settings
from genkit.errors import UsageError
from genkit.runtime import distributed
from genkit.sampling.run import Run
from genkit.store.files import WriteError, write_text_atomic
from genkit.store.run_folder import CONFIG_FILE, RESUMES_FILE
from genkit.training.checkpoints import write_failed
from genkit.training.loop import Observer, notify
from genkit.training.planning import (absolute_root, check_training_fits, check_training_settings, plan_epochs,
                                      steps_per_epoch)
from genkit.training.trainer import Trainer
from genkit_datasets.cache import Progress

#: the settings ``resume`` may change: none of them changes what the checkpoint means
RESUMABLE_SETTINGS = resumable_settings()


def resume(run_dir: str | Path, epochs: int | None = None, observer: Observer | None = None,
           cache_dir: str | Path | None = None, data_progress: Progress | None = None, *,
           root: str | Path | None = None, tensorboard: bool | None = None, **settings: Any) -> Run | None:
    """Continue the run in ``run_dir`` from its latest checkpoint.

    The settings that do not change what the checkpoint means may be changed: ``epochs`` (train
    further; given without ``min_steps``, exactly that many, as for a new run), ``root`` (the data
    moved), and as keywords every other setting ``TrainSpec`` marks resumable (``lr`` to continue a
    diverged run more gently, ``min_steps``, ``grad_clip``, ``workers``, ``data_in``, ``device``; None
    leaves one as it is). The new values go into the run's ``config.json`` and each resume is
    logged in ``resumes.jsonl`` (step, time, what changed from what). Returns None when the run
    has already finished its epochs (nothing to do). ``tensorboard`` is :func:`genkit.train`'s: the
    TensorBoard curves continue from the checkpoint's step.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist; pass the folder `genkit train` wrote")
    config_path = run_dir / CONFIG_FILE
    config = RunConfig.load(config_path)
    wanted = {"epochs": epochs, "root": absolute_root(root), **settings}
    notes: list[str] = []
    changes = resume_changes(config, {k: v for k, v in wanted.items() if v is not None}, source=config_path,
                             say=notes.append)
    config = apply_changes(config, changes)
    try:
        check_training_fits(config)
    except UsageError as exc:
        raise UsageError(f"{config_path}: {exc}") from None
    trainer = Trainer(config, run_dir, observer, cache_dir, data_progress, resume=True, tensorboard=tensorboard)
    for note in notes:  # said once the resume is sure to go ahead: a refusal stays its one line
        notify(observer, "on_message", note)
    if trainer.state.epoch > config.train.epochs:
        distributed.shutdown(trainer.world)
        return None
    if changes:
        try:
            record_resume(trainer, changes)
        except WriteError as exc:
            raise write_failed(trainer.out, exc) from None
    return trainer.run()


def resume_changes(config: RunConfig, wanted: dict[str, Any], source: str | Path | None = None,
                   say: Callable[[str], None] | None = None) -> dict[str, tuple[Any, Any]]:
    """``{setting: (old, new)}`` for the settings ``wanted`` changes; each new value is checked first.

    A bad value kept from the config file ``source`` is named as that file's setting, not as a flag.
    ``epochs`` without ``min_steps`` means exactly those epochs (``min_steps`` becomes 0); a
    ``min_steps`` given raises the epochs as planning does (:func:`genkit.training.planning.plan_epochs`),
    the raise told to ``say``.
    """
    unknown = sorted(set(wanted) - set(RESUMABLE_SETTINGS))
    if unknown:
        raise UsageError(f"{unknown[0]!r} cannot be changed when resuming; what can: {', '.join(RESUMABLE_SETTINGS)}")
    wanted = dict(wanted)
    if "epochs" in wanted and "min_steps" not in wanted:
        wanted["min_steps"] = 0
    current = {**asdict(config.train), "root": config.data.root}
    train = replace(config.train, **{k: v for k, v in wanted.items() if k != "root"})
    check_training_settings(train, source=source, given=set(wanted))
    if wanted.get("min_steps"):  # the epochs it asks for, from the data's index (the root as changed)
        root = wanted.get("root", config.data.root)
        steps = steps_per_epoch(replace(config, data=replace(config.data, root=root), train=train))
        wanted["epochs"] = plan_epochs(train, steps, say).epochs
    return {k: (current[k], v) for k, v in wanted.items() if current[k] != v}


def apply_changes(config: RunConfig, changes: dict[str, tuple[Any, Any]]) -> RunConfig:
    train = {k: new for k, (_, new) in changes.items() if k != "root"}
    data = config.data if "root" not in changes else replace(config.data, root=changes["root"][1])
    return replace(config, data=data, train=replace(config.train, **train))


def record_resume(trainer: "Trainer", changes: dict[str, tuple[Any, Any]]) -> None:
    """One line in ``resumes.jsonl`` and one message: the step resumed at and each changed setting."""
    described = ", ".join(f"{k.replace('_', '-')} {old} -> {new}" for k, (old, new) in changes.items())
    notify(trainer.observer, "on_message", f"changed on resume: {described}")
    if not trainer.world.is_main:
        return
    record = {"step": trainer.state.step, "epoch": trainer.state.epoch,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "changed": {k: {"from": old, "to": new} for k, (old, new) in changes.items()}}
    path = trainer.out / RESUMES_FILE
    lines = path.read_text() if path.is_file() else ""
    write_text_atomic(path, lines + json.dumps(record) + "\n")

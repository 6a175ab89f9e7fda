"""TensorBoard event files for every run, written with ``torch.utils.tensorboard`` when it is installed.

The run folder is the TensorBoard run: ``tensorboard --logdir runs`` lists each run folder by its
path and overlays their curves (a sweep's points side by side, each with its settings as
hparams). Tags mirror the run folder's own records, so one name means one thing everywhere:

* ``step/<key>``: each ``steps.jsonl`` record (every loss term of the logged window,
  ``images_per_s``, ``data_wait_s``) at its step;
* ``epoch/<key>``: each ``metrics.jsonl`` record (``train_<term>``, ``val_<term>``,
  ``images_per_s``, ``seconds``) at the epoch's last step, with the epoch's sample grid as the
  image ``samples``;
* ``config``: the resolved ``config.json`` as text; every setting by its ``config.json`` path as
  hparams (``loss.options.beta``, ``train.lr``);
* ``evaluation/<metric>`` in the sub-run ``evaluation_<split>``, written by ``genkit evaluate``
  and ``genkit sweep`` at the run's last step (metrics a model cannot have, ``null``, are left out).

A resumed run continues its curves: the new event file starts with TensorBoard's purge marker at
the checkpoint's step, so anything an earlier session logged past that step is dropped by the
reader, and the checkpoint step's own records are written again from the run's records. A run
that had no event files yet (trained without TensorBoard) gets its history written from
``metrics.jsonl`` and ``steps.jsonl`` first. ``metrics.jsonl`` stays the record: a failed
TensorBoard write warns once and logging stops, the training does not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from genkit.config import RunConfig, flat_settings
from genkit.errors import UsageError
from genkit.store.run_folder import METRICS_FILE, epoch_grid_file, finite_numbers, read_jsonl

INSTALL = 'pip install "genkit-cvae[tensorboard]"'
EVENT_FILES = "events.out.tfevents.*"
#: settings left out of the hparams: machine-specific or too long to be a column
NOT_HPARAMS = ("data.root", "data.attribute_names", "data.cache_fingerprint", "data.exclusive_groups",
               "genkit_version", "format")
#: numbers of an evaluation result that describe the evaluation, not the run
EVALUATION_SETTINGS = ("images", "sigma", "samples", "seed")


def unavailable() -> str | None:
    """Why TensorBoard logs cannot be written here (the import error), or None when they can."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except Exception as exc:  # ImportError, or a broken installation raising anything on import
        return f"{type(exc).__name__}: {exc}"
    return None


def wanted(asked: bool | None) -> bool:
    """Whether to write TensorBoard logs: ``None`` when the package is installed, ``False`` never,
    ``True`` always (a :class:`UsageError` saying how to install it when it is missing)."""
    if asked is False:
        return False
    reason = unavailable()
    if reason is not None and asked:
        raise UsageError(f"--tensorboard needs the tensorboard package, which cannot be imported ({reason}); "
                         f"install it with {INSTALL} (or pip install tensorboard), or leave out --tensorboard")
    return reason is None


def has_event_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob(EVENT_FILES))


def hparams(config: RunConfig) -> dict[str, Any]:
    """The settings TensorBoard's HPARAMS tab shows for a run: scalars by their config.json path."""
    return {k: v for k, v in flat_settings(config).items() if k not in NOT_HPARAMS and v is not None}


class _Events:
    """A ``SummaryWriter`` whose first failed write warns once and stops logging (the run goes on)."""

    def __init__(self, folder: Path, purge_step: int | None, warn: Callable[[str], None]):
        from torch.utils.tensorboard import SummaryWriter

        self.warn, self.writer = warn, None
        try:
            _after_existing_files(folder)
            self.writer = SummaryWriter(str(folder), purge_step=purge_step, max_queue=100, flush_secs=30)
        except OSError as exc:
            warn(f"warning: no TensorBoard logs ({exc.strerror or exc}: {exc.filename or folder}); metrics.jsonl "
                 "and steps.jsonl still record the run")

    def write(self, fn: Callable[[Any], None]) -> None:
        if self.writer is None:
            return
        try:
            fn(self.writer)
        except (OSError, RuntimeError, ValueError) as exc:
            writer, self.writer = self.writer, None
            self.warn(f"warning: TensorBoard logging stopped ({type(exc).__name__}: {exc}); metrics.jsonl and "
                      "steps.jsonl still record the run")
            try:
                writer.close()
            except Exception:
                pass

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.write(lambda w: [w.add_scalar(f"{prefix}/{k}", v, step) for k, v in values.items()])

    def flush(self) -> None:
        self.write(lambda w: w.flush())

    def close(self) -> None:
        self.write(lambda w: w.close())
        self.writer = None


class TensorBoardLog:
    """An observer of the training loop (see :class:`genkit.training.loop.Observer`) writing the run's
    events into its folder; the Trainer adds it beside the caller's observer in the main process."""

    def __init__(self, run_dir: Path, config: RunConfig, step: int, epochs_log: list[dict], steps_log: list[dict],
                 warn: Callable[[str], None] = lambda text: None):
        self.run_dir = Path(run_dir)
        # Written before (a resume): the reader drops what came after the checkpoint, and its own
        # step is written again below. Never written (logging was off): the whole history.
        start = step if has_event_files(self.run_dir) else 0
        # Every session starts with the marker: the reader takes each one after the first as a restart.
        self.events = _Events(self.run_dir, purge_step=start, warn=warn)
        if start == 0:
            self._write_hparams(config)
        self.events.write(lambda w: w.add_text("config", _as_code(config.to_json()), step))
        for record in steps_log:
            if record["step"] >= start:
                self.on_step(0, 0, record)
        for record in epochs_log:
            if record["step"] >= start:
                self.on_epoch_end(record["epoch"], record)
        self.events.flush()

    def _write_hparams(self, config: RunConfig) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # Only the session's start, no experiment summary: TensorBoard then builds the table from
        # every run's hparams, so the runs of a sweep line up with whatever was varied.
        _, session_start, _ = hparams_summaries(hparams(config), {})
        self.events.write(lambda w: w.file_writer.add_summary(session_start, 0))

    def on_step(self, epoch: int, step: int, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.events.scalars("step", finite_numbers(record, skip=("step", "epoch_float")), record["step"])
            self.events.flush()  # logged windows are far apart; a crash then loses at most the last one

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        step = record["step"]
        self.events.scalars("epoch", finite_numbers(record, skip=("epoch", "step")), step)
        grid = epoch_grid_file(self.run_dir, epoch)
        if grid.is_file():
            self.events.write(lambda w: w.add_image("samples", _read_png(grid), step, dataformats="HWC"))
        self.events.flush()

    def close(self) -> None:
        self.events.close()


def log_evaluation(run_dir: str | Path, name: str, result: dict[str, Any],
                   warn: Callable[[str], None] = lambda text: None) -> Path:
    """``genkit evaluate``'s figures as the sub-run ``RUN/<name>`` at the run's last step; ``name`` is
    the evaluation file's stem (``evaluation_test``, or ``evaluation_test_guidance-2`` for one
    sweep point of a sampling option).

    Evaluating again replaces them (a purge at that step). Per-attribute accuracies go under
    ``attribute_accuracy/<name>``; nulls (a capability the model lacks) are left out.
    """
    run_dir = Path(run_dir)
    folder = run_dir / name
    try:
        records = read_jsonl(run_dir / METRICS_FILE)
        step = int(records[-1].get("step", 0)) if records else 0
    except (OSError, ValueError, AttributeError):  # a damaged metrics.jsonl: the figures still go in, at 0
        step = 0
    events = _Events(folder, purge_step=step, warn=warn)
    events.scalars("evaluation", finite_numbers(result, skip=EVALUATION_SETTINGS), step)
    per_attribute = result.get("per_attribute_accuracy")
    if isinstance(per_attribute, dict):
        events.scalars("attribute_accuracy", finite_numbers(per_attribute), step)
    events.close()
    return folder


def _as_code(text: str) -> str:
    """Markdown showing ``text`` verbatim (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def _read_png(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _after_existing_files(folder: Path) -> None:
    """Wait, if need be, until a new event file's name sorts after the folder's existing ones.

    Readers load a folder's event files in name order, and names start with the second they were
    opened in; a resume within the same second as the last file would otherwise sort by pid.
    """
    stamps = [p.name.split(".")[3] for p in folder.glob(EVENT_FILES) if p.name.count(".") > 3]
    newest = max((int(s) for s in stamps if s.isdigit()), default=0)
    wait = newest + 1 - time.time()
    if 0 < wait <= 1:  # (a clock set back is not waited for)
        time.sleep(wait)

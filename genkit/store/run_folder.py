"""The files of a run folder, by name, and the small readers for them.

A run folder holds ``config.json`` (everything needed to rebuild the run), ``model.safetensors``
(weights), ``metrics.jsonl`` (one record per epoch), ``steps.jsonl`` (one record per logged
step), ``samples/epoch_NNN.png`` with ``samples/rows.json``, ``loss_curve.png``,
``train_attributes.safetensors`` (the training attribute vectors, for sampling with
``rest="data"``), ``loss.safetensors`` (the loss's own state, when it has some), ``checkpoints/`` and, once evaluated, ``evaluation_<split>.json``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from genkit.errors import UsageError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: the loss's own state (a learned decoder σ), only for a loss that is a module with state
LOSS_WEIGHTS_FILE = "loss.safetensors"
METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"
SAMPLES_DIR = "samples"
ROWS_FILE = "rows.json"
LOSS_CURVE_FILE = "loss_curve.png"
#: the distinct training attribute vectors and their counts, for sampling with ``rest="data"``
TRAIN_ATTRIBUTES_FILE = "train_attributes.safetensors"
#: one line per resume that changed a setting: the step, the time, what changed from what
RESUMES_FILE = "resumes.jsonl"

#: keys of a step or epoch record that are bookkeeping, not loss terms
NOT_TERMS = frozenset({"step", "epoch", "epoch_float", "images_per_s", "seconds", "data_wait_s"})


def evaluation_file(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"evaluation_{split}.json"


def epoch_grid_file(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:03d}.png"


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a ``.jsonl`` file; none when it does not exist yet.

    A last line cut short (a crash or a full disk while it was written by another tool: it has no
    closing newline and is not JSON) is left out, as if it had never been written; any other
    line that is not a JSON object is a :class:`UsageError` naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); restore it or delete "
                         "it (its records are lost)") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or a number too long for Python to read
            if number == len(lines):  # the last line, without its newline: cut short while being written
                break
            reason = getattr(exc, "msg", None) or type(exc).__name__
            raise UsageError(f"{path}, line {number}: not a JSON record ({reason}); fix or delete that line") from None
        if not isinstance(record, dict) and number == len(lines):  # cut short to something like ``12``
            break
        if not isinstance(record, dict):
            raise UsageError(f"{path}, line {number}: a JSON {type(record).__name__}, not a record; fix or delete that "
                             "line")
        records.append(record)
    return records


def finite_numbers(record: dict, skip=()) -> dict[str, float]:
    """The finite numbers of a record: no flags, texts, lists, nulls (a capability the model lacks) or NaN."""
    return {k: float(v) for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def default_run_dir(model: str, data: str, base: str | Path = "runs") -> Path:
    """``runs/<model>-<data>-<time>``, with a suffix when that folder exists already."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{model}-{data}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(base) / f"{model}-{data}-{stamp}-{suffix}"
    return path

"""Run folders found under some paths and summarised from their JSON files (``genkit runs``).

Only ``config.json``, ``metrics.jsonl`` and ``evaluation_<split>.json`` are read: no torch, no
model, no weights, so a few hundred runs list in well under a second. A folder holding
``config.json`` is a run and is not searched further; any other folder is searched (hidden ones
skipped, :data:`MAX_DEPTH` levels down), so a sweep's runs are found under the sweep's folder.
Whatever cannot be summarised becomes a row with a ``problem``, never an exception: a folder
that is no genkit run (reported once, at the top of a subtree holding no run), one that cannot be
read, a damaged ``config.json`` (``broken``), or a run whose ``metrics.jsonl`` or evaluation file
is damaged (listed, with the problem).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genkit.config import RunConfig, flat_settings
from genkit.errors import UsageError
from genkit.store.run_folder import CONFIG_FILE, METRICS_FILE, finite_numbers

#: how many folder levels below a given path are searched for runs
MAX_DEPTH = 6
#: the evaluation shown when a run has several: the first split found in this order, then any other
SPLIT_PREFERENCE = ("test", "valid", "train")
#: numbers of an evaluation file that describe how it was made, not how good the run is
EVALUATION_SETTINGS = ("images", "sigma", "samples", "seed")
#: the sections a config.json needs to be taken for a genkit run's (then checked in full)
GENKIT_SECTIONS = ("data", "model", "loss")


@dataclass
class RunRow:
    """One folder found: a run's summary, or what is wrong with it."""

    path: Path
    #: ``ok`` (a run; ``problem`` may still note a damaged metrics or evaluation file), ``broken``
    #: (its config.json is unusable), ``not-a-run`` or ``unreadable``
    status: str = "ok"
    problem: str | None = None
    config: RunConfig | None = None
    epochs_done: int | None = None
    last_epoch: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    evaluation_split: str | None = None

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def headline(self) -> str:
        """The validation term the run is judged by: ``val_loss``, or the one its model or loss declared
        (``"headline"`` in metrics.jsonl)."""
        declared = self.last_epoch.get("headline")
        return f"val_{declared}" if isinstance(declared, str) and declared and declared != "loss" else "val_loss"

    @property
    def validation(self) -> dict[str, float]:
        """The last epoch's validation terms, the headline first."""
        terms = finite_numbers({k: v for k, v in self.last_epoch.items() if k.startswith("val_")})
        first = self.headline
        return dict(sorted(terms.items(), key=lambda kv: (kv[0] != first, kv[0])))

    def figures(self) -> dict[str, Any]:
        """The evaluation's headline figures (None where there is none, or the model lacks the capability)."""
        ev = self.evaluation or {}
        return {"attribute_ratio": _number(ev.get("relative_attribute_accuracy")),
                "weakest_attribute": ev.get("weakest_attribute") if isinstance(ev.get("weakest_attribute"), str)
                else None,
                "weakest_accuracy": _number(ev.get("min_attribute_accuracy")),
                "diversity_ratio": _number(ev.get("diversity_ratio")),
                "fd": _number(ev.get("fd"))}

    def to_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {"path": self.name, "status": self.status, "problem": self.problem}
        if self.config is None:
            return base
        c = self.config
        return {**base, "model": c.model.name, "loss": c.loss.name, "conditioner": c.conditioner.name,
                "data": c.data.name, "image_size": list(c.data.image_size), "epochs_done": self.epochs_done,
                "epochs_planned": c.train.epochs, "validation": self.validation, "headline": self.headline,
                "evaluation_split": self.evaluation_split, **self.figures()}


# -- finding and reading -----------------------------------------------------------------------

def find_runs(paths: list[str | Path]) -> list[RunRow]:
    """A row per run folder (or problem folder) under ``paths``; a path that is missing or a file
    is a :class:`UsageError` (checked for all of them before anything is read)."""
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root} does not exist; name the folders holding your runs: genkit runs PATH... "
                             "(the default is runs)")
        if not root.is_dir():
            raise UsageError(f"{root} is a file, not a folder; give the folder of a run or one holding runs")
    rows: list[RunRow] = []
    for root in roots:
        found = _search(root, MAX_DEPTH)
        if len(found) == 1 and found[0].path == root and found[0].status == "unreadable":
            raise UsageError(f"{root} {found[0].problem}; check its permissions")
        if len(found) == 1 and found[0].path == root and found[0].status == "not-a-run":
            found[0].problem = f"no run folder in it (none holds a {CONFIG_FILE})"
        rows += found
    return rows


def _search(folder: Path, depth: int) -> list[RunRow]:
    if (folder / CONFIG_FILE).is_file():
        return [summarise(folder)]
    try:
        with os.scandir(folder) as entries:
            subfolders = sorted(Path(e.path) for e in entries
                                if not e.name.startswith(".") and e.is_dir(follow_symlinks=True))
    except OSError as exc:
        return [RunRow(folder, "unreadable", f"cannot be read ({exc.strerror or exc})")]
    if depth == 0:
        return [RunRow(folder, "not-a-run", f"not searched further (more than {MAX_DEPTH} levels down)")]
    rows = [row for sub in subfolders for row in _search(sub, depth - 1)]
    if all(row.status == "not-a-run" for row in rows):  # no run anywhere below: one row says so
        return [RunRow(folder, "not-a-run", f"not a genkit run (no {CONFIG_FILE}"
                                            + (", and no run folder inside)" if subfolders else ")"))]
    return rows


def summarise(folder: Path) -> RunRow:
    """A run folder's row from its JSON files; every damage becomes the row's problem."""
    row = RunRow(folder)
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
    except OSError as exc:
        return RunRow(folder, "broken", f"{CONFIG_FILE} cannot be read ({exc.strerror or exc})")
    except (ValueError, UnicodeDecodeError) as exc:
        return RunRow(folder, "broken", f"{CONFIG_FILE} is damaged ({_first_line(exc)})")
    if not (isinstance(raw, dict) and all(isinstance(raw.get(k), dict) for k in GENKIT_SECTIONS)):
        return RunRow(folder, "not-a-run", f"not a genkit run (its {CONFIG_FILE} is not a genkit config)")
    try:
        row.config = RunConfig.from_dict(raw)
    except (UsageError, TypeError, KeyError) as exc:
        return RunRow(folder, "broken", f"{CONFIG_FILE} is damaged ({_first_line(exc)})")
    problems = []
    try:
        records = _read_records(folder / METRICS_FILE)
        row.epochs_done = len(records)
        row.last_epoch = records[-1] if records else {}
    except ValueError as exc:
        problems.append(str(exc))
    try:
        row.evaluation_split, row.evaluation = _read_evaluation(folder)
    except ValueError as exc:
        problems.append(str(exc))
    row.problem = "; ".join(problems) or None
    return row


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` file (none when it is missing); a ValueError naming the bad line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:  # one parse for the whole file; line by line only to say which line is damaged
        records = json.loads("[" + ",".join(line for _, line in lines) + "]")
    except ValueError:
        records = None
    for (number, line), record in zip(lines, records or [None] * len(lines)):
        if records is None:
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"{path.name} is damaged (line {number} is not JSON)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path.name} is damaged (line {number} is not a JSON object)")
    return records


def evaluation_files(folder: Path) -> dict[str, Path]:
    """``{split: path}`` of the folder's ``evaluation_<split>.json``, in :data:`SPLIT_PREFERENCE` order."""
    found = {p.name[len("evaluation_"):-len(".json")]: p for p in folder.glob("evaluation_*.json") if p.is_file()}
    order = [s for s in SPLIT_PREFERENCE if s in found] + sorted(s for s in found if s not in SPLIT_PREFERENCE)
    return {split: found[split] for split in order}


def _read_evaluation(folder: Path, split: str | None = None) -> tuple[str | None, dict[str, Any] | None]:
    files = evaluation_files(folder)
    if split is None:
        split = next(iter(files), None)
    if split is None or split not in files:
        return None, None
    try:
        result = json.loads(files[split].read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{files[split].name} is damaged ({_first_line(exc)})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{files[split].name} is damaged (not a JSON object)")
    return split, result


# -- sorting -----------------------------------------------------------------------------------

def _best_high(value: float | None) -> float | None:
    return None if value is None else -value


#: ``--sort`` key -> the value it sorts by, best first (None sorts last)
SORT_KEYS: dict[str, Callable[[RunRow], Any]] = {
    "name": lambda r: r.name,
    "model": lambda r: r.config.model.name,
    "loss": lambda r: r.config.loss.name,
    "data": lambda r: (r.config.data.name, tuple(r.config.data.image_size)),
    "epochs": lambda r: None if r.epochs_done is None else -r.epochs_done,
    "attribute_ratio": lambda r: _best_high(r.figures()["attribute_ratio"]),
    "weakest": lambda r: _best_high(r.figures()["weakest_accuracy"]),
    "diversity_ratio": lambda r: None if r.figures()["diversity_ratio"] is None
    else abs(1 - r.figures()["diversity_ratio"]),
    "fd": lambda r: r.figures()["fd"],
}


def sort_rows(rows: list[RunRow], key: str) -> list[RunRow]:
    """Runs sorted by ``key``, best first (lower losses and fd, higher attribute figures, a diversity
    ratio nearer 1, more epochs; names alphabetically), runs without the figure after them and
    problem folders last. Besides :data:`SORT_KEYS`, any ``val_<term>`` of a listed run sorts."""
    runs = [r for r in rows if r.config is not None]
    terms = sorted({k for r in runs for k in r.validation})
    if key in SORT_KEYS:
        pick = SORT_KEYS[key]
    elif key.startswith("val_") and (key in terms or not runs):
        pick = lambda r: r.validation.get(key)  # noqa: E731
    else:
        valid = [*SORT_KEYS, *terms] if terms else [*SORT_KEYS, "val_loss"]
        raise UsageError(f"--sort {key!r} is not a column; sort by one of: {', '.join(valid)}")
    present = sorted((r for r in runs if pick(r) is not None), key=pick)
    return present + [r for r in runs if pick(r) is None] + [r for r in rows if r.config is None]


# -- comparing two runs ------------------------------------------------------------------------

def load_for_diff(path: str | Path) -> RunRow:
    """One run folder for ``genkit runs diff``: a UsageError unless it is a readable genkit run."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give two run folders (see `genkit runs`)")
    if not (folder / CONFIG_FILE).is_file():
        raise UsageError(f"{folder} holds no {CONFIG_FILE}, so it is not a run folder; `genkit runs {folder}` "
                         "lists the runs under it")
    row = summarise(folder)
    if row.config is None:
        raise UsageError(f"{folder}: {row.problem}")
    return row


def diff_runs(a: RunRow, b: RunRow) -> dict[str, Any]:
    """The settings that differ and both runs' figures, side by side.

    ``settings``: ``[setting, a, b]`` by config.json path, only those that differ; ``metrics``:
    ``[metric, a, b]`` for epochs, every number of the last epoch's record and of an evaluation of
    the same split (the first both have) prefixed ``eval.``; ``split``: that split or None.
    """
    fa, fb = flat_settings(a.config), flat_settings(b.config)
    settings = [[k, fa.get(k), fb.get(k)] for k in _union(fa, fb) if fa.get(k) != fb.get(k)]
    metrics: list[list[Any]] = [["epochs", f"{a.epochs_done}/{a.config.train.epochs}",
                                 f"{b.epochs_done}/{b.config.train.epochs}"]]
    ea = finite_numbers(a.last_epoch, skip=("epoch",))
    eb = finite_numbers(b.last_epoch, skip=("epoch",))
    metrics += [[k, ea.get(k), eb.get(k)] for k in _union(ea, eb)]
    common = [s for s in evaluation_files(a.path) if s in evaluation_files(b.path)]
    split = common[0] if common else None
    if split is not None:
        va, vb = (_evaluation_or_nothing(r.path, split) for r in (a, b))
        na = finite_numbers(va, skip=EVALUATION_SETTINGS)
        nb = finite_numbers(vb, skip=EVALUATION_SETTINGS)
        metrics.append(["eval.weakest_attribute", va.get("weakest_attribute"), vb.get("weakest_attribute")])
        metrics += [[f"eval.{k}", na.get(k), nb.get(k)] for k in _union(na, nb)]
    return {"a": a.name, "b": b.name, "split": split, "settings": settings, "metrics": metrics}


def _evaluation_or_nothing(folder: Path, split: str) -> dict[str, Any]:
    try:
        return _read_evaluation(folder, split)[1] or {}
    except ValueError:  # damaged: the run's row says so
        return {}


def _union(first: dict, second: dict) -> list[str]:
    return list(first) + [k for k in second if k not in first]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

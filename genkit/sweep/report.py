"""What a sweep writes beside its runs: the table, the paper's Figures 3 and 4, and a plot.

* ``table.csv`` / ``table.md``: a row per evaluation (a run, at one point of the sampling options
  varied): the varied options, then the evaluation metrics, then the loss's own terms on the
  validation split at the last epoch (``val_<term>``); a metric the model cannot have is empty;
* ``figure3.png``: a row per evaluation, the same attribute sets (columns) and noise in each;
* ``figure4.png``: per run that can reconstruct (a posterior, or an invertible sampler), ground
  truth above its reconstruction; not written when no run can;
* ``mse_kl_vs_<option>.png``: evaluation MSE and KL against the first varied option, a line per
  combination of the others; ``samples_vs_<option>.png`` (attribute accuracy, diversity ratio,
  fd) instead when a run has no likelihood bounds;
* ``sweep.json``: every result in full.

It knows nothing of how the sweep was planned: it gets the evaluations, labelled.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genkit.evaluation.metrics import distinct_vectors
from genkit.sampling import capabilities
from genkit.sampling.reconstruction import can_reconstruct, reconstruct
from genkit.sampling.run import Run, open_run_data
from genkit.store.files import write_text_atomic
from genkit.store.images import labelled_grid, plot_against
from genkit_datasets.torch_dataset import CachedImageDataset

METRIC_COLUMNS = ("mse", "mse_per_pixel", "kl", "elbo", "cll", "attribute_accuracy", "classifier_accuracy",
                  "min_attribute_accuracy", "diversity", "diversity_ratio", "fd", "fd_floor",
                  "seen_conformity", "heldout_conformity", "edit_success", "edit_preservation", "edit_psnr")
FIGURE_COLUMNS = 8
FIGURE_SEED = 1234
LIKELIHOOD_PANELS = (("mse", "MSE per image (summed over pixels)"), ("kl", "KL per image (nats)"))
SAMPLE_PANELS = (("attribute_accuracy", "attribute accuracy of samples"), ("diversity_ratio", "diversity ratio"),
                 ("fd", "fd (classifier features)"))


@dataclass
class Evaluated:
    """One evaluation of a sweep: its label, the run's own label, the run, its sampling options, the row."""

    label: str
    run_label: str
    run: Run
    options: dict[str, Any]
    result: dict[str, Any]


def table_columns(varied_columns: list[str], results: list[dict[str, Any]]) -> list[str]:
    terms = sorted({k for r in results for k in r if k.startswith("val_")})
    return [*varied_columns, *METRIC_COLUMNS, *terms]


def write_outputs(out: Path, entries: list[Evaluated], varied_columns: list[str], split: str = "test",
                  cache_dir: str | Path | None = None) -> list[Path]:
    """Every file listed in the module docstring, into ``out``; returns the paths written."""
    results = [e.result for e in entries]
    names = table_columns(varied_columns, results)
    rows = [{k: r.get(k) for k in names} for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tables = {"table.csv": buffer.getvalue(), "table.md": markdown_table(rows, names, len(varied_columns)),
              "sweep.json": json.dumps(results, indent=1)}
    for name, text in tables.items():
        write_text_atomic(out / name, text)
    written = [out / name for name in tables]

    info = open_run_data(entries[0].run, cache_dir=cache_dir)
    dataset = CachedImageDataset(info.path, split, limit=256, in_memory=True)
    attribute_names = list(info.attribute_names)
    conditions = torch.stack(distinct_vectors(dataset.attributes, FIGURE_COLUMNS))
    samples = [e.run.images(conditions, e.run.noise(len(conditions), FIGURE_SEED), e.options, FIGURE_SEED)
               for e in entries]
    written.append(labelled_grid(samples, [e.label for e in entries],
                                 [short_label(v, attribute_names) for v in conditions], out / "figure3.png"))

    count = min(FIGURE_COLUMNS, len(dataset))
    truth = dataset.images_uint8()[:count].float() / 255
    grid_rows, grid_labels, seen = [], [], set()
    for entry in entries:
        if not can_reconstruct(entry.run.model):
            continue
        # a posterior's reconstructions do not depend on sampling options: one pair of rows per run
        posterior = capabilities.has(entry.run.model, "posterior")
        key = (id(entry.run), None if posterior else json.dumps(entry.options, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        label = entry.run_label if posterior else entry.label
        grid_rows += [truth, reconstruct(entry.run, truth, dataset.attributes[:count], options=entry.options)]
        grid_labels += [f"{label}\ntruth", f"{label}\nrecon"]
    if grid_rows:
        written.append(labelled_grid(grid_rows, grid_labels, None, out / "figure4.png"))

    first, others = varied_columns[0], varied_columns[1:]
    series: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for result in results:
        key = ", ".join(f"{c}={result[c]}" for c in others)
        series.setdefault(key, []).append((result[first], result))
    bounds = all(r.get("mse") is not None and r.get("kl") is not None for r in results)
    panels, stem = (LIKELIHOOD_PANELS, "mse_kl") if bounds else (SAMPLE_PANELS, "samples")
    written.append(plot_against(series, first, panels, out / f"{stem}_vs_{first}.png"))
    return written


def markdown_table(rows: list[dict[str, Any]], names: list[str], label_columns: int) -> str:
    head = "| " + " | ".join(names) + " |\n|" + "|".join("---:" for _ in names) + "|\n"
    body = "".join("| " + " | ".join(_fmt(r[k], i < label_columns) for i, k in enumerate(names)) + " |\n"
                   for r in rows)
    return head + body


def _fmt(value: Any, label: bool) -> str:
    if value is None:
        return "-"
    if label or not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if abs(value) < 1:
        return f"{value:.4f}"
    return f"{value:.1f}"


def short_label(vector: torch.Tensor, names: list[str]) -> str:
    """The attributes on in ``vector``, group prefixes dropped, wrapped to at most three short lines."""
    on = [n.split("::")[-1] for n, v in zip(names, vector.tolist()) if v > 0.5] or ["(none)"]
    lines = textwrap.wrap(" ".join(on), width=14)
    return "\n".join(lines[:3]) + ("…" if len(lines) > 3 else "")

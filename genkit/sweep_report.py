"""What a sweep writes beside its runs: the table, the paper's Figures 3 and 4, and the MSE/KL plot.

* ``table.csv`` / ``table.md``: a row per run: the varied options, then the evaluation metrics,
  then the loss's own terms on the validation split at the last epoch (``val_<term>``);
* ``figure3.png``: a row per run, the same attribute sets (columns) and latent codes in each;
* ``figure4.png``: per run, ground truth above its reconstruction;
* ``mse_kl_vs_<option>.png``: evaluation MSE and KL against the first varied option, a line per
  combination of the others;
* ``sweep.json``: every result in full.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import torch

from genkit.evaluation import distinct_vectors, open_run_data, reconstruct
from genkit.files import write_text_atomic
from genkit.images import labelled_grid, plot_against
from genkit.runs import Run
from genkit.sweep import SweepPlan, columns
from genkit_datasets.torch_dataset import CachedImageDataset

METRIC_COLUMNS = ("mse", "mse_per_pixel", "kl", "elbo", "cll", "attribute_accuracy", "classifier_accuracy",
                  "min_attribute_accuracy", "diversity", "diversity_ratio", "fd", "fd_floor",
                  "seen_conformity", "heldout_conformity", "edit_success", "edit_preservation", "edit_psnr")
FIGURE_COLUMNS = 8
FIGURE_SEED = 1234


def table_columns(plan: SweepPlan, results: list[dict[str, Any]]) -> list[str]:
    terms = sorted({k for r in results for k in r if k.startswith("val_")})
    return [*columns(plan.varied), *METRIC_COLUMNS, *terms]


def write_outputs(plan: SweepPlan, runs: list[Run], results: list[dict[str, Any]], split: str = "test",
                  cache_dir: str | Path | None = None) -> None:
    """Every file listed in the module docstring, into ``plan.out``."""
    out = plan.out
    names = table_columns(plan, results)
    rows = [{k: r.get(k) for k in names} for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "table.csv", buffer.getvalue())
    write_text_atomic(out / "table.md", markdown_table(rows, names, len(plan.varied)))
    write_text_atomic(out / "sweep.json", json.dumps(results, indent=1))

    labels = [plan.label(i) for i in range(len(runs))]
    info = open_run_data(runs[0], cache_dir=cache_dir)
    dataset = CachedImageDataset(info.path, split, limit=256, in_memory=True)
    attribute_names = list(info.attribute_names)
    conditions = torch.stack(distinct_vectors(dataset.attributes, FIGURE_COLUMNS))
    samples = []
    for run in runs:
        z = torch.randn(len(conditions), run.model.latent_dim, generator=torch.Generator().manual_seed(FIGURE_SEED))
        samples.append(run.model.sample(conditions.to(run.device), z.to(run.device)).float().cpu())
    labelled_grid(samples, labels, [short_label(v, attribute_names) for v in conditions], out / "figure3.png")

    count = min(FIGURE_COLUMNS, len(dataset))
    truth = dataset.images_uint8()[:count].float() / 255
    grid_rows, grid_labels = [], []
    for label, run in zip(labels, runs):
        grid_rows += [truth, reconstruct(run, truth, dataset.attributes[:count])]
        grid_labels += [f"{label}\ntruth", f"{label}\nrecon"]
    labelled_grid(grid_rows, grid_labels, None, out / "figure4.png")

    first = columns(plan.varied)[0]
    others = columns(plan.varied)[1:]
    series: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for result in results:
        key = ", ".join(f"{c}={result[c]}" for c in others)
        series.setdefault(key, []).append((result[first], result))
    plot_against(series, first, (("mse", "MSE per image (summed over pixels)"), ("kl", "KL per image (nats)")),
                 out / f"mse_kl_vs_{first}.png")


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

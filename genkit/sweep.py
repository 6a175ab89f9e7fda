"""The β sweep of the paper's §5.3: one run per β, same seed and data, each evaluated.

``out/beta-<β>/`` holds each run folder (with its ``evaluation_<split>.json``); ``out/`` gets
``table.csv`` and ``table.md`` (Table 1 plus the likelihood bounds and attribute accuracy),
``figure3.png`` (a row per β: the same attribute sets and latent codes in every row),
``figure4.png`` (per β, ground truth above reconstruction), ``mse_kl_vs_beta.png`` and
``sweep.json``. A finished run folder with the same settings is reused, so an interrupted sweep
picks up where it stopped (an unfinished one resumes from its checkpoint); a folder holding a run
with other settings is refused rather than overwritten.
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

from genkit.classifier import get_classifier
from genkit.config import RunConfig
from genkit.data import prepare_dataset
from genkit.errors import UsageError
from genkit.evaluation import distinct_vectors, evaluate_run, open_run_data, reconstruct
from genkit.files import atomic_path, write_text_atomic
from genkit.runs import CONFIG_FILE, WEIGHTS_FILE, Run, load_run
from genkit.planning import plan_run
from genkit.training import resume, train
from genkit_datasets.torch_dataset import CachedImageDataset

TABLE_COLUMNS = ("beta", "mse", "mse_per_pixel", "kl", "elbo", "cll", "attribute_accuracy", "classifier_accuracy",
                 "diversity")
FIGURE_COLUMNS = 8


def parse_betas(text: str) -> list[float]:
    """``"0.25,0.5"`` to ``[0.25, 0.5]``; empty lists, non-numbers, values outside [0, 1] and repeats are refused."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError("--beta is empty; give β values in [0, 1] separated by commas, for example 0.25,0.5,0.75,0.9")
    betas: list[float] = []
    for item in items:
        try:
            beta = float(item)
        except ValueError:
            raise UsageError(f"--beta value {item!r} is not a number; give values in [0, 1], "
                             "for example 0.25,0.5,0.75,0.9") from None
        if not 0.0 <= beta <= 1.0:
            raise UsageError(f"--beta value {item} is outside [0, 1]; the paper uses 0.25,0.5,0.75,0.9")
        if beta in betas:
            raise UsageError(f"--beta value {item} is listed twice; give each β once")
        betas.append(beta)
    return betas


def run_folder(out: str | Path, beta: float) -> Path:
    return Path(out) / f"beta-{beta:g}"


@dataclass
class SweepPlan:
    out: Path
    betas: list[float]
    configs: list[RunConfig]
    #: per run: "new" (train it), "done" (reuse it) or "resume" (continue from its checkpoint)
    states: list[str]


def plan_sweep(betas: list[float], out: str | Path, **plan_kwargs: Any) -> SweepPlan:
    """Validate every run of the sweep and the output folder; nothing is written yet.

    ``plan_kwargs`` are :func:`genkit.plan_run`'s arguments; each run gets ``loss_options["beta"]``.
    """
    if not betas:
        raise UsageError("--beta is empty; give β values in [0, 1] separated by commas, for example 0.25,0.5,0.75,0.9")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the sweep")
    loss_options = dict(plan_kwargs.pop("loss_options", None) or {})
    configs, states = [], []
    for beta in betas:
        config = plan_run(loss_options={**loss_options, "beta": beta}, **plan_kwargs)
        configs.append(config)
        states.append(_existing_run_state(run_folder(out, beta), config))
    return SweepPlan(out, list(betas), configs, states)


def _comparable(config: RunConfig) -> dict[str, Any]:
    """The settings that make two runs the same experiment, flattened and JSON-normalised."""
    data, train = config.data, config.train
    flat = {"data": data.name, "image_size": list(data.image_size), "limit": data.limit,
            "conditioner": config.conditioner.name, "model": config.model.name, "loss": config.loss.name,
            "epochs": train.epochs, "batch_size": train.batch_size, "lr": train.lr, "seed": train.seed}
    for prefix, options in (("data", data.options), ("conditioner", config.conditioner.options),
                            ("model", config.model.options), ("loss", config.loss.options)):
        flat.update({f"{prefix}.{k}": v for k, v in options.items()})
    return json.loads(json.dumps(flat))


def _existing_run_state(directory: Path, config: RunConfig) -> str:
    """"new", "done" or "resume" for ``directory``; a UsageError when it holds something else."""
    if not (directory / CONFIG_FILE).exists():
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"{directory} is not empty but holds no run; remove it or choose another --out")
        return "new"
    old = RunConfig.load(directory / CONFIG_FILE)
    if old.data.name != config.data.name or list(old.data.attribute_names) != list(config.data.attribute_names):
        raise UsageError(f"{directory} holds a run for {old.data.name} ({len(old.data.attribute_names)} attributes), "
                         f"not the {config.data.name} asked for; choose another --out or remove it")
    mine, theirs = _comparable(config), _comparable(old)
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise UsageError(f"{directory} holds a run with {key}={json.dumps(theirs.get(key))}, not the "
                             f"{json.dumps(mine.get(key))} asked for; choose another --out or remove it")
    metrics = directory / "metrics.jsonl"
    epochs_done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    finished = (directory / WEIGHTS_FILE).exists() and epochs_done >= config.train.epochs
    return "done" if finished else "resume"


def prepare_sweep(plan: SweepPlan, split: str = "test", cache_dir: str | Path | None = None, data_progress=None,
                  classifier_progress=None):
    """Before any training: build the data cache, check the evaluation split, train the classifier if needed.

    Returns the classifier's record. A missing or empty ``split`` is a :class:`UsageError` here,
    not after hours of training.
    """
    config = plan.configs[0]
    info, _ = prepare_dataset(config.data.name, root=config.data.root, image_size=config.data.image_size,
                              cache_dir=cache_dir, options=config.data.options, progress=data_progress)
    CachedImageDataset(info.path, split)  # raises for a split that is missing or empty
    return get_classifier(info, train_if_needed=True, device=config.train.device, progress=classifier_progress)[1]


def run_sweep(plan: SweepPlan, observer=None, cache_dir: str | Path | None = None, split: str = "test",
              samples: int = 100, sigma: float = 0.1, eval_seed: int = 0,
              classifier_progress=None) -> list[dict[str, Any]]:
    """Train (or reuse) and evaluate every run, then write the table, figures and plot; returns the rows."""
    plan.out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    for beta, config, state in zip(plan.betas, plan.configs, plan.states):
        directory = run_folder(plan.out, beta)
        if state == "done":
            _message(observer, f"β={beta:g}: reusing the finished run in {directory}")
            runs.append(load_run(directory, device=config.train.device))
        elif state == "resume":
            _message(observer, f"β={beta:g}: resuming the unfinished run in {directory}")
            resumed = resume(directory, observer=observer, cache_dir=cache_dir)
            runs.append(resumed if resumed is not None else load_run(directory, device=config.train.device))
        else:
            _message(observer, f"β={beta:g}: training into {directory}")
            runs.append(train(config, directory, observer=observer, cache_dir=cache_dir))
    results = []
    for beta, run in zip(plan.betas, runs):
        _message(observer, f"β={beta:g}: evaluating on {split} with S={samples} importance samples")
        result = evaluate_run(run, split=split, samples=samples, sigma=sigma, seed=eval_seed, cache_dir=cache_dir,
                              train_classifier=True, classifier_progress=classifier_progress)
        write_text_atomic(run.directory / f"evaluation_{split}.json", json.dumps(result, indent=1))
        results.append({"beta": beta, **result})
    write_outputs(plan.out, runs, plan.betas, results, split=split, cache_dir=cache_dir)
    return results


def _message(observer, text: str) -> None:
    fn = getattr(observer, "on_message", None) if observer is not None else None
    if fn is not None:
        fn(text)


def write_outputs(out: Path, runs: list[Run], betas: list[float], results: list[dict[str, Any]],
                  split: str = "test", cache_dir: str | Path | None = None) -> None:
    """``table.csv``, ``table.md``, ``figure3.png``, ``figure4.png``, ``mse_kl_vs_beta.png``, ``sweep.json``."""
    rows = [{k: r[k] for k in TABLE_COLUMNS} for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "table.csv", buffer.getvalue())
    write_text_atomic(out / "table.md", markdown_table(rows))
    write_text_atomic(out / "sweep.json", json.dumps(results, indent=1))

    info = open_run_data(runs[0], cache_dir=cache_dir)
    dataset = CachedImageDataset(info.path, split, limit=256, in_memory=True)
    names = list(info.attribute_names)
    conditions = torch.stack(distinct_vectors(dataset.attributes, FIGURE_COLUMNS))
    z = torch.randn(len(conditions), runs[0].model.latent_dim, generator=torch.Generator().manual_seed(1234))
    samples = [run.model.sample(conditions.to(run.device), z=z.to(run.device)).float().cpu() for run in runs]
    labels = [f"β={b:g}" for b in betas]
    labelled_grid(samples, labels, [short_label(v, names) for v in conditions], out / "figure3.png")

    count = min(FIGURE_COLUMNS, len(dataset))
    truth = dataset.images_uint8()[:count].float() / 255
    grid_rows, grid_labels = [], []
    for beta, run in zip(betas, runs):
        grid_rows += [truth, reconstruct(run, truth, dataset.attributes[:count])]
        grid_labels += [f"β={beta:g} truth", f"β={beta:g} recon"]
    labelled_grid(grid_rows, grid_labels, None, out / "figure4.png")
    plot_mse_kl(results, out / "mse_kl_vs_beta.png")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(TABLE_COLUMNS) + " |\n|" + "|".join("---:" for _ in TABLE_COLUMNS) + "|\n"
    body = "".join("| " + " | ".join(_fmt(r[k], k) for k in TABLE_COLUMNS) + " |\n" for r in rows)
    return head + body


def _fmt(value: Any, key: str) -> str:
    if key == "beta":
        return f"{value:g}"
    if key in ("attribute_accuracy", "classifier_accuracy"):
        return f"{value:.3f}"
    if key in ("mse_per_pixel", "diversity"):
        return f"{value:.4f}"
    return f"{value:.1f}"


def short_label(vector: torch.Tensor, names: list[str]) -> str:
    """The attributes on in ``vector``, group prefixes dropped, wrapped to at most three short lines."""
    on = [n.split("::")[-1] for n, v in zip(names, vector.tolist()) if v > 0.5] or ["(none)"]
    lines = textwrap.wrap(" ".join(on), width=14)
    return "\n".join(lines[:3]) + ("…" if len(lines) > 3 else "")


def labelled_grid(rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None,
                  path: Path) -> Path:
    """Rows of images in [0, 1] as one PNG with a label left of each row (and above each column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    cell = 0.85  # inches; at ``dpi`` an image of 64 pixels or more is drawn at its own resolution
    dpi = max(75, round(rows[0].shape[-1] / cell))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.4 + cell * n_cols, (0.5 if col_labels else 0.1) + cell * n_rows),
                             squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and col_labels and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=6)
    fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.99, bottom=0.01,
                        top=1 - (0.45 if col_labels else 0.05) / fig.get_figheight(), wspace=0.04, hspace=0.04)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def plot_mse_kl(results: list[dict[str, Any]], path: Path) -> Path:
    """MSE and KL (per image, evaluation split) against β, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(results, key=lambda r: r["beta"])
    betas = [r["beta"] for r in ordered]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, label in ((axes[0], "mse", "MSE per image (summed over pixels)"), (axes[1], "kl", "KL per image (nats)")):
        ax.plot(betas, [r[key] for r in ordered], "o-")
        ax.set_xlabel("β")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


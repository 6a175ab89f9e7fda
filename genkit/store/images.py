"""Image grids and plots written into run folders and sweep folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from genkit.store.files import atomic_path
from genkit.store.run_folder import NOT_TERMS


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write a batch of images in [0, 1] as one PNG grid, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")
    return path


def loss_terms(epochs: list[dict], steps: list[dict]) -> list[str]:
    """Every term the loss reported, ``loss`` first, in the order first logged."""
    keys: list[str] = []
    for record in steps:
        keys += [k for k in record if k not in NOT_TERMS and k not in keys]
    for record in epochs:
        for k in record:
            for prefix in ("train_", "val_"):
                if k.startswith(prefix) and k[len(prefix):] not in keys and k[len(prefix):] not in NOT_TERMS:
                    keys.append(k[len(prefix):])
    return sorted(keys, key=lambda k: k != "loss")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(epochs: list[dict], steps: list[dict], path: str | Path) -> Path:
    """Every loss term per logged step (train) and per epoch (validation), one panel each."""
    plt = _pyplot()
    path = Path(path)
    keys = loss_terms(epochs, steps)
    columns = min(4, max(1, len(keys)))
    rows = -(-max(1, len(keys)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        xs = [s["epoch_float"] for s in steps if key in s]
        if xs:
            ax.plot(xs, [s[key] for s in steps if key in s], lw=1, alpha=0.8, label="train")
        val = [(e["epoch"], e[f"val_{key}"]) for e in epochs if f"val_{key}" in e]
        if val:
            ax.plot(*zip(*val), "o-", label="valid")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def labelled_grid(rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None,
                  path: Path) -> Path:
    """Rows of images in [0, 1] as one PNG with a label left of each row (and above each column)."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    cell = 0.85  # inches; at ``dpi`` an image of 64 pixels or more is drawn at its own resolution
    dpi = max(75, round(rows[0].shape[-1] / cell))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 + cell * n_cols, (0.5 if col_labels else 0.1) + cell * n_rows),
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
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
            if r == 0 and col_labels and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=6)
    fig.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.99, bottom=0.01,
                        top=1 - (0.45 if col_labels else 0.05) / fig.get_figheight(), wspace=0.04, hspace=0.04)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def plot_against(series: dict[str, list[tuple[Any, dict[str, Any]]]], x_label: str,
                 panels: tuple[tuple[str, str], ...], path: Path) -> Path:
    """One panel per ``(key, title)``: ``record[key]`` against x, a line per series (numbers sorted; text in order)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    xs_all = [x for points in series.values() for x, _ in points]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
    categories = list(dict.fromkeys(str(x) for x in xs_all))
    for ax, (key, title) in zip(axes[0], panels):
        for name, points in series.items():
            points = sorted(points, key=lambda p: p[0]) if numeric else points
            xs = [p[0] if numeric else categories.index(str(p[0])) for p in points]
            ax.plot(xs, [p[1].get(key) for p in points], "o-", label=name or None)
        if not numeric:
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(x_label)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

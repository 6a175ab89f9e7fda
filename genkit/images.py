"""Image grids and plots written into run folders."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from genkit.files import atomic_path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write a batch of images in [0, 1] as one PNG grid, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")
    return path


def plot_curves(epochs: list[dict], steps: list[dict], path: str | Path) -> Path:
    """Loss, MSE and KL per logged step (train) and per epoch (validation), with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    keys = [k for k in ("loss", "mse", "kl") if any(k in s for s in steps) or any(f"val_{k}" in e for e in epochs)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
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

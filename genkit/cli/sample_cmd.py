"""``genkit sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console


def sample(
    run: Path = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train`."),
    attrs: str = typer.Option("", "--attrs", "-a", help='Attributes on, comma-separated; "-Name" for explicitly off.'),
    n: int = typer.Option(16, "--n", help="How many images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latent codes."),
    nrow: int = typer.Option(8, "--nrow", help="Images per row of the grid."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN/samples.png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Generate images with the attributes asked for and write them as a PNG grid."""
    from genkit.errors import UsageError
    from genkit.images import save_grid
    from genkit.runs import load_run

    if n < 1:
        raise UsageError(f"--n {n} must be a positive integer")
    if nrow < 1:
        raise UsageError(f"--nrow {nrow} must be a positive integer")
    loaded = load_run(run, device=device)
    loaded.conditioner.encode(attrs)  # checks the names before anything is written
    target = out if out is not None else loaded.directory / "samples.png"
    if target.suffix.lower() != ".png":
        raise UsageError(f"--out {target} must end in .png")
    save_grid(loaded.sample(attrs, n=n, seed=seed), target, nrow=nrow)
    console.err.print(f"wrote {n} samples with [{attrs or 'no attributes'}] to {target}", highlight=False, markup=False)
    console.out.print(str(target), highlight=False)

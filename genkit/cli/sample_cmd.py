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
    vary: Optional[list[str]] = typer.Option(
        None, "--vary", help="Attribute to switch off (upper row) and on (lower row) over --attrs, with the same "
                             "--n latent codes in both rows (repeatable: two rows per attribute)."),
    interpolate: Optional[tuple[str, str]] = typer.Option(
        None, "--interpolate", help='Two attribute sets, e.g. --interpolate "A,B" "C,D": each row one of '
                                            "--n latent codes, the condition moving from the first to the second."),
    steps: int = typer.Option(8, "--steps", help="Columns of an --interpolate grid."),
) -> None:
    """Generate images with the attributes asked for and write them as a PNG grid.

    With --vary or --interpolate the grid compares conditions at fixed latent codes (Figure 5).
    """
    from genkit.errors import UsageError
    from genkit.files import check_output_file
    from genkit.images import save_grid
    from genkit.runs import load_run
    from genkit.sampling import check_grid, write_sample_grid

    if n < 1:
        raise UsageError(f"--n {n} must be a positive integer")
    if nrow < 1:
        raise UsageError(f"--nrow {nrow} must be a positive integer")
    pair = interpolate if interpolate is not None and interpolate[0] is not None else None
    if vary and pair:
        raise UsageError("--vary and --interpolate make different grids; use one of them")
    if pair and steps < 2:
        raise UsageError(f"--steps {steps} must be at least 2 (the two ends)")
    if out is not None:
        if out.suffix.lower() != ".png":
            raise UsageError(f"--out {out} must end in .png")
        check_output_file(out)
    loaded = load_run(run, device=device)
    base = loaded.conditioner.encode(attrs)  # checks the names before anything is written
    target = out if out is not None else loaded.directory / "samples.png"
    shape = tuple(loaded.config.image_shape)
    # float images, their float grid and the PNG's bytes: about 9 bytes a value for these two grids
    if vary:
        check_grid(2 * len(vary) * n, n, shape, asked=f"--n {n} with {len(vary)} --vary ({2 * len(vary) * n} images)", bytes_per_value=9)
        images = vary_grid(loaded, base, vary, n, seed)
        save_grid(images, target, nrow=n)
        what = f"{len(vary)} attribute(s) off and on over [{_short(attrs)}], {n} latent codes"
    elif pair:
        check_grid(n * steps, steps, shape, asked=f"--n {n} with --steps {steps} ({n * steps} images)", bytes_per_value=9)
        images = interpolation_grid(loaded, pair, n, steps, seed)
        save_grid(images, target, nrow=steps)
        what = f"{n} rows from [{_short(pair[0])}] to [{_short(pair[1])}] in {steps} steps"
    else:
        write_sample_grid(loaded, base, n, seed, nrow, target)
        what = f"{n} samples with [{_short(attrs)}]"
    console.err.print(f"wrote {what} to {target}", highlight=False, markup=False)
    console.out.print(str(target), highlight=False)


def _short(attrs: str) -> str:
    from genkit.errors import shown

    return shown(attrs, quote=False) if attrs else "no attributes"


def vary_grid(run, base, names: list[str], n: int, seed: int):
    """Per attribute two rows, off then on over ``base``, the same ``n`` latent codes in every row."""
    import torch

    conditions = []
    for name in names:
        switch = run.conditioner.encode(name.strip().lstrip("+"))
        conditions += [base * (1 - switch), torch.maximum(base, switch)]
    z = run.latents(n, seed)
    run.model.eval()
    with torch.no_grad():
        rows = [run.model.sample(run.condition(c, n), z=z).float().cpu() for c in conditions]
    return torch.cat(rows)


def interpolation_grid(run, pair: tuple[str, str], n: int, steps: int, seed: int):
    """``n`` rows (latent codes) × ``steps`` columns, the condition moving linearly from one set to the other."""
    import torch

    start, end = (run.conditioner.encode(spec) for spec in pair)
    weights = torch.linspace(0, 1, steps)
    conditions = torch.stack([(1 - t) * start + t * end for t in weights])       # (steps, A)
    z = run.latents(n, seed)
    run.model.eval()
    with torch.no_grad():
        rows = [run.model.sample(conditions.to(run.device), z=z[i:i + 1].expand(steps, -1)).float().cpu()
                for i in range(n)]
    return torch.cat(rows)

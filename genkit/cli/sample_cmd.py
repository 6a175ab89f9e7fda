"""``genkit sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.sampling_flags import SAMPLE_OPT


def sample(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train`."),
    attrs: str = typer.Option("", "--attrs", "-a", help='Attributes on, comma-separated; "-Name" for explicitly off.'),
    n: int = typer.Option(16, "--n", help="How many images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise (and of the attributes --rest data draws)."),
    rest: str = typer.Option("data", "--rest",
                             help="Attributes not in --attrs: data (from a training vector that agrees with "
                                  "--attrs), off, or model (left to a model trained with attribute dropout)."),
    nrow: int = typer.Option(8, "--nrow", help="Images per row of the grid."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN/samples.png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    vary: Optional[list[str]] = typer.Option(
        None, "--vary", help="Attribute to switch off (upper row) and on (lower row) over --attrs, with the same "
                             "--n noise draws in both rows (repeatable: two rows per attribute)."),
    interpolate: Optional[tuple[str, str]] = typer.Option(
        None, "--interpolate", help='Two attribute sets, e.g. --interpolate "A,B" "C,D": each row one of '
                                            "--n noise draws, the condition moving from the first to the second."),
    steps: int = typer.Option(8, "--steps", help="Columns of an --interpolate grid."),
    sample_opt: Optional[list[str]] = SAMPLE_OPT,
) -> None:
    """Generate images with the attributes asked for and write them as a PNG grid.

    With --vary or --interpolate the grid compares conditions at fixed noise (Figure 5). The
    run's model adds its sampling options as flags (the cvae's --temperature, ...), listed at
    the end of `genkit sample --run RUN --help`.
    """
    import math

    from genkit.cli.sampling_flags import given_options
    from genkit.sampling import compare
    from genkit.sampling.grids import FLOAT_GRID_BYTES_PER_VALUE, check_grid, write_grid
    from genkit.sampling.run import load_run
    from genkit.store.images import save_grid

    pair = interpolate if interpolate is not None and interpolate[0] is not None else None
    _refuse_bad_input(n, seed, nrow, vary, pair, steps, rest, out)
    loaded = load_run(run, device=device)
    loaded.check_rest(rest, "--rest")  # a model that cannot take --rest model says so before any work
    options = loaded.resolve_options(given_options(ctx.args, sample_opt, loaded.sampling_options,
                                                   loaded.config.model.name, "sample"))
    loaded.condition(attrs)  # checks the names before anything is written
    for spec in pair or ():
        loaded.condition(spec)
    target = out if out is not None else loaded.directory / "samples.png"
    shape = tuple(loaded.config.image_shape)
    # float images made into a grid: FLOAT_GRID_BYTES_PER_VALUE bytes a value for these two grids
    if vary:
        check_grid(2 * len(vary) * n, n, shape, asked=f"--n {n} with {len(vary)} --vary ({2 * len(vary) * n} images)",
                   bytes_per_value=FLOAT_GRID_BYTES_PER_VALUE, columns_flag=None)
        result = compare.vary(loaded, attrs, vary, n, seed, rest, options)
        save_grid(result.images, target, nrow=n)
        what = f"{len(vary)} attribute(s) off and on over [{_short(attrs)}], {n} noise draws"
    elif pair:
        check_grid(n * steps, steps, shape, asked=f"--n {n} with --steps {steps} ({n * steps} images)",
                   bytes_per_value=FLOAT_GRID_BYTES_PER_VALUE, columns_flag=None)
        result = compare.interpolate(loaded, pair, n, steps, seed, rest, options)
        save_grid(result.images, target, nrow=steps)
        what = f"{n} rows from [{_short(pair[0])}] to [{_short(pair[1])}] in {steps} steps"
    else:  # streamed: the grid is bounded first, then decoded a batch at a time
        noise_values = math.prod(loaded.noise(1).shape[1:])
        check_grid(n, nrow, shape, extra_per_image=4 * (noise_values + loaded.conditioner.dim))
        noise = loaded.noise(n, seed)
        result = loaded.conditions(attrs, n, seed, rest)
        write_grid(loaded.batches(result.condition, noise, options, seed), n, nrow, shape, target)
        what = f"{n} samples with [{_short(attrs)}]"
    if result.note:
        console.err.print(f"warning: {result.note}", highlight=False, markup=False)
    unlisted = ("unlisted attributes left to the model" if rest == "model" else
                "unlisted attributes from the training data" if rest == "data" and not result.note else
                "unlisted attributes off")
    console.err.print(f"wrote {what} ({unlisted}) to {target}", highlight=False, markup=False)
    console.out.print(str(target), highlight=False)


def _refuse_bad_input(n: int, seed: int, nrow: int, vary, pair, steps: int, rest: str, out: Optional[Path]) -> None:
    """Every flag checked before the run is loaded: one line naming the first bad one."""
    from genkit.components.limits import check_seed
    from genkit.errors import UsageError
    from genkit.sampling import attributes
    from genkit.store.files import check_output_file

    if n < 1:
        raise UsageError(f"--n {n} must be a positive integer")
    check_seed(seed)
    if nrow < 1:
        raise UsageError(f"--nrow {nrow} must be a positive integer")
    if vary and pair:
        raise UsageError("--vary and --interpolate make different grids; use one of them")
    if pair and steps < 2:
        raise UsageError(f"--steps {steps} must be at least 2 (the two ends)")
    attributes.check_rest(rest, "--rest")
    if out is not None:
        if out.suffix.lower() != ".png":
            raise UsageError(f"--out {out} must end in .png")
        check_output_file(out)


def _short(attrs: str) -> str:
    from genkit.errors import shown

    return shown(attrs, quote=False) if attrs else "no attributes"

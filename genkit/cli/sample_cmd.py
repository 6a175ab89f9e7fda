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
    seed: int = typer.Option(0, "--seed", help="Seed of the latent codes (and of the attributes --rest data draws)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t",
                                      help="Scale of the prior noise, > 0 (below 1 nearer the mode)."),
    rest: str = typer.Option("data", "--rest",
                             help="Attributes not in --attrs: data (from a training vector that agrees with "
                                  "--attrs) or off."),
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
    from genkit import sampling
    from genkit.errors import UsageError
    from genkit.images import save_grid
    from genkit.runs import load_run

    if n < 1:
        raise UsageError(f"--n {n} must be a positive integer")
    if nrow < 1:
        raise UsageError(f"--nrow {nrow} must be a positive integer")
    pair = interpolate if interpolate is not None and interpolate[0] is not None else None
    if vary and pair:
        raise UsageError("--vary and --interpolate make different grids; use one of them")
    if pair and steps < 2:
        raise UsageError(f"--steps {steps} must be at least 2 (the two ends)")
    try:
        sampling.check_temperature(temperature)
    except UsageError:
        raise UsageError(f"--temperature {temperature} must be a positive finite number, for example 1.0 "
                         "(below 1 nearer the mode, above 1 more varied)") from None
    if rest not in sampling.REST_MODES:
        raise UsageError(f"--rest {rest!r} is not known; choose data (unlisted attributes from the training data) "
                         "or off (unlisted attributes off, as in the paper's figures)")
    loaded = load_run(run, device=device)
    loaded.condition(attrs)  # checks the names before anything is written
    for spec in pair or ():
        loaded.condition(spec)
    target = out if out is not None else loaded.directory / "samples.png"
    if target.suffix.lower() != ".png":
        raise UsageError(f"--out {target} must end in .png")
    if vary:
        result = sampling.vary(loaded, attrs, vary, n, seed, temperature, rest)
        save_grid(result.images, target, nrow=n)
        what = f"{len(vary)} attribute(s) off and on over [{attrs or 'no attributes'}], {n} latent codes"
    elif pair:
        result = sampling.interpolate(loaded, pair, n, steps, seed, temperature, rest)
        save_grid(result.images, target, nrow=steps)
        what = f"{n} rows from [{pair[0]}] to [{pair[1]}] in {steps} steps"
    else:
        result = sampling.generate(loaded, attrs, n=n, seed=seed, temperature=temperature, rest=rest)
        save_grid(result.images, target, nrow=nrow)
        what = f"{n} samples with [{attrs or 'no attributes'}]"
    if result.note:
        console.err.print(f"warning: {result.note}", highlight=False, markup=False)
    unlisted = "unlisted attributes from the training data" if rest == "data" and not result.note else \
        "unlisted attributes off"
    console.err.print(f"wrote {what} ({unlisted}) to {target}", highlight=False, markup=False)
    console.out.print(str(target), highlight=False)

"""``genkit sweep``: the paper's β sweep (Table 1, Figures 3 and 4) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.options import TrainingOptions as T, component_options
from genkit.config import TrainSpec

_D = TrainSpec()


def sweep(
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder: one run folder per β, table, figures."),
    beta: str = typer.Option("0.25,0.5,0.75,0.9", "--beta", help="β values in [0, 1], comma-separated."),
    data: str = T.DATA,
    model: str = T.MODEL,
    conditioner: str = T.CONDITIONER,
    loss: str = typer.Option("beta-elbo", "--loss", help="Loss name; it must take a beta option."),
    epochs: int = typer.Option(_D.epochs, "--epochs", help="Passes over the training split, every run."),
    batch_size: int = T.BATCH_SIZE,
    lr: float = T.LR,
    latent_dim: Optional[int] = T.LATENT_DIM,
    prior: Optional[str] = T.PRIOR,
    image_size: Optional[str] = T.IMAGE_SIZE,
    conditioning: Optional[str] = T.CONDITIONING,
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of every run (the same for all β)."),
    device: str = T.DEVICE,
    precision: str = T.PRECISION,
    limit: Optional[int] = T.LIMIT,
    root: Optional[Path] = T.ROOT,
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live."),
    data_in: str = T.DATA_IN,
    workers: int = T.WORKERS,
    log_every: int = T.LOG_EVERY,
    split: str = typer.Option("test", "--split", help="Held-out split every run is evaluated on."),
    samples: int = typer.Option(100, "--samples", "-S", help="Importance samples per image for cll."),
    sigma: float = typer.Option(0.1, "--sigma", help="σ of the Gaussian decoder likelihood."),
    model_opt: Optional[list[str]] = T.MODEL_OPT,
    loss_opt: Optional[list[str]] = T.LOSS_OPT,
    cond_opt: Optional[list[str]] = T.COND_OPT,
    data_opt: Optional[list[str]] = T.DATA_OPT,
) -> None:
    """Train one run per β with the same seed and data, evaluate each, and write table.csv, table.md,
    figure3.png, figure4.png and mse_kl_vs_beta.png into --out. Finished runs are reused."""
    from genkit.cli.evaluate_cmd import stage_progress
    from genkit.evaluation import check_settings
    from genkit.sweep import parse_betas, plan_sweep, prepare_sweep, run_sweep

    from genkit.files import check_output_dir

    check_output_dir(out)  # a file, under a file, read-only: refused before any training
    betas = parse_betas(beta)
    options = component_options(model_opt, loss_opt, cond_opt, data_opt, latent_dim=latent_dim, prior=prior,
                                conditioning=conditioning)
    check_settings(samples, sigma)
    plan = plan_sweep(
        betas, out, model=model, data=data, conditioner=conditioner, loss=loss, **options, root=root,
        image_size=image_size, limit=limit, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
        precision=precision, log_every=max(1, log_every), data_in=data_in, workers=workers)
    progress, on_cache = console.cache_progress(f"preparing {data} cache")
    bar, on_classifier, _ = stage_progress()
    try:
        record = prepare_sweep(plan, split=split, cache_dir=cache_dir, data_progress=on_cache,
                               classifier_progress=on_classifier)
    finally:
        progress.stop()
        bar.stop()
    console.err.print(f"attribute classifier {record.name}: accuracy {record.accuracy:.4f} on real "
                      f"{record.valid_split} images", highlight=False, markup=False)
    with console.TrainingDisplay() as display:
        results = run_sweep(plan, observer=display, cache_dir=cache_dir, split=split, samples=samples, sigma=sigma)
    console.out.print((out / "table.md").read_text(), highlight=False, markup=False)
    console.err.print(f"[green]done:[/] {len(results)} runs; table, figure3.png, figure4.png and "
                      f"mse_kl_vs_beta.png in {out}", highlight=False)

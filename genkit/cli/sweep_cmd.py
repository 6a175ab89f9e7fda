"""``genkit sweep``: the paper's β sweep (Table 1, Figures 3 and 4) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.options import parse_options
from genkit.config import TrainSpec

_D = TrainSpec()


def sweep(
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder: one run folder per β, table, figures."),
    beta: str = typer.Option("0.25,0.5,0.75,0.9", "--beta", help="β values in [0, 1], comma-separated."),
    data: str = typer.Option("shapes", "--data", "-d", help="Dataset name (see `genkit plugins`)."),
    model: str = typer.Option("cvae", "--model", "-m", help="Model name."),
    conditioner: str = typer.Option("tiled-onehot", "--conditioner", help="Conditioner name."),
    loss: str = typer.Option("beta-elbo", "--loss", help="Loss name; it must take a beta option."),
    epochs: int = typer.Option(_D.epochs, "--epochs", help="Passes over the training split, every run."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Images per optimiser step."),
    lr: float = typer.Option(_D.lr, "--lr", help="Adam learning rate."),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="Size of z (model default 32)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="standard N(0, I) (default) or learned p(z|x)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="S or HxW (default: the dataset's)."),
    conditioning: Optional[str] = typer.Option(None, "--conditioning", help="fused or naive."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of every run (the same for all β)."),
    device: str = typer.Option(_D.device, "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(_D.precision, "--precision", help="fp32, or bf16 autocast on CUDA."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N images only."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live."),
    data_in: str = typer.Option(_D.data_in, "--data-in", help="auto, ram, gpu, or disk."),
    workers: int = typer.Option(_D.workers, "--workers", help="DataLoader workers when streaming from disk."),
    log_every: int = typer.Option(_D.log_every, "--log-every", help="Steps between progress updates."),
    split: str = typer.Option("test", "--split", help="Held-out split every run is evaluated on."),
    samples: int = typer.Option(100, "--samples", "-S", help="Importance samples per image for cll."),
    sigma: float = typer.Option(0.1, "--sigma", help="σ of the Gaussian decoder likelihood."),
    model_opt: Optional[list[str]] = typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable)."),
    loss_opt: Optional[list[str]] = typer.Option(None, "--loss-opt", help="Loss option KEY=VALUE (repeatable)."),
    cond_opt: Optional[list[str]] = typer.Option(None, "--conditioner-opt", help="Conditioner option KEY=VALUE."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE."),
) -> None:
    """Train one run per β with the same seed and data, evaluate each, and write table.csv, table.md,
    figure3.png, figure4.png and mse_kl_vs_beta.png into --out. Finished runs are reused."""
    from genkit.cli.evaluate_cmd import stage_progress
    from genkit.evaluation import check_settings
    from genkit.sweep import parse_betas, plan_sweep, prepare_sweep, run_sweep

    betas = parse_betas(beta)
    model_options = parse_options(model_opt, "--model-opt")
    cond_options = parse_options(cond_opt, "--conditioner-opt")
    if latent_dim is not None:
        model_options["latent_dim"] = latent_dim
    if prior is not None:
        model_options["prior"] = prior
    if conditioning is not None:
        cond_options["mode"] = conditioning
    check_settings(samples, sigma)
    plan = plan_sweep(
        betas, out, model=model, data=data, conditioner=conditioner, loss=loss, model_options=model_options,
        conditioner_options=cond_options, loss_options=parse_options(loss_opt, "--loss-opt"),
        data_options=parse_options(data_opt, "--data-opt"), root=root, image_size=image_size, limit=limit,
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,
        log_every=max(1, log_every), data_in=data_in, workers=workers)
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

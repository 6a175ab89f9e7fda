"""``genkit train``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import sys

import typer

from genkit.cli import console
from genkit.cli.options import parse_options
from genkit.config import TrainSpec

_D = TrainSpec()


def train(
    model: str = typer.Option("cvae", "--model", "-m", help="Model name (see `genkit plugins`)."),
    data: str = typer.Option("shapes", "--data", "-d", help="Dataset name (see `genkit plugins`)."),
    conditioner: str = typer.Option("tiled-onehot", "--conditioner", help="Conditioner name."),
    loss: str = typer.Option("beta-elbo", "--loss", help="Loss name."),
    beta: Optional[float] = typer.Option(None, "--beta", help="β of the β-ELBO, in [0, 1] (default 0.75)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Passes over the training split (default {_D.epochs})."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Images per optimiser step (global: split over processes)."),
    lr: float = typer.Option(_D.lr, "--lr", help="Adam learning rate."),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="Size of z (model default 32)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="standard N(0, I) (default) or learned p(z|x) (Sohn et al.)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="S or HxW, divisible by 4 (default: the dataset's, 64)."),
    conditioning: Optional[str] = typer.Option(None, "--conditioning", help="fused (exact, fast) or naive (literal tiling)."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed for weights, shuffling and noise."),
    device: str = typer.Option(_D.device, "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(_D.precision, "--precision", help="fp32, or bf16 autocast on CUDA."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N images only."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches live (default $GENKIT_CACHE or the user cache)."),
    data_in: str = typer.Option(_D.data_in, "--data-in", help="auto, ram, gpu, or disk (stream from the cache)."),
    workers: int = typer.Option(_D.workers, "--workers", help="DataLoader workers when streaming from disk."),
    log_every: int = typer.Option(_D.log_every, "--log-every", help="Steps between progress updates (host syncs)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also checkpoint every N steps (0: at epoch ends only)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder (other options but --epochs are ignored)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch N processes (DDP) through torch.distributed's launcher."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<model>-<data>-<time>)."),
    model_opt: Optional[list[str]] = typer.Option(None, "--model-opt", help="Model option KEY=VALUE (repeatable)."),
    loss_opt: Optional[list[str]] = typer.Option(None, "--loss-opt", help="Loss option KEY=VALUE (repeatable)."),
    cond_opt: Optional[list[str]] = typer.Option(None, "--conditioner-opt", help="Conditioner option KEY=VALUE."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE (e.g. count=2000)."),
) -> None:
    """Train a model on a dataset and write a run folder (config, weights, metrics, sample grids)."""
    from genkit import distributed
    from genkit.training import plan_run, resume as resume_run, train as run_training

    if nproc is not None and distributed.world_from_env().size == 1:
        code = distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc"))
        raise typer.Exit(code)
    if resume is not None:
        progress, callback = console.cache_progress("checking cache")
        try:
            with console.training_display() as display:
                run = resume_run(resume, epochs=epochs, observer=display, cache_dir=cache_dir, data_progress=callback)
        finally:
            progress.stop()
        if run is None:
            console.err.print(f"{resume} has already finished its epochs; pass --epochs N to train further",
                              highlight=False)
            return
        _report(run)
        return

    model_options = parse_options(model_opt, "--model-opt")
    loss_options = parse_options(loss_opt, "--loss-opt")
    cond_options = parse_options(cond_opt, "--conditioner-opt")
    if latent_dim is not None:
        model_options["latent_dim"] = latent_dim
    if beta is not None:
        loss_options["beta"] = beta
    if prior is not None:
        model_options["prior"] = prior
    if conditioning is not None:
        cond_options["mode"] = conditioning
    config = plan_run(
        model, data, conditioner, loss, model_options=model_options, conditioner_options=cond_options,
        loss_options=loss_options, data_options=parse_options(data_opt, "--data-opt"), root=root,
        image_size=image_size, limit=limit, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
        precision=precision, compile=compile, log_every=log_every, data_in=data_in, workers=workers,
        checkpoint_every=checkpoint_every)
    progress, callback = console.cache_progress(f"preparing {data} cache")
    try:
        with console.training_display() as display:
            run = run_training(config, out_dir=out, observer=display, cache_dir=cache_dir, data_progress=callback)
    finally:
        progress.stop()
    _report(run)


def _report(run) -> None:
    from genkit.distributed import world_from_env

    if not world_from_env().is_main:
        return
    last = sorted((run.directory / "samples").glob("epoch_*.png"))
    console.err.print(f"[green]done:[/] run folder {run.directory}", highlight=False)
    if last:
        console.err.print(f"sample grid: {last[-1]}  (rows: {run.directory / 'samples' / 'rows.json'})", highlight=False)
    console.out.print(str(run.directory), highlight=False)

"""``genkit train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from genkit.cli import console
from genkit.cli.component_flags import given_flags
from genkit.cli.options import TrainingOptions as T, component_options
from genkit.config import TrainSpec

if TYPE_CHECKING:  # imported when a command runs, so that `genkit --help` stays quick
    from genkit.sampling.run import Run

_D = TrainSpec()


#: options ``--resume`` takes: the settings safe to change, and where caches live
RESUME_OPTIONS = ("resume", "epochs", "lr", "root", "workers", "data_in", "device", "cache_dir", "nproc",
                  "tensorboard")


def train(
    ctx: typer.Context,
    model: str = T.MODEL,
    data: str = T.DATA,
    conditioner: str = T.CONDITIONER,
    loss: Optional[str] = T.LOSS,
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Passes over the training split (default {_D.epochs})."),
    batch_size: Optional[int] = T.BATCH_SIZE,
    lr: Optional[float] = T.LR,
    ema: Optional[float] = T.EMA,
    image_size: Optional[str] = T.IMAGE_SIZE,
    seed: int = T.SEED,
    device: str = T.DEVICE,
    precision: str = T.PRECISION,
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    limit: Optional[int] = T.LIMIT,
    hold_out: Optional[list[str]] = T.HOLD_OUT,
    root: Optional[Path] = T.ROOT,
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches live (default $GENKIT_CACHE or the user cache)."),
    data_in: str = T.DATA_IN,
    workers: int = T.WORKERS,
    log_every: int = T.LOG_EVERY,
    tensorboard: Optional[bool] = T.TENSORBOARD,
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also checkpoint every N steps (0: at epoch ends only)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder; only --epochs, --lr, --root, --workers, --data-in, --device, --cache-dir and --tensorboard/--no-tensorboard may be given with it."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch N processes (DDP) through torch.distributed's launcher."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<model>-<data>-<time>)."),
    model_opt: Optional[list[str]] = T.MODEL_OPT,
    loss_opt: Optional[list[str]] = T.LOSS_OPT,
    cond_opt: Optional[list[str]] = T.COND_OPT,
    data_opt: Optional[list[str]] = T.DATA_OPT,
) -> None:
    """Train a model on a dataset and write a run folder (config, weights, metrics, sample grids).

    The chosen components add flags of their own, listed at the end of this help; `genkit train
    --model NAME --loss NAME --help` lists those of other components.
    """
    from genkit.errors import UsageError
    from genkit.runtime import distributed
    from genkit.training.planning import plan_run
    from genkit.training.resuming import resume as resume_run
    from genkit.training.tensorboard import wanted as tensorboard_wanted
    from genkit.training.trainer import train as run_training

    if nproc is not None and distributed.world_from_env().size == 1:
        code = distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc"))
        raise typer.Exit(code)
    from genkit.training.planning import default_loss

    loss = loss or default_loss(model)
    flags = given_flags(ctx, {"datasets": data, "conditioners": conditioner, "models": model, "losses": loss})
    tensorboard_wanted(tensorboard)  # --tensorboard without the package: refused before any work
    if resume is not None:
        if flags:
            kind, values = next(iter(flags.items()))
            raise UsageError(f"--resume continues {resume} with the components' options it was trained with; "
                             f"{', '.join(values)} cannot change (start a new run with --out)")
        given = _given_options(ctx)
        refused = [name for name in given if name not in RESUME_OPTIONS]
        if refused:
            allowed = ", ".join(_flag(ctx, n) for n in RESUME_OPTIONS if n not in ("resume", "nproc"))
            raise UsageError(f"{_flag(ctx, refused[0])} cannot be given with --resume: the run keeps the settings in "
                             f"{resume / 'config.json'}; with --resume you may give {allowed}")
        changes = {name: ctx.params[name] for name in ("lr", "root", "workers", "data_in", "device") if name in given}
        progress, callback = console.cache_progress("checking cache")
        try:
            with console.training_display() as display:
                run = resume_run(resume, epochs=epochs, observer=display, cache_dir=cache_dir, data_progress=callback,
                                 tensorboard=tensorboard, **changes)
        finally:
            progress.stop()
        if run is None:
            console.err.print(f"{resume} has already finished its epochs; pass --epochs N to train further",
                              highlight=False)
            return
        _report(run)
        return

    options = component_options(model_opt, loss_opt, cond_opt, data_opt, flags)
    config = plan_run(
        model, data, conditioner, loss, **options, root=root, image_size=image_size, limit=limit, hold_out=hold_out,
        epochs=epochs, batch_size=batch_size, lr=lr, ema=ema, seed=seed, device=device, precision=precision,
        compile=compile, log_every=log_every, data_in=data_in, workers=workers, checkpoint_every=checkpoint_every)
    progress, callback = console.cache_progress(f"preparing {data} cache")
    try:
        with console.training_display() as display:
            run = run_training(config, out_dir=out, observer=display, cache_dir=cache_dir, data_progress=callback,
                               tensorboard=tensorboard)
    finally:
        progress.stop()
    _report(run)


def _given_options(ctx: typer.Context) -> list[str]:
    """The parameters set on the command line (or by environment), not left at their defaults."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return [name for name, source in sources.items()
            if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")]


def _flag(ctx: typer.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return "--" + name.replace("_", "-")


def _report(run: Run) -> None:
    from genkit.runtime.distributed import world_from_env

    if not world_from_env().is_main:
        return
    from genkit.store.run_folder import ROWS_FILE, SAMPLES_DIR

    last = sorted((run.directory / SAMPLES_DIR).glob("epoch_*.png"))
    console.err.print(f"[green]done:[/] run folder {run.directory}", highlight=False)
    if last:
        console.err.print(f"sample grid: {last[-1]}  (rows: {run.directory / SAMPLES_DIR / ROWS_FILE})",
                          highlight=False)
    console.out.print(str(run.directory), highlight=False)

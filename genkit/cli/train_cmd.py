"""``genkit train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from genkit.cli import console
from genkit.cli.component_flags import given_flags
from genkit.cli.options import SHARED, command_options, component_options, settings_given
from genkit.config import resumable_settings

if TYPE_CHECKING:  # imported when a command runs, so that `genkit --help` stays quick
    from genkit.sampling.run import Run

#: the settings a resume may change (``TrainSpec``'s metadata, and the data's root)
RESUMABLE_SETTINGS = resumable_settings()

#: options ``--resume`` takes: the settings safe to change, and where caches live
RESUME_OPTIONS = ("resume", *RESUMABLE_SETTINGS, "cache_dir", "nproc", "tensorboard")


#: ``train``'s own options
OWN: dict[str, tuple[Any, Any]] = {
    "cache_dir": (Optional[Path], typer.Option(None, "--cache-dir", help="Where HDF5 caches live (default "
                                                                         "$GENKIT_CACHE or the user cache).")),
    "nproc": (Optional[int], typer.Option(None, "--nproc", help="Launch N processes (DDP) through torch.distributed's "
                                                                "launcher.")),
    "out": (Optional[Path], typer.Option(None, "--out", "-o", help="Run folder (default runs/<model>-<data>-<time>).")),
}
_WITH_RESUME = [(SHARED.get(name) or OWN[name])[1].param_decls[0] for name in RESUME_OPTIONS
                if name not in ("resume", "nproc")]
OWN["resume"] = (Optional[Path], typer.Option(
    None, "--resume", help=f"Continue the run in this folder; only {', '.join(_WITH_RESUME[:-1])} and "
                           f"{_WITH_RESUME[-1]} may be given with it."))


@command_options(
    "model data conditioner loss SETTINGS image_size limit hold_out root cache_dir tensorboard resume nproc out model_opt "
    "loss_opt cond_opt data_opt", **OWN)
def train(ctx: typer.Context, **given: Any) -> None:
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

    if given["nproc"] is not None and distributed.world_from_env().size == 1:
        code = distributed.launch(given["nproc"], distributed.strip_option(sys.argv[1:], "--nproc"))
        raise typer.Exit(code)
    from genkit.training.planning import default_loss

    model, data, conditioner, resume, tensorboard = (given[k] for k in ("model", "data", "conditioner", "resume",
                                                                         "tensorboard"))
    loss = given["loss"] or default_loss(model)
    flags = given_flags(ctx, {"datasets": data, "conditioners": conditioner, "models": model, "losses": loss})
    tensorboard_wanted(tensorboard)  # --tensorboard without the package: refused before any work
    if resume is not None:
        if flags:
            kind, values = next(iter(flags.items()))
            raise UsageError(f"--resume continues {resume} with the components' options it was trained with; "
                             f"{', '.join(values)} cannot change (start a new run with --out)")
        named = _given_options(ctx)
        refused = [name for name in named if name not in RESUME_OPTIONS]
        if refused:
            allowed = ", ".join(_flag(ctx, n) for n in RESUME_OPTIONS if n not in ("resume", "nproc"))
            raise UsageError(f"{_flag(ctx, refused[0])} cannot be given with --resume: the run keeps the settings in "
                             f"{resume / 'config.json'}; with --resume you may give {allowed}")
        changes = {name: given[name] for name in RESUMABLE_SETTINGS if name != "epochs" and name in named}
        progress, callback = console.cache_progress("checking cache")
        try:
            with console.training_display() as display:
                run = resume_run(resume, epochs=given["epochs"], observer=display, cache_dir=given["cache_dir"],
                                 data_progress=callback, tensorboard=tensorboard, **changes)
        finally:
            progress.stop()
        if run is None:
            console.err.print(f"{resume} has already finished its epochs; pass --epochs N to train further",
                              highlight=False)
            return
        _report(run)
        return

    options = component_options(given["model_opt"], given["loss_opt"], given["cond_opt"], given["data_opt"], flags)
    config = plan_run(model, data, conditioner, loss, **options, root=given["root"], image_size=given["image_size"],
                      limit=given["limit"], hold_out=given["hold_out"], say=console.note, **settings_given(given))
    progress, callback = console.cache_progress(f"preparing {data} cache")
    try:
        with console.training_display() as display:
            run = run_training(config, out_dir=given["out"], observer=display, cache_dir=given["cache_dir"],
                               data_progress=callback, tensorboard=tensorboard)
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

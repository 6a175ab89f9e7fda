"""The CLI's consoles and progress displays. Library code never prints; this layer does."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from genkit.store.run_folder import NOT_TERMS

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    from rich.markup import escape  # a message may hold brackets ("genkit-cvae[serve]", "[A,B]")

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)


def note(text: str) -> None:
    """One plain line on stderr (a plan's note, such as epochs raised by min_steps), in the main process only."""
    from genkit.runtime.distributed import world_from_env

    if world_from_env().is_main:
        err.print(text, highlight=False, markup=False)


class LazyProgress(Progress):
    """A bar that is shown by its first update; one never shown leaves no blank line when stopped."""

    def stop(self) -> None:
        if self.live.is_started:
            super().stop()


def cache_progress(description: str) -> tuple[Progress, Any]:
    """A progress bar with ETA and a ``callback(done, total)`` for cache builds."""
    progress = LazyProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TaskProgressColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=err, transient=False)
    task = progress.add_task(description, total=None)

    def callback(done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done, total=total)

    return progress, callback


@contextmanager
def training_display():
    """The rich display in the main process; silence in the other DDP processes."""
    from genkit.runtime.distributed import world_from_env

    if not world_from_env().is_main:
        yield None
        return
    with TrainingDisplay() as display:
        yield display


class TrainingDisplay:
    """Draws the training loop's events: a bar per epoch with every loss term and images/s."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[terms]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err)
        self.task = None

    def __enter__(self) -> "TrainingDisplay":
        return self  # started by the first event, so an error before any prints its line alone

    def __exit__(self, *exc) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def _start(self) -> None:
        if not self.progress.live.is_started:
            self.progress.start()

    def on_message(self, text: str) -> None:
        self._start()
        self.progress.console.print(text, highlight=False, markup=False)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", terms="loss -", ips="-")

    def on_step(self, epoch: int, step: int, metrics: dict | None) -> None:
        fields = {}
        if metrics:
            fields["terms"] = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k not in NOT_TERMS)
            fields["ips"] = f"{metrics.get('images_per_s', 0):.0f}"
        self.progress.update(self.task, completed=step, **fields)

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        parts = [f"epoch {epoch}"]
        parts += [f"{key} {_fmt(value)}" for key, value in record.items() if key.startswith(("train_", "val_"))]
        parts.append(f"{record.get('images_per_s', 0):.0f} img/s")
        parts += [f"warning: {w}" for w in record.get("warnings", ())]  # from the loss's warnings()
        self.progress.console.print("  ".join(parts), highlight=False, markup=False)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"

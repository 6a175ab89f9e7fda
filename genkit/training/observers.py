"""What the loop's events write into the run folder: the epoch grids, the logs and the checkpoints.

The trainer hands every event to ``Observers(grids, log, checkpoints, <the caller's observer>,
<TensorBoard>)``, in that order, so at an epoch's end the grid is drawn, ``metrics.jsonl`` and
the curves are written, then the checkpoint (the commit point), and only then does the caller
hear of the epoch. Beside the public events of :class:`genkit.training.loop.Observer` the loop
sends two of its own: ``on_train_start(state)`` once before the first step, and
``on_checkpoint(state)`` whenever a checkpoint is due mid-epoch (before the first step of a new
run, every ``--checkpoint-every`` steps, on a signal). Only the main process writes; every
process takes part in a checkpoint's barrier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from genkit.runtime import distributed
from genkit.runtime.distributed import World
from genkit.store.files import write_text_atomic
from genkit.store.images import plot_curves
from genkit.store.run_folder import LOSS_CURVE_FILE, LOSS_WEIGHTS_FILE, METRICS_FILE, STEPS_FILE, WEIGHTS_FILE
from genkit.store.weights import loss_has_state, save_weights, training_only
from genkit.training.averaging import WeightAverage
from genkit.training.checkpoints import save_checkpoint, step_tag
from genkit.training.epoch_grids import EpochGrids
from genkit.training.loop import LoopState


class GridWriter:
    """``samples/epoch_NNN.png`` after every epoch (the columns planned once, at the start)."""

    def __init__(self, grids: EpochGrids, say: Callable[[str], None]):
        self.grids, self.say = grids, say

    def on_train_start(self, state: LoopState) -> None:
        state.grid_cols = self.grids.plan(state.step, state.grid_cols, self.say)

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.grids.is_main:
            self.grids.write(epoch)


class RunLog:
    """``metrics.jsonl`` and ``loss_curves.png`` at each epoch's end, ``steps.jsonl`` at each checkpoint."""

    def __init__(self, out: Path, is_main: bool):
        self.out, self.is_main = out, is_main
        self.state = LoopState()

    def on_train_start(self, state: LoopState) -> None:
        self.state = state

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.is_main:
            write_text_atomic(self.out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.state.epochs_log))
            plot_curves(self.state.epochs_log, self.state.steps_log, self.out / LOSS_CURVE_FILE)
        self.on_checkpoint(self.state)

    def on_checkpoint(self, state: LoopState) -> None:
        if self.is_main:
            write_text_atomic(self.out / STEPS_FILE, "".join(json.dumps(s) + "\n" for s in state.steps_log))


class Checkpointer:
    """The run folder's weights (what ``load_run`` samples with), then the checkpoint: written last, it is
    the commit point, so a failure anywhere before it leaves the previous checkpoint in force and the
    resume redoes the rest."""

    def __init__(self, out: Path, world: World, model: torch.nn.Module, loss: Any, average: WeightAverage | None,
                 saved_state: Callable[[], dict[str, Any]]):
        self.out, self.world, self.model, self.loss, self.average = out, world, model, loss, average
        self.saved_state = saved_state
        self.sampling_model = average.model if average is not None else model
        self.state = LoopState()

    def on_train_start(self, state: LoopState) -> None:
        self.state = state

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        self.on_checkpoint(self.state)

    def on_checkpoint(self, state: LoopState) -> None:
        saved = self.saved_state()  # on every process: it gathers each one's random state
        if self.world.is_main:
            save_weights(self.sampling_model, self.out / WEIGHTS_FILE, exclude=training_only(self.model))
            if loss_has_state(self.loss):
                save_weights(self.loss, self.out / LOSS_WEIGHTS_FILE, exclude=training_only(self.loss))
            save_checkpoint(self.out, step_tag(state.step), self.model, saved, loss=self.loss,
                            average=self.average and self.average.model)
        distributed.barrier(self.world)

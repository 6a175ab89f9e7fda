"""Weight averaging (EMA): the exponential moving average of a model's weights, for sampling.

With ``--ema DECAY`` (``TrainSpec.ema``, 0 = off) the trainer keeps a copy of the model whose
parameters follow the trained ones after every optimizer step,

    avg ← avg + (1 − d_t)·(θ − avg),   d_t = min(DECAY, (1 + t) / (10 + t))

where t counts the updates so far: the warm-up (as in timm's and diffusers' EMA) keeps the
random initial weights from lingering in the average of a short run (with a fixed d = 0.999 they
would still weigh 0.999^750 ≈ 0.47 after six epochs of 125 steps). Buffers (batch-norm
statistics) are copied, not averaged. The average is what sampling, the epoch grids, the
validation loss and evaluation use: the run folder's ``model.safetensors`` holds it, and each
checkpoint holds it as ``ema.safetensors`` beside the trained weights, so a resumed run continues
the same average bit for bit.
"""

from __future__ import annotations

import copy

import torch

#: the average's weights inside a checkpoint folder
EMA_FILE = "ema.safetensors"


class WeightAverage:
    """An averaged copy of ``model`` (``self.model``), updated with :meth:`update` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average toward ``model``'s weights (on the device, no host sync)."""
        weight = 1.0 - self.current_decay()
        averaged = [p for p in self.model.parameters()]
        trained = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, trained, weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1

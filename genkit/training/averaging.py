"""Weight averaging (EMA): the exponential moving average of a model's weights, for sampling.

With ``--ema DECAY`` (``TrainSpec.ema``, 0 = off) the trainer keeps a copy of the model whose
parameters follow the trained ones after every optimizer step,

    avg ← avg + (1 − d_t)·(θ − avg),   d_t = min(DECAY, (1 + t) / (10 + t))

where t counts the updates so far: the warm-up (as in timm's and diffusers' EMA) keeps the
random initial weights from lingering in the average of a short run (with a fixed d = 0.999 they
would still weigh 0.999^750 ≈ 0.47 after six epochs of 125 steps). Buffers (batch-norm
statistics) are copied, not averaged, and so are the parts a model uses only in training (its
``training_only`` submodules: a discriminator), whose average nobody samples with. The average is what sampling, the epoch grids, the
validation loss and evaluation use: the run folder's ``model.safetensors`` holds it, and each
checkpoint holds it as ``ema.safetensors`` beside the trained weights, so a resumed run continues
the same average bit for bit.
"""

from __future__ import annotations

import copy

import torch

from genkit.store.weights import training_only, within

#: the average's weights inside a checkpoint folder
EMA_FILE = "ema.safetensors"


class WeightAverage:
    """An averaged copy of ``model`` (``self.model``), updated with :meth:`update` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        skipped = training_only(model)
        names = [n for n, _ in self.model.named_parameters()]
        #: positions in parameter order of the averaged parameters and of those copied (training-only)
        self._averaged = [i for i, n in enumerate(names) if not within(n, skipped)]
        self._copied = [i for i, n in enumerate(names) if within(n, skipped)]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average toward ``model``'s weights (on the device, no host sync)."""
        weight = 1.0 - self.current_decay()
        averaged, trained = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if self._copied:
            torch._foreach_copy_([averaged[i] for i in self._copied], [trained[i] for i in self._copied])
            averaged, trained = [averaged[i] for i in self._averaged], [trained[i] for i in self._averaged]
        torch._foreach_lerp_(averaged, trained, weight)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1


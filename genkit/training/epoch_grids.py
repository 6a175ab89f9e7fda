"""The sample grid a run draws after every epoch: the same rows and the same noise each time, so epochs compare."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from genkit.components.limits import derived_seed
from genkit.config import RunConfig
from genkit.sampling.draw import sample_images, seeded_noise
from genkit.store.files import write_text_atomic
from genkit.store.images import save_grid
from genkit.store.run_folder import ROWS_FILE, SAMPLES_DIR, epoch_grid_file

GRID_ROWS = 8
GRID_COLS = 8
#: the most an epoch's grid may take to draw: a model whose samples cost more gets fewer columns
GRID_SECONDS = 10.0


class EpochGrids:
    """Rows: the first ``GRID_ROWS`` distinct attribute vectors of the validation split. Columns: fixed noise.

    ``model`` is the one the run samples with (the weight average under ``--ema``); only the main
    process (``is_main``) writes.
    """

    def __init__(self, model: torch.nn.Module, attributes: torch.Tensor, config: RunConfig, device: torch.device,
                 out: Path, is_main: bool):
        self.model, self.config, self.device, self.out, self.is_main = model, config, device, out, is_main
        self.rows: list[torch.Tensor] = []
        for vector in attributes:
            if not any(torch.equal(vector, s) for s in self.rows):
                self.rows.append(vector)
            if len(self.rows) == GRID_ROWS:
                break
        self.noise = seeded_noise(model, GRID_COLS, derived_seed(config.train.seed, 1))
        self.condition = self.grid_noise = None

    def plan(self, step: int, cols: int, say: Callable[[str], None]) -> int:
        """The samples per row: at ``step`` 0 (a new run) the main process times one row and takes fewer
        columns when a grid would take more than ``GRID_SECONDS`` to draw; a resumed run keeps ``cols``."""
        rows = len(self.rows)
        if self.is_main and step == 0:
            seconds = self._time_row(self.rows[0])
            cols = GRID_COLS if seconds * rows <= GRID_SECONDS else \
                max(2, int(GRID_SECONDS / (seconds / GRID_COLS * rows)))
            per_grid = seconds / GRID_COLS * cols * rows
            say(f"epoch grids: {rows} rows of {cols} samples, about {per_grid:.1f} s each"
                + ("" if cols == GRID_COLS else " (fewer columns: samples are costly)"))
        self.cols = cols
        self.condition = torch.stack(self.rows).repeat_interleave(cols, dim=0).to(self.device)
        noise = self.noise[:cols]
        self.grid_noise = noise.repeat(rows, *([1] * (noise.dim() - 1))).to(self.device)
        if self.is_main:
            names = self.config.data.attribute_names
            labels = [",".join(n for n, v in zip(names, s.tolist()) if v > 0.5) or "(none)" for s in self.rows]
            (self.out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / SAMPLES_DIR / ROWS_FILE, json.dumps(labels, indent=1))
        return cols

    def write(self, epoch: int) -> None:
        """``samples/epoch_NNN.png`` of the model as it is now."""
        save_grid(self._draw(self.condition, self.grid_noise), epoch_grid_file(self.out, epoch), nrow=self.cols)

    def _draw(self, condition: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Samples at the model's default sampling options; training's random state is left as it was
        (a sampler that draws fresh noise uses a seeded generator of its own)."""
        model = self.model
        was_training = model.training
        model.eval()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            generator = torch.Generator(self.device).manual_seed(derived_seed(self.config.train.seed, 2))
            images = sample_images(model, condition, noise, None, self.device, generator, batch_size=len(condition))
        model.train(was_training)
        return images

    def _time_row(self, vector: torch.Tensor) -> float:
        """Seconds to draw one row of the grid (``GRID_COLS`` samples)."""
        condition = vector.reshape(1, -1).expand(len(self.noise), -1).to(self.device)
        started = time.perf_counter()
        self._draw(condition, self.noise.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

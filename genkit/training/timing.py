"""How long the device waits for data: the ``data_wait_s`` the training loop reports per window.

On the CPU the wait is the host's time inside the batch iterator. On CUDA the host runs ahead of
the GPU, so host time says little; instead a pair of CUDA events brackets each fetch on the
current stream, and the GPU time between them is what the GPU spent gathering or copying the
batch plus any time it sat idle because the host had not yet queued it. :meth:`DataWaitClock.take`
waits for the last timed fetch, which the loop's logging sync has already passed, so reading the
events costs no extra synchronisation.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")


class DataWaitClock:
    """Accumulates the data wait of the batches drawn through :meth:`timed` until :meth:`take`."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._host = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def timed(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches``, item by item, with the fetch of each one timed."""
        iterator = iter(batches)
        while True:
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                began = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._events.append((start, end))
            else:
                self._host += time.perf_counter() - began
            yield item

    def take(self) -> float:
        """Seconds of data wait since the last call (blocks until the last timed fetch is done)."""
        seconds = self._host
        if self._events:
            self._events[-1][1].synchronize()
            seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
        self._host, self._events = 0.0, []
        return seconds

"""SIGINT and SIGTERM during training: finish the step, checkpoint, stop with 128 + the signal."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genkit.errors import GenkitError


class TrainingInterrupted(GenkitError):
    """SIGINT/SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int, run_dir: Path):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: checkpoint written; resume with `genkit train --resume {run_dir}`")


@contextmanager
def stop_on_signals() -> Iterator[dict]:
    """Record SIGINT/SIGTERM in ``flag["signum"]`` instead of dying; a second signal stops at once."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] is not None:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

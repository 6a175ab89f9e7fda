"""What TensorBoard logging costs a training run: the same run with and without the event writer.

    python benchmarks/tensorboard_overhead.py [--size 16] [--channels 8,16] [--images 2048] [--batch 32]
                                              [--epochs 2] [--log-every 25] [--repeats 5]

Each repeat trains the same seeded run twice into fresh folders, ``tensorboard=False`` then
``tensorboard=True`` (the order alternating between repeats, so drift hits both alike), after one
warm-up run of each (the first opens the writer's imports). Per run, per step:

* loop: the epochs' own ``seconds`` in metrics.jsonl, the step loop with its logged windows (the
  per-window scalars and flush land here);
* run: the whole ``genkit.train`` call, which adds the epoch ends (validation, grid, checkpoint,
  and with the writer the epoch scalars, the grid image, hparams and config text);
* CPU: the process's CPU time (all threads, the writer's own included) over the ``genkit.train``
  call, which other jobs on a shared machine inflate far less than wall time.

Printed: the median of each with and without the writer and their ratios, and the most direct
figure: the time spent inside the writer's observer (opening, every ``on_step`` and
``on_epoch_end`` with their flushes, closing) as a share of the run's wall time. The default run is small
(16x16 images, a narrow cvae) so that steps are short and the logging's share is at its largest;
the cost per logged window and per epoch end does not grow with the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import wraps
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", default="8,16", help="the cvae's channels")
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--images", type=int, default=2048, help="training images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GENKIT_CACHE", tempfile.mkdtemp(prefix="genkit-bench-"))

    import genkit

    count = int(args.images / 0.8) + 1  # shapes' train split is 80 %
    channels = [int(c) for c in args.channels.split(",")]
    config = genkit.plan_run("cvae", "shapes", data_options={"count": count}, image_size=args.size,
                             model_options={"channels": channels, "latent_dim": args.latent_dim},
                             batch_size=args.batch, epochs=args.epochs, log_every=args.log_every, device="cpu")
    work = Path(tempfile.mkdtemp(prefix="genkit-tb-bench-"))
    parts = ("loop", "run", "CPU")
    results: dict[bool, dict[str, list[float]]] = {k: {p: [] for p in parts} for k in (False, True)}
    in_writer = time_the_writer()
    shares: list[float] = []

    def once(logging: bool, keep: bool) -> None:
        out = work / f"{'tb' if logging else 'plain'}-{len(list(work.iterdir()))}"
        in_writer[0] = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        genkit.train(config, out, tensorboard=logging)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = records[-1]["step"]
        if keep:
            results[logging]["loop"].append(sum(r["seconds"] for r in records) / steps)
            results[logging]["run"].append(wall / steps)
            results[logging]["CPU"].append(cpu / steps)
            if logging:
                shares.append(in_writer[0] / wall)

    once(False, keep=False)
    once(True, keep=False)
    for repeat in range(args.repeats):
        for logging in ((False, True) if repeat % 2 == 0 else (True, False)):
            once(logging, keep=True)

    median = {k: {part: statistics.median(v) for part, v in parts.items()} for k, parts in results.items()}
    print(f"machine: {machine()}")
    print(f"run: cvae (channels {channels}, latent {args.latent_dim}) on shapes {args.size}x{args.size}, "
          f"{args.images} images, batch {args.batch}, "
          f"{args.epochs} epochs, --log-every {args.log_every}; {args.repeats} interleaved repeats, medians")
    rows = [[part, f"{median[False][part] * 1e3:.2f}", f"{median[True][part] * 1e3:.2f}",
             f"{median[True][part] / median[False][part]:.4f}"] for part in parts]
    print(table(rows, ("time per step", "without (ms)", "with TensorBoard (ms)", "ratio")))
    print(f"time inside the writer's observer: {statistics.median(shares) * 100:.2f} % of the run's wall time "
          f"(median; each run: {', '.join(f'{s * 100:.2f}' for s in shares)} %)")


def time_the_writer() -> list[float]:
    """Adds the seconds spent in TensorBoardLog's methods to the returned one-item list."""
    from genkit.training.tensorboard import TensorBoardLog

    spent = [0.0]
    for name in ("__init__", "on_step", "on_epoch_end", "close"):
        method = getattr(TensorBoardLog, name)

        @wraps(method)
        def timed(*args, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        setattr(TensorBoardLog, name, timed)
    return spent


if __name__ == "__main__":
    main()

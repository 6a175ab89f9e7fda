"""Building the HDF5 cache with 1 and with 2 decoding workers.

Target: 2 workers at least 1.7x faster than 1 on a 2-core machine.

    python benchmarks/cache_build.py [--images 400] [--size 64] [--repeats 2]

Each build starts from scratch into its own cache folder; the best of ``--repeats`` builds per
worker count is reported (other processes on a shared machine only ever slow a build down).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import genkit  # noqa: F401  (imported before genkit_datasets, which it imports)
from _realistic import celeba_like, cub_like, machine, table
from genkit_datasets.cache import cache_path, prepare_cache
from genkit_datasets.celeba import celeba_index
from genkit_datasets.cub import cub_index


def build_seconds(name: str, index, size: tuple[int, int], workers: int, folder: Path) -> float:
    path = cache_path(name, size, {}, folder)
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    info = prepare_cache(name, index, path, size, workers=workers)
    seconds = time.perf_counter() - started
    assert info.built and info.count == len(index)
    path.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="images per dataset")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = (args.size, args.size)
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, make, scan in (("celeba", celeba_like, celeba_index), ("cub", cub_like, cub_index)):
            root = make(tmp / name, args.images)
            started = time.perf_counter()
            index = scan(root)
            scanned = time.perf_counter() - started
            best = {1: float("inf"), 2: float("inf")}
            for _ in range(args.repeats):
                for workers in (1, 2):
                    best[workers] = min(best[workers], build_seconds(name, index, size, workers, tmp / "cache"))
            rows.append((name, len(index), f"{size[0]}x{size[1]}", f"{scanned * 1e3:.0f}",
                         f"{best[1]:.2f} ({len(index) / best[1]:.0f}/s)", f"{best[2]:.2f} ({len(index) / best[2]:.0f}/s)",
                         f"{best[1] / best[2]:.2f}x"))
    print(f"\ncache build from scratch, best of {args.repeats}; load average at the end {os.getloadavg()[0]:.1f}")
    print(table(rows, ("dataset", "images", "size", "scan ms", "1 worker s", "2 workers s", "speed-up")))


if __name__ == "__main__":
    main()

"""Peak memory while streaming an epoch from the HDF5 cache: a dataset vs one 10x smaller.

Target: the larger dataset's peak within 200 MB of the smaller one's (streaming does not hold
the data set in memory).

    python benchmarks/cache_memory.py [--images 5000] [--size 64] [--batch 64]

Each measurement runs in a fresh subprocess (peak RSS, ``ru_maxrss``), reading one shuffled
epoch of the train split through a DataLoader as ``genkit train --data-in disk`` does, with 0
and with 2 loader workers (the workers' peak is reported separately).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import genkit
from _realistic import celeba_like, machine, table

STREAM = r"""
import json, resource, sys, time
import torch
import genkit
from genkit_datasets.torch_dataset import CachedImageDataset
path, batch, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ds = CachedImageDataset(path, "train")
loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     generator=torch.Generator().manual_seed(0))
started, seen, total = time.perf_counter(), 0, 0.0
for images, attributes in loader:
    seen += len(images)
    total += float(images.mean())
mb = lambda who: resource.getrusage(who).ru_maxrss / 1024
print(json.dumps({"images": seen, "seconds": time.perf_counter() - started,
                  "main_mb": mb(resource.RUSAGE_SELF), "worker_mb": mb(resource.RUSAGE_CHILDREN)}))
"""


def stream(path: Path, batch: int, workers: int) -> dict:
    result = subprocess.run([sys.executable, "-c", STREAM, str(path), str(batch), str(workers)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images of the larger dataset")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(machine())
    rows = []
    peaks: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for count in (args.images // 10, args.images):
            root = celeba_like(tmp / f"celeba-{count}", count)
            info, _ = genkit.prepare_dataset("celeba", root=root, image_size=args.size,
                                             cache_dir=tmp / f"cache-{count}", workers=2)
            for workers in (0, 2):
                r = stream(info.path, args.batch, workers)
                peaks[(count, workers)] = r["main_mb"] + (r["worker_mb"] if workers else 0)
                rows.append((count, f"{info.size_bytes / 2**20:.0f}", workers, r["images"], f"{r['seconds']:.1f}",
                             f"{r['main_mb']:.0f}", f"{r['worker_mb']:.0f}" if workers else "-"))
    print(f"\nstreaming one epoch of the train split from the cache ({args.size}x{args.size}, batch {args.batch})")
    print(table(rows, ("images", "cache MiB", "loader workers", "streamed", "seconds", "peak RSS main MB",
                       "peak RSS per worker MB")))
    small, large = args.images // 10, args.images
    for workers in (0, 2):
        growth = peaks[(large, workers)] - peaks[(small, workers)]
        print(f"workers {workers}: larger minus smaller peak = {growth:.0f} MB (main + one worker)")


if __name__ == "__main__":
    main()

"""Reading batches from the HDF5 cache vs decoding and resizing the JPEGs with PIL; data wait in training.

Targets: a batch from the cache at least 20x faster per image than decoding and resizing the
JPEGs at the same size; at batch 64 on 2 CPU cores, training waits for data under 5% of the time.

    python benchmarks/cache_vs_jpeg.py [--images 1024] [--size 64] [--batch 64] [--steps 20]

Both sides read files the benchmark has just written (warm OS page cache), in one process; each
figure is the best of 5 passes over the same 8 random batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import genkit
from _realistic import celeba_like, cub_like, machine, table
from genkit.data.batches import Batches
from genkit.components.build import build_components
from genkit_datasets.celeba import celeba_index
from genkit_datasets.cub import cub_index
from genkit_datasets.torch_dataset import CachedImageDataset


def per_image_us(read, batches: list[np.ndarray], repeats: int = 5) -> float:
    """Best of ``repeats`` passes over ``batches``: microseconds per image."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        count = 0
        for rows in batches:
            read(rows)
            count += len(rows)
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def compare(name: str, index, cache: Path, size: tuple[int, int], batch: int, rng) -> tuple:
    ds = CachedImageDataset(cache, "train")
    positions = [rng.choice(len(ds), batch, replace=False) for _ in range(8)]
    ids = [ds.indices[p] for p in positions]
    jpeg = per_image_us(lambda rows: [index.reader(int(i), size) for i in rows], ids)
    stored = per_image_us(lambda rows: ds.read_uint8(rows), positions)
    floats = per_image_us(lambda rows: ds.__getitems__(rows.tolist()), positions)
    return (name, f"{size[0]}x{size[1]}", batch, f"{jpeg:.0f}", f"{stored:.1f}", f"{floats:.1f}",
            f"{jpeg / stored:.0f}x / {jpeg / floats:.0f}x")


def training_wait(cache: Path, root: Path, size: tuple[int, int], batch: int, steps: int, workers: int) -> tuple:
    """Share of a CVAE training loop's time spent waiting for the next batch (the trainer's disk path)."""
    config = genkit.plan_run("cvae", "celeba", root=str(root), image_size=size, batch_size=batch)
    _, model, loss_fn = build_components(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = Batches(CachedImageDataset(cache, "train"), batch, 0, torch.device("cpu"), "disk", workers=workers)
    waited = total = 0.0
    done, epoch = 0, 0
    while done < steps:
        epoch += 1
        it = iter(batches.epoch(epoch))
        while done < steps:
            started = time.perf_counter()
            try:
                images_u8, cond = next(it)
            except StopIteration:
                break
            got = time.perf_counter()
            images = images_u8.float().div_(255)
            result = loss_fn(model(images, cond), images)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            optimizer.step()
            if done >= 3:  # skip warm-up steps (worker start, first allocations)
                waited += got - started
                total += time.perf_counter() - started
            done += 1
    return (f"{size[0]}x{size[1]}", batch, workers, torch.get_num_threads(), f"{total / (steps - 3) * 1e3:.0f}",
            f"{100 * waited / total:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="CelebA-like images (CUB-like: half)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    size = (args.size, args.size)
    rng = np.random.default_rng(0)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        celeba = celeba_like(tmp / "celeba", args.images)
        cub = cub_like(tmp / "cub", args.images // 2)
        rows = []
        for name, root, index in (("celeba (178x218 JPEG)", celeba, celeba_index(celeba)),
                                  ("cub (~500x375 JPEG)", cub, cub_index(cub))):
            info, _ = genkit.prepare_dataset(name.split()[0], root=root, image_size=size, cache_dir=tmp / "cache",
                                             workers=2)
            rows.append(compare(name, index, info.path, size, args.batch, rng))
        print("\nper image: PIL open + decode + centre crop + resize, vs a random batch from the cache as uint8 "
              "(read_uint8, what the trainer reads) and as float tensors in [0, 1] (a DataLoader's __getitems__)")
        print(table(rows, ("dataset", "size", "batch", "JPEG us/img", "cache uint8 us/img", "cache float us/img",
                           "speed-up uint8 / float")))
        info, _ = genkit.prepare_dataset("celeba", root=celeba, image_size=size, cache_dir=tmp / "cache")
        waits = [training_wait(info.path, celeba, size, args.batch, args.steps, w) for w in (0, 2)]
        print(f"\nCVAE training on the celeba-like cache, {args.steps} steps: time spent waiting for the next batch")
        print(table(waits, ("size", "batch", "DataLoader workers", "torch threads", "ms/step", "waiting")))


if __name__ == "__main__":
    main()

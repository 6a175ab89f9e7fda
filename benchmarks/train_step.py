"""genkit's training loop against a minimal raw PyTorch loop: same model, data, batch and steps.

    python benchmarks/train_step.py [--batch 64] [--size 64] [--images 1024] [--repeats 5]

The genkit side is ``genkit.train`` itself (batching, loss-term accumulation on the device,
non-finite check, logging every 25 steps); its time per epoch is the loop's own ``seconds`` in
metrics.jsonl, which leaves out the end-of-epoch validation, sample grid and checkpoint. The raw
side is the textbook loop over the same uint8 tensor on the same device, with the same fused
Adam; an observer runs one raw epoch after every genkit epoch, so the two take turns in one
process and drift hits both alike. Printed: median seconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, table  # noqa: E402


class TakeTurns:
    """Observer: after each genkit epoch, one raw epoch, timed the same way (to the last sync)."""

    def __init__(self, raw_epoch):
        self.raw_epoch = raw_epoch
        self.genkit: list[float] = []
        self.raw: list[float] = []

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        self.genkit.append(record["seconds"])
        started = time.perf_counter()
        self.raw_epoch()
        self.raw.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024, help="training images (one epoch per timed call)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GENKIT_CACHE", tempfile.mkdtemp(prefix="genkit-bench-"))

    import genkit
    from _synthetic import build_components

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = int(args.images / 0.8) + 1
    config = genkit.plan_run(data_options={"count": count}, image_size=args.size, batch_size=args.batch,
                             epochs=1 + args.repeats, log_every=25, device=str(device),
                             data_in="gpu" if device.type == "cuda" else "ram")
    data = genkit.load_dataset("shapes", split="train", image_size=args.size, count=count)
    images_u8, attributes = data.images_uint8().to(device), data.attributes.to(device)
    steps = -(-len(images_u8) // args.batch)

    torch.manual_seed(0)
    _, model, loss_fn = build_components(config)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)  # genkit's optimizer
    generator = torch.Generator().manual_seed(0)

    def raw_epoch() -> None:
        order = torch.randperm(len(images_u8), generator=generator).to(device)
        for start in range(0, len(order), args.batch):
            idx = order[start:start + args.batch]
            x = images_u8[idx].float().div_(255)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            result = loss_fn(model(x, attributes[idx]), x)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    turns = TakeTurns(raw_epoch)
    genkit.train(config, out_dir=Path(tempfile.mkdtemp(prefix="genkit-bench-run-")) / "run", observer=turns)
    # the first epoch of each side is the warm-up (first allocations, kernel selection)
    times = {"raw PyTorch loop": statistics.median(turns.raw[1:]),
             "genkit loop (genkit.train)": statistics.median(turns.genkit[1:])}
    print(f"machine: {machine()}")
    print(f"{len(images_u8)} images {args.size}x{args.size}, batch {args.batch}, {steps} steps per timed epoch, "
          f"device {device}, median of {args.repeats} epochs each, taking turns\n")
    rows = [(name, f"{t / steps * 1000:.1f} ms", f"{len(images_u8) / t:.0f}") for name, t in times.items()]
    print(table(rows, ("loop", "step", "images/s")))
    ratio = times["genkit loop (genkit.train)"] / times["raw PyTorch loop"]
    print(f"\ngenkit / raw step time: {ratio:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()

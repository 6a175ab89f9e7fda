"""genkit's training loop against a minimal raw PyTorch loop: same model, data, batch and steps.

    python benchmarks/train_step.py [--batch 64] [--size 64] [--images 1024] [--repeats 5]

The genkit side is one epoch of :class:`genkit.training.Trainer` (batching, loss-term
accumulation on the device, non-finite check, logging every 25 steps); the raw side is the
textbook loop over the same uint8 tensor. Printed: median seconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import interleaved, machine, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024, help="training images (one epoch per timed call)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GENKIT_CACHE", tempfile.mkdtemp(prefix="genkit-bench-"))

    import genkit
    from genkit.components import build_components
    from genkit.training import Trainer, make_optimizer

    count = int(args.images / 0.8) + 1
    config = genkit.plan_run(data_options={"count": count}, image_size=args.size, batch_size=args.batch,
                             epochs=1000, log_every=25)
    run_dir = Path(tempfile.mkdtemp(prefix="genkit-bench-run-"))
    trainer = Trainer(config, run_dir)
    steps = len(trainer.batches)

    def genkit_epoch() -> None:
        trainer.batch_in_epoch = 0
        trainer._train_epoch(steps, {"signum": None})
        trainer.sums, trainer.seen = {}, 0

    torch.manual_seed(0)
    _, model, loss_fn = build_components(trainer.config)
    optimizer = make_optimizer(model, config.train.lr)  # the same fused Adam as genkit's
    images_u8, attributes = trainer.train_set.images_uint8(), trainer.train_set.attributes
    generator = torch.Generator().manual_seed(0)

    def raw_epoch() -> None:
        order = torch.randperm(len(images_u8), generator=generator)
        for start in range(0, len(order), args.batch):
            idx = order[start:start + args.batch]
            x = images_u8[idx].float().div_(255)
            result = loss_fn(model(x, attributes[idx]), x)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            optimizer.step()

    times = interleaved({"raw PyTorch loop": raw_epoch, "genkit Trainer": genkit_epoch}, repeats=args.repeats)
    print(f"machine: {machine()}")
    print(f"{len(images_u8)} images {args.size}x{args.size}, batch {args.batch}, {steps} steps per timed epoch\n")
    rows = [(name, f"{t / steps * 1000:.1f} ms", f"{len(images_u8) / t:.0f}") for name, t in times.items()]
    print(table(rows, ("loop", "step", "images/s")))
    ratio = times["genkit Trainer"] / times["raw PyTorch loop"]
    print(f"\ngenkit / raw step time: {ratio:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()

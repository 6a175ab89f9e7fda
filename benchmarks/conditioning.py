"""Fused against naive tiled conditioning: one CVAE training step at 40 and 512 condition values.

    python benchmarks/conditioning.py [--batch 64] [--size 64] [--repeats 5]

40 is CelebA's attribute count, 512 CUB's (312 attributes + 200 species). Prints the median
step time of each case, measured in turn in one process, and the two ratios the performance
targets are about.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import interleaved, machine, table  # noqa: E402

from genkit.training.loop import make_optimizer  # noqa: E402
from genkit_plugins.beta_elbo import BetaELBO  # noqa: E402
from genkit_plugins.cvae import CVAE  # noqa: E402
from genkit_plugins.tiled_onehot import TiledOneHot  # noqa: E402


def make_step(attributes: int, mode: str, batch: int, size: int, device: torch.device):
    torch.manual_seed(0)
    model = CVAE((3, size, size), TiledOneHot([f"a{i}" for i in range(attributes)], mode=mode)).to(device)
    loss_fn = BetaELBO(0.75)
    optimizer = make_optimizer(model, 1e-3)
    images = torch.rand(batch, 3, size, size, device=device)
    condition = (torch.rand(batch, attributes, device=device) > 0.8).float()

    def step() -> None:
        result = loss_fn(model(images, condition), images)
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed call")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = {}
    for attributes in (40, 512):
        for mode in ("fused", "naive"):
            step = make_step(attributes, mode, args.batch, args.size, device)
            cases[(attributes, mode)] = (lambda s=step: [s() for _ in range(args.steps)])
    times = interleaved(cases, repeats=args.repeats)
    per_step = {k: v / args.steps for k, v in times.items()}
    print(f"machine: {machine()}")
    print(f"batch {args.batch}, {args.size}x{args.size}, one training step (forward, backward, Adam)\n")
    rows = [(a, m, f"{per_step[(a, m)] * 1000:.0f} ms", f"{args.batch / per_step[(a, m)]:.0f}")
            for a, m in per_step]
    print(table(rows, ("condition values", "conditioning", "step", "images/s")))
    print()
    print(f"fused 512 / fused 40 step time: {per_step[(512, 'fused')] / per_step[(40, 'fused')]:.2f}x (target <= 1.2x)")
    print(f"naive 512 / fused 512 step time: {per_step[(512, 'naive')] / per_step[(512, 'fused')]:.2f}x (target >= 2.5x)")
    print(f"naive 40 / fused 40 step time: {per_step[(40, 'naive')] / per_step[(40, 'fused')]:.2f}x")


if __name__ == "__main__":
    main()

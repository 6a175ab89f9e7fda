"""Sampling throughput of the CVAE: images per second at 64x64 for 40 and 512 condition values.

    python benchmarks/sampling.py [--batch 256] [--size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import interleaved, machine, table  # noqa: E402

from genkit_plugins.cvae import CVAE  # noqa: E402
from genkit_plugins.tiled_onehot import TiledOneHot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = {}
    for attributes in (40, 512):
        model = CVAE((3, args.size, args.size), TiledOneHot([f"a{i}" for i in range(attributes)])).to(device).eval()
        condition = (torch.rand(args.batch, attributes, device=device) > 0.8).float()
        cases[attributes] = lambda m=model, c=condition: m.sample(c)
    times = interleaved(cases, repeats=args.repeats)
    print(f"machine: {machine()}")
    print(f"batch {args.batch}, {args.size}x{args.size}, fp32, device {device}\n")
    print(table([(a, f"{t * 1000:.1f} ms", f"{args.batch / t:.0f}") for a, t in times.items()],
                ("condition values", "batch time", "images/s")))


if __name__ == "__main__":
    main()

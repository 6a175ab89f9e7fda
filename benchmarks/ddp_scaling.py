"""Images/s of `genkit train` with 1 process against N processes under torchrun (DDP).

    python benchmarks/ddp_scaling.py [--nproc 2] [--images 2048] [--batch 64] [--size 64]

On a CPU the N processes use gloo and one thread each (the single process gets all the threads),
so the ratio shows the per-step cost of DDP's gradient all-reduce; on a GPU machine each process
takes one GPU (NCCL). The figure is the second epoch's images/s from metrics.jsonl, so start-up
and cache building are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, table  # noqa: E402


def run(nproc: int, args, workdir: Path) -> float:
    out = workdir / f"run-{nproc}"
    train = ["train", "--data-opt", f"count={int(args.images / 0.8) + 1}", "--image-size", str(args.size),
             "--batch-size", str(args.batch), "--epochs", "2", "--log-every", "1000", "--out", str(out)]
    env = {**os.environ, "GENKIT_CACHE": str(workdir / "cache")}
    if nproc == 1:
        command = [sys.executable, "-m", "genkit", *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "genkit", *train]
        import torch

        if not torch.cuda.is_available():
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or nproc) // nproc))
    subprocess.run(command, check=True, env=env, capture_output=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="genkit-ddp-"))
    one = run(1, args, workdir)
    many = run(args.nproc, args, workdir)
    print(f"machine: {machine()}")
    print(f"{args.images} images {args.size}x{args.size}, global batch {args.batch}, second epoch\n")
    print(table([("1", f"{one:.0f}", f"{args.batch / one * 1000:.0f} ms"),
                 (str(args.nproc), f"{many:.0f}", f"{args.batch / many * 1000:.0f} ms")],
                ("processes", "images/s", "global step")))
    print(f"\n{args.nproc} processes / 1 process, time per global step: {one / many:.2f}x")


if __name__ == "__main__":
    main()

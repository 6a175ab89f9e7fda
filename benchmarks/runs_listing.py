"""How long `genkit runs` takes over many run folders (the target: 200 folders in under 2 s).

    python benchmarks/runs_listing.py [--runs 200] [--epochs 20] [--repeats 7] [--keep DIR]

Makes synthetic run folders shaped like real ones: 5 sweep folders of 20 points each plus plain
runs, each with a full ``config.json``, ``metrics.jsonl`` (one record per epoch with every loss
term), ``steps.jsonl``, ``evaluation_test.json`` (with its copy of the config and per-attribute
accuracies), TensorBoard-sized event and checkpoint files, and a ``samples/`` folder. No torch
is imported here. Then times the real command, ``python -m genkit runs DIR`` in a fresh process
(start-up included), as a table, with ``--json`` and with ``--sort fd``, and on an empty folder
(start-up alone): the median wall time of the repeats, the commands taking turns, and the CPU time
the process used (which other jobs on a shared machine do not inflate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from genkit.config import ComponentSpec, DataSpec, RunConfig, TrainSpec

ATTRIBUTES = [f"attribute_{i}" for i in range(40)]  # CelebA-sized
TERMS = ("loss", "nll", "mse", "kl", "sigma")


def write_run(folder: Path, rng: random.Random, epochs: int, lr: float) -> None:
    folder.mkdir(parents=True)
    config = RunConfig(
        data=DataSpec("celeba", {"variant": "aligned"}, "/data/celeba", (64, 64), None, ATTRIBUTES, "ab" * 32),
        conditioner=ComponentSpec("tiled-onehot", {"mode": "fused"}),
        model=ComponentSpec("cvae", {"latent_dim": 32, "channels": [32, 64], "kernel_size": 3, "prior": "learned"}),
        loss=ComponentSpec("gaussian-elbo", {"sigma": "learned", "kl_weight": 1.0, "free_bits": 0.0}),
        train=TrainSpec(epochs=epochs, lr=lr), genkit_version="0.1.0")
    (folder / "config.json").write_text(config.to_json())
    records = []
    for epoch in range(1, epochs + 1):
        record = {"epoch": epoch, "step": epoch * 500, "images_per_s": rng.uniform(800, 900), "seconds": 20.0}
        record.update({f"{split}_{t}": rng.uniform(0, 100) for split in ("train", "val") for t in TERMS})
        records.append(record)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    steps = [{"step": s, "epoch_float": s / 500, **{t: rng.uniform(0, 100) for t in TERMS}} for s in
             range(25, epochs * 500 + 1, 25)]
    (folder / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    accuracy = {a: rng.uniform(0.5, 1) for a in ATTRIBUTES}
    (folder / "evaluation_test.json").write_text(json.dumps({
        "run": str(folder), "dataset": "celeba", "split": "test", "images": 19962, "config": asdict(config),
        "mse": 50.0, "kl": 30.0, "elbo": -1000.0, "cll": -990.0, "attribute_accuracy": 0.8,
        "per_attribute_accuracy": accuracy, "min_attribute_accuracy": min(accuracy.values()),
        "weakest_attribute": min(accuracy, key=accuracy.get), "classifier_accuracy": 0.9,
        "per_attribute_classifier_accuracy": accuracy, "relative_attribute_accuracy": rng.uniform(0.6, 1),
        "diversity": 0.1, "data_diversity": 0.12, "diversity_ratio": rng.uniform(0.5, 1.2), "fd": rng.uniform(1, 9),
        "fd_floor": 0.5}, indent=1))
    (folder / f"events.out.tfevents.{int(time.time())}.host.1.0").write_bytes(os.urandom(200_000))
    for name in ("samples", "checkpoints/step-000010000", "evaluation_test"):
        (folder / name).mkdir(parents=True)
    (folder / "checkpoints" / "step-000010000" / "model.safetensors").write_bytes(os.urandom(100_000))


def make_runs(root: Path, count: int, epochs: int) -> None:
    rng = random.Random(0)
    for i in range(count):
        sweep = i // 20 if i < 100 else None
        folder = root / f"sweep-{sweep}" / f"lr-{i}" if sweep is not None else root / f"run-{i:03d}"
        write_run(folder, rng, epochs, lr=1e-3 * (1 + i % 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="make the folders here (and keep them)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="genkit-runs-bench-")) / "runs"
    if not root.exists():
        make_runs(root, args.runs, args.epochs)
    empty = Path(tempfile.mkdtemp(prefix="genkit-runs-empty-"))
    commands = {"genkit runs DIR": [str(root)], "genkit runs DIR --json": [str(root), "--json"],
                "genkit runs DIR --sort fd": [str(root), "--sort", "fd"],
                "genkit runs EMPTY (start-up alone)": [str(empty)]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, extra in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "genkit", "runs", *extra], capture_output=True, text=True)
            times[name].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            assert done.returncode == 0, done.stderr
    listed = json.loads(subprocess.run([sys.executable, "-m", "genkit", "runs", str(root), "--json"],
                                       capture_output=True, text=True).stdout)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {len(listed)} runs listed ({args.epochs} epochs each)")
    for name, values in times.items():
        print(f"{name}: wall median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}), "
              f"CPU (user + sys) median {statistics.median(cpu[name]):.3f} s; {args.repeats} runs")


if __name__ == "__main__":
    main()

"""One short `genkit.train` run for benchmarks/gpu.py's distributed section.

    python benchmarks/_ddp_worker.py --backend none ...                  # a plain single process
    torchrun --standalone --nproc_per_node 1 benchmarks/_ddp_worker.py --backend nccl ...
    torchrun --standalone --nproc_per_node 1 benchmarks/_ddp_worker.py --backend gloo ...

With ``nccl`` genkit joins the process group itself (the real path: NCCL on a CUDA device); with
``gloo`` this script creates a gloo group first, and genkit uses the group it finds. Deterministic
algorithms are asked for (warn-only), so the runs can be compared weight for weight. The last line
printed is ``GENKIT_DDP_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import genkit  # noqa: E402
import _synthetic  # noqa: E402


class BackendProbe:
    """Observer: which process group the loop actually ran in, and the last epoch's record."""

    def __init__(self):
        self.backend = None
        self.ddp = False
        self.record: dict = {}

    def on_message(self, text):
        if text.startswith("training ") and text.endswith(" processes"):  # genkit took its distributed path
            self.ddp = True

    def on_epoch_start(self, epoch, epochs, steps):
        if dist.is_available() and dist.is_initialized():
            self.backend = str(dist.get_backend())

    def on_epoch_end(self, epoch, record):
        self.record = record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("none", "nccl", "gloo"), required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--data-options", required=True, help="JSON options of the bench-synthetic dataset")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    if args.backend == "gloo" and "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun
        if args.device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="gloo")
    name = _synthetic.register()
    config = genkit.plan_run(data=name, data_options=json.loads(args.data_options), image_size=args.size,
                             limit=args.limit, batch_size=args.batch, epochs=args.epochs, log_every=5,
                             device=args.device, data_in="ram", seed=0)
    probe = BackendProbe()
    run = genkit.train(config, out_dir=args.out, observer=probe, cache_dir=args.cache_dir)
    latest = Path(args.out) / "checkpoints" / "latest"
    print("GENKIT_DDP_RESULT " + json.dumps({
        "backend": probe.backend or "none", "genkit_ddp": probe.ddp, "device": str(run.device), "seconds": time.perf_counter() - started,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "train_loss": probe.record.get("train_loss"),
        "checkpoint": latest.read_text().strip() if latest.is_file() else None,
    }), flush=True)


if __name__ == "__main__":
    main()

"""DDP on CPU with gloo: two processes under torchrun train one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_writes_one_run(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genkit",
               "train", "--data-opt", "count=160", "--image-size", "16", "--batch-size", "16", "--epochs", "2",
               "--latent-dim", "4", "--device", "cpu", "--out", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    # 128 training images, global batch 16 over 2 processes: 8 steps per epoch on each
    assert epochs[-1]["step"] == 16
    assert (run / "model.safetensors").is_file() and (run / "samples" / "epoch_002.png").is_file()
    assert len(list(tmp_path.iterdir())) == 1
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # TensorBoard: the main process only


def test_one_process_under_torchrun_takes_the_distributed_path(monkeypatch):
    from genkit.runtime.distributed import world_from_env

    for name, value in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not world_from_env().distributed  # a plain process with stray variables: no process group
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # what torchrun sets for its workers
    world = world_from_env()
    assert world.distributed and world.size == 1 and world.is_main

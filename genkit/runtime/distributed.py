"""torch.distributed glue: process groups under torchrun, and the ``--nproc`` launcher.

genkit never rolls its own scheme: ``torchrun`` (or ``genkit train --nproc N``, which calls
torch.distributed's own launcher) sets RANK, WORLD_SIZE and LOCAL_RANK; each process trains a
DistributedDataParallel replica on its share of every global batch. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from genkit.errors import UsageError, shown


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    #: started by torchrun: join its process group even as its only process, so that
    #: ``torchrun --nproc_per_node 1`` runs the same DDP path (NCCL/gloo, all-reduce) as N processes.
    launched: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), size,
                 launched="TORCHELASTIC_RUN_ID" in os.environ)


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group torchrun set up; returns this process's device."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def broadcast_module(module: torch.nn.Module) -> None:
    """Every parameter and buffer of ``module`` as the first process has it (what DDP does at its start,
    for modules a component steps itself)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


def barrier(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(world: World, values: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather(world: World, tensor: torch.Tensor) -> list[torch.Tensor]:
    """``tensor`` (of one shape on every process) from every process, in rank order, on the CPU."""
    if not world.distributed:
        return [tensor.cpu()]
    local = tensor.cuda() if dist.get_backend() == "nccl" else tensor  # NCCL moves only CUDA tensors
    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local.contiguous())
    return [part.cpu() for part in parts]


def shutdown(world: World) -> None:
    """Leave the process group once every process has reached this point: one that tears its connections
    down while another still uses them can abort at exit ("terminate called without an active exception",
    seen under load on gloo)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, args: list[str]) -> int:
    """Run ``genkit <args>`` in ``nproc`` processes through torch.distributed's launcher."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc} must be a positive integer")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "genkit", *args]
    return subprocess.call(command)


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (to re-launch without ``--nproc``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an explicit ``cuda`` without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UsageError(f"device {shown(device)} is not valid; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {shown(device)} asked for, but no CUDA GPU is available; use --device cpu or auto")
    if chosen.type not in ("cpu", "cuda"):
        raise UsageError(f"device {shown(device)} is not supported; use auto, cpu, cuda or cuda:N")
    return chosen

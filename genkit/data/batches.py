"""Where training images live (GPU, RAM or disk) and the order they come in."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DistributedSampler

from genkit.errors import UsageError
from genkit.runtime.memory import available_bytes, format_bytes
from genkit_datasets.torch_dataset import CachedImageDataset

#: share of free GPU memory (CUDA) and of available RAM a training split may take
GPU_SHARE = 0.3
RAM_SHARE = 0.4


def choose_placement(requested: str, dataset: CachedImageDataset, device: torch.device) -> tuple[str, str]:
    """``(placement, why)``: ``gpu`` or ``ram`` when the split fits comfortably, else ``disk``.

    RAM is judged by the memory the kernel reports as available (reclaimable page cache
    included, see :mod:`genkit.runtime.memory`), so a cache just built and still in the page cache does
    not push training onto the disk. ``why`` is the start line's explanation, e.g.
    ``ram (2.0 GB of 23 GB available)``.
    """
    nbytes = len(dataset) * math.prod(dataset.image_shape)
    if requested != "auto":
        if requested == "gpu" and device.type != "cuda":
            raise UsageError("--data-in gpu needs a CUDA device; use --data-in ram or auto")
        return requested, f"{requested} (--data-in {requested}, {format_bytes(nbytes)})"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < GPU_SHARE * free:
            return "gpu", f"gpu ({format_bytes(nbytes)} of {format_bytes(free)} free GPU memory)"
    available = available_bytes()
    if nbytes < RAM_SHARE * available:
        return "ram", f"ram ({format_bytes(nbytes)} of {format_bytes(available)} available)"
    return "disk", (f"disk ({format_bytes(nbytes)} is more than {RAM_SHARE:.0%} of the {format_bytes(available)} "
                    "of memory available; streamed from the cache)")


class Batches:
    """This process's shuffled batches of ``(uint8 images, float attributes)``, on ``device``.

    The order comes from a :class:`DistributedSampler` seeded per epoch, so it is the same on
    every run with the same seed, and each of ``world_size`` processes gets its own share.
    ``batch_size`` is this process's share of the global batch.
    """

    def __init__(self, dataset: CachedImageDataset, batch_size: int, seed: int, device: torch.device,
                 placement: str, rank: int = 0, world_size: int = 1, workers: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.placement = placement
        self.workers = workers
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.images: torch.Tensor | None = None
        self.attributes: torch.Tensor | None = None
        if placement in ("ram", "gpu"):
            images, attributes = dataset.images_uint8(), dataset.attributes
            if placement == "gpu":
                images, attributes = images.to(device), attributes.to(device)
            elif device.type == "cuda":
                images, attributes = images.pin_memory(), attributes.pin_memory()
            self.images, self.attributes = images, attributes

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (1-based), leaving out the first ``skip`` (after a resume)."""
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)[skip * self.batch_size:]
        non_blocking = self.device.type == "cuda"
        if self.images is not None:
            if self.placement == "gpu":
                order = order.to(self.device)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                yield (self.images[idx].to(self.device, non_blocking=non_blocking),
                       self.attributes[idx].to(self.device, non_blocking=non_blocking))
            return
        batches = [order[s:s + self.batch_size].tolist() for s in range(0, len(order), self.batch_size)]
        # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG,
        # which would change the model's noise and break resume equality.
        loader = torch.utils.data.DataLoader(_StoredBatches(self.dataset), sampler=batches, batch_size=None,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             generator=torch.Generator().manual_seed(self.sampler.seed + epoch))
        for images, attributes in loader:
            yield images.to(self.device, non_blocking=non_blocking), attributes.to(self.device, non_blocking=non_blocking)


class _StoredBatches(torch.utils.data.Dataset):
    """Whole batches straight from the cache as uint8, one HDF5 read each (worker-safe)."""

    def __init__(self, dataset: CachedImageDataset):
        self.dataset = dataset

    def __getitem__(self, rows: list[int]):
        return self.dataset.read_uint8(rows)

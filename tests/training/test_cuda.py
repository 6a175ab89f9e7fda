"""The CUDA paths: bf16 autocast, fused conditioning under autocast, resume equality, data on the GPU.

Every test skips without a CUDA device. Each one calls a ``check_*`` helper that takes the device
(and the placements) as arguments, so the same checks run on a CPU where the path exists there
(bf16 autocast, resume equality, ``ram`` against ``disk``); on CUDA they add channels-last, the
CUDA RNG state, pinned memory and the batches gathered on the GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genkit
from genkit.data.batches import Batches
from genkit_datasets.torch_dataset import CachedImageDataset
from genkit_plugins.beta_elbo import BetaELBO
from genkit_plugins.cvae import CVAE
from genkit_plugins.tiled_onehot import TiledConditionConv, TiledOneHot

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

#: bf16 keeps 8 bits of mantissa (about 3 significant digits), so the loss may move by ~1%.
BF16_LOSS_RTOL = 2e-2
#: ...and every gradient tensor stays within 10% relative L2 error and points the same way.
BF16_GRAD_RTOL = 0.1
BF16_GRAD_COSINE = 0.99
#: fused and naive conditioning in bf16: max difference relative to the largest output.
BF16_FUSED_RTOL = 2e-2


def _model_and_batch(device: torch.device, attributes: int = 40, size: int = 32, batch: int = 8):
    torch.manual_seed(0)
    model = CVAE((3, size, size), TiledOneHot([f"a{i}" for i in range(attributes)])).to(device)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    condition = (torch.rand(batch, attributes, generator=torch.Generator().manual_seed(2)) > 0.7).float().to(device)
    if device.type == "cuda":  # as the trainer does on CUDA
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model, images, condition


def _loss_and_grads(model, images, condition, autocast_dtype: torch.dtype | None):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same reparameterisation noise in both precisions
    context = (torch.autocast(device_type=images.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
    with context:
        result = BetaELBO(0.75)(model(images, condition), images)
    result.total.backward()
    return result.total.detach().float(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def check_bf16_close_to_fp32(device: torch.device) -> None:
    model, images, condition = _model_and_batch(device)
    loss32, grads32 = _loss_and_grads(model, images, condition, None)
    loss16, grads16 = _loss_and_grads(model, images, condition, torch.bfloat16)
    assert torch.isfinite(loss16), f"bf16 loss is {loss16}"
    assert abs(float(loss16 - loss32)) <= BF16_LOSS_RTOL * abs(float(loss32)), (float(loss16), float(loss32))
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert torch.isfinite(g16).all(), f"bf16 gradient of {name} is not finite"
        error = float((g16 - g32).norm() / g32.norm().clamp_min(1e-12))
        cosine = float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0))
        assert error <= BF16_GRAD_RTOL and cosine >= BF16_GRAD_COSINE, (name, error, cosine)


def check_fused_equals_naive_under_autocast(device: torch.device, attributes: int) -> None:
    torch.manual_seed(0)
    fused = TiledConditionConv(3, attributes, 32, 3, padding=1, mode="fused").to(device)
    naive = TiledConditionConv(3, attributes, 32, 3, padding=1, mode="naive").to(device)
    naive.load_state_dict(fused.state_dict())
    images = torch.rand(4, 3, 24, 20, device=device)
    condition = (torch.rand(4, attributes, device=device) > 0.6).float()
    outputs, grads = [], []
    for layer in (fused, naive):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = layer(images, condition)
        out.float().square().mean().backward()
        outputs.append(out.detach().float())
        grads.append(layer.weight.grad.detach().float())
    assert outputs[0].dtype == outputs[1].dtype and outputs[0].shape == outputs[1].shape
    scale = outputs[1].abs().max()
    assert float((outputs[0] - outputs[1]).abs().max()) <= BF16_FUSED_RTOL * float(scale)
    g_scale = grads[1].abs().max()
    assert float((grads[0] - grads[1]).abs().max()) <= BF16_FUSED_RTOL * float(g_scale)


def _shapes_cache(tmp_path: Path, count: int = 96, size: int = 16) -> Path:
    info, _ = genkit.prepare_dataset("shapes", image_size=size, cache_dir=tmp_path / "cache",
                                     options={"count": count, "seed": 4}, workers=1)
    return info.path


def check_same_batches(device: torch.device, placements: tuple[str, str], tmp_path: Path) -> None:
    dataset = CachedImageDataset(_shapes_cache(tmp_path), "train")
    first, second = (Batches(dataset, 10, seed=7, device=device, placement=p) for p in placements)
    for epoch, skip in ((1, 0), (2, 0), (3, 2)):
        a, b = list(first.epoch(epoch, skip=skip)), list(second.epoch(epoch, skip=skip))
        assert len(a) == len(b) == len(first) - skip
        for (images_a, cond_a), (images_b, cond_b) in zip(a, b):
            assert images_a.device.type == images_b.device.type == device.type
            assert images_a.dtype == torch.uint8 and torch.equal(images_a, images_b)
            assert torch.equal(cond_a, cond_b)
    orders = [torch.cat([images.flatten(1)[:, :1] for images, _ in first.epoch(e)]).cpu() for e in (1, 2)]
    assert not torch.equal(orders[0], orders[1]), "two epochs came in the same order"


RESUME_SCRIPT = r"""
import json, sys
import torch
torch.use_deterministic_algorithms(True, warn_only=True)
from safetensors.torch import load_file
import genkit

device, root = sys.argv[1], sys.argv[2]
placements = sys.argv[3].split(",")

def plan(epochs, data_in):
    return genkit.plan_run(data="shapes", data_options={"count": 120, "seed": 5}, image_size=16, batch_size=16,
                           epochs=epochs, device=device, data_in=data_in, log_every=2, lr=2e-3,
                           model_options={"latent_dim": 4, "channels": [8, 16]})

genkit.train(plan(3, placements[0]), out_dir=f"{root}/straight")
genkit.train(plan(1, placements[0]), out_dir=f"{root}/stopped")
genkit.resume(f"{root}/stopped", epochs=3)
genkit.train(plan(3, placements[1]), out_dir=f"{root}/other")
weights = {name: load_file(f"{root}/{name}/model.safetensors") for name in ("straight", "stopped", "other")}
def compare(a, b):
    return {"equal": all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a]),
            "max_diff": max(float((weights[a][k] - weights[b][k]).abs().max()) for k in weights[a])}
print(json.dumps({"resumed": compare("straight", "stopped"), "placement": compare("straight", "other")}))
"""


def check_resume_and_placement_equality(device: str, placements: tuple[str, str], tmp_path: Path) -> None:
    """Runs in a fresh process: CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS starts."""
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "GENKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, device, str(tmp_path), ",".join(placements)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["resumed"]["equal"], f"resumed run differs from the uninterrupted one: {result['resumed']}"
    assert result["placement"]["equal"], f"--data-in {placements[1]} differs from {placements[0]}: {result}"


@needs_cuda
def test_bf16_forward_and_backward_are_finite_and_close_to_fp32():
    check_bf16_close_to_fp32(torch.device("cuda"))


@needs_cuda
@pytest.mark.parametrize("attributes", [40, 512])
def test_fused_conditioning_equals_naive_under_bf16_autocast(attributes):
    check_fused_equals_naive_under_autocast(torch.device("cuda"), attributes)


@needs_cuda
def test_fused_conditioning_equals_naive_in_fp32_on_cuda():
    torch.manual_seed(0)
    fused = TiledConditionConv(3, 40, 16, 5, stride=2, padding=2, mode="fused").cuda()
    naive = TiledConditionConv(3, 40, 16, 5, stride=2, padding=2, mode="naive").cuda()
    naive.load_state_dict(fused.state_dict())
    images, condition = torch.rand(3, 3, 17, 22, device="cuda"), (torch.rand(3, 40, device="cuda") > 0.5).float()
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions round to 10 bits; compare true fp32
    try:
        torch.testing.assert_close(fused(images, condition), naive(images, condition), rtol=1e-4, atol=1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@needs_cuda
def test_data_in_gpu_gives_the_same_batches_as_ram(tmp_path):
    check_same_batches(torch.device("cuda"), ("gpu", "ram"), tmp_path)


@needs_cuda
@pytest.mark.slow
def test_resume_on_cuda_is_bit_identical_and_data_in_gpu_trains_like_ram(tmp_path):
    check_resume_and_placement_equality("cuda", ("gpu", "ram"), tmp_path)

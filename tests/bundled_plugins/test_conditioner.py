"""The tiled one-hot conditioner: parsing, tiling, and the fused path equal to the naive one."""

from __future__ import annotations

import pytest
import torch

from genkit.errors import UsageError
from genkit_plugins.tiled_onehot import TiledConditionConv, TiledOneHot, tile_and_concat

NAMES = ["Smiling", "Male", "Eyeglasses", "Young"]


def test_encode_turns_listed_names_on_and_the_rest_off():
    cond = TiledOneHot(NAMES)
    assert cond.encode("Smiling, Young").tolist() == [1, 0, 0, 1]
    assert cond.encode("Male,-Eyeglasses").tolist() == [0, 1, 0, 0]
    assert cond.encode("").tolist() == [0, 0, 0, 0]
    assert cond.encode(["Eyeglasses"]).tolist() == [0, 0, 1, 0]


def test_encode_rejects_unknown_and_contradictory_names():
    cond = TiledOneHot(NAMES)
    with pytest.raises(UsageError, match="unknown attribute 'Smilling'; did you mean 'Smiling'"):
        cond.encode("Smilling")
    with pytest.raises(UsageError, match="both on and off"):
        cond.encode("Male,-Male")


def test_tiled_channels_equal_the_attribute_values_at_every_pixel():
    images = torch.rand(3, 3, 5, 7)
    condition = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    joined = tile_and_concat(images, condition)
    assert joined.shape == (3, 7, 5, 7)
    assert torch.equal(joined[:, :3], images)
    expected = condition[:, :, None, None].expand(3, 4, 5, 7)
    assert torch.equal(joined[:, 3:], expected)


def test_decoder_input_is_z_then_condition():
    cond = TiledOneHot(NAMES)
    z = torch.randn(2, 5)
    c = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    assert torch.equal(cond.join_latent(z, c), torch.cat([z, c], dim=1))


@pytest.mark.parametrize("size", [(8, 8), (9, 6), (16, 12)])
@pytest.mark.parametrize("kernel, padding, stride", [(3, 1, 1), (5, 2, 1), (3, 0, 1), (4, 1, 2), (1, 0, 1), (3, 2, 2)])
@pytest.mark.parametrize("attributes", [4, 40])
def test_fused_equals_naive_outputs_and_gradients(size, kernel, padding, stride, attributes):
    torch.manual_seed(0)
    naive = TiledConditionConv(3, attributes, 6, kernel, stride=stride, padding=padding, mode="naive")
    fused = TiledConditionConv(3, attributes, 6, kernel, stride=stride, padding=padding, mode="fused")
    fused.load_state_dict(naive.state_dict())
    images = torch.rand(2, 3, *size)
    condition = (torch.rand(2, attributes) > 0.5).float()
    images_f, cond_f = images.clone().requires_grad_(), condition.clone().requires_grad_()
    images_n, cond_n = images.clone().requires_grad_(), condition.clone().requires_grad_()
    out_n = naive(images_n, cond_n)
    out_f = fused(images_f, cond_f)
    assert out_f.shape == out_n.shape
    torch.testing.assert_close(out_f, out_n, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(out_n)
    (out_n * weights).sum().backward()
    (out_f * weights).sum().backward()
    torch.testing.assert_close(images_f.grad, images_n.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond_f.grad, cond_n.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fused.conv.weight.grad, naive.conv.weight.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fused.conv.bias.grad, naive.conv.bias.grad, atol=1e-4, rtol=1e-5)


def test_unknown_mode_is_a_usage_error():
    with pytest.raises(UsageError, match="conditioning mode 'tiled' is not known; choose one of: fused, naive"):
        TiledOneHot(NAMES, mode="tiled")

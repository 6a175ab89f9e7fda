"""The tiled one-hot conditioner: parsing, tiling, the fused path equal to the naive one, and partial
conditions (entries left unspecified, dropped by unit in training)."""

from __future__ import annotations

import pytest
import torch

from genkit.errors import UsageError
from genkit_plugins.tiled_onehot import PartialTiledOneHot, TiledConditionConv, TiledOneHot, build, tile_and_concat

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


# --- partial conditions ----------------------------------------------------------------------------------

FAMILIES = ["shape::circle", "shape::square", "shape::cross", "color::red", "color::blue", "large", "left"]


def test_partial_is_the_new_default_and_false_builds_the_full_vector_older_runs_were_trained_on():
    assert type(build(NAMES)) is PartialTiledOneHot and build(NAMES).vector_dim == 2 * len(NAMES)
    old = build(NAMES, partial=False)
    assert type(old) is TiledOneHot and old.vector_dim == len(NAMES) + 1
    assert not hasattr(old, "drop") and not hasattr(old, "encode_partial")  # what a model checks
    with pytest.raises(UsageError, match="partial 'yes' must be true or false"):
        build(NAMES, partial="yes")


def test_encode_partial_leaves_the_attributes_not_named_unspecified():
    cond = PartialTiledOneHot(NAMES)
    assert cond.encode_partial("Smiling,-Young").tolist() == [1, -1, -1, 0]
    assert cond.encode_partial("").tolist() == [-1] * 4
    assert torch.equal(cond.encode_partial(""), cond.null_condition(1)[0])
    assert torch.equal(cond.encode("Smiling,-Young"), TiledOneHot(NAMES).encode("Smiling,-Young"))  # unchanged
    with pytest.raises(UsageError, match="unknown attribute 'Smilling'"):
        cond.encode_partial("Smilling")


def test_the_partial_vector_tells_on_off_and_unspecified_apart_per_entry():
    cond = PartialTiledOneHot(NAMES)
    condition = torch.tensor([[1.0, 0, -1, 1], [-1, -1, -1, -1], [0.25, 1, 0, 0]])
    vector = cond.vector(condition)
    assert vector.tolist() == [[1, 0, 0, 1, 0, 1, 0, 0],     # on, off, unspecified, on
                               [0] * 8,                      # the null condition: every entry unspecified
                               [0.25, 1, 0, 0, 0.75, 0, 1, 1]]  # in between (an interpolation) on both sides
    full = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 4)
    assert not (cond.vector(full) == 0).all(dim=1).any()  # no full condition reads as the null


def test_units_are_families_and_plain_attributes_from_the_names_alone():
    cond = PartialTiledOneHot(FAMILIES)
    assert cond.units == [("shape::circle", "shape::square", "shape::cross"), ("color::red", "color::blue"),
                          ("large",), ("left",)]
    assert PartialTiledOneHot(["shape", "shape::circle"]).units == [("shape",), ("shape::circle",)]
    assert "unit_of_entry" not in cond.state_dict()  # a model's weights stay as they were


def test_drop_leaves_each_unit_unspecified_with_the_probability_independently_and_families_whole():
    cond = PartialTiledOneHot(FAMILIES)
    p, rows = 0.3, 20000
    torch.manual_seed(0)
    condition = torch.tensor([[1.0, 0, 0, 0, 1, 1, 0]]).expand(rows, -1)
    dropped = cond.drop(condition, p) == -1
    kept = ~dropped
    assert torch.equal(condition[kept], torch.tensor([[1.0, 0, 0, 0, 1, 1, 0]]).expand(rows, -1)[kept])
    by_unit = torch.stack([dropped[:, [FAMILIES.index(n) for n in unit]].all(1) for unit in cond.units], 1)
    partly = torch.stack([dropped[:, [FAMILIES.index(n) for n in unit]].any(1) for unit in cond.units], 1)
    assert torch.equal(by_unit, partly)  # a family is dropped whole or not at all
    rate = by_unit.float().mean(0)
    assert ((rate - p).abs() < 0.015).all(), rate  # each unit about p (sd 0.003)
    both = (by_unit[:, :, None] & by_unit[:, None, :]).float().mean(0)
    assert ((both - rate[:, None] * rate[None, :]).fill_diagonal_(0).abs() < 0.015).all()  # independently
    assert not cond.drop(condition[:8], 0.0).eq(-1).any()
    null = cond.null_condition(4)
    assert torch.equal(cond.drop(null, 0.5), null)


def test_drop_repeats_from_a_seed_and_from_a_generator():
    cond = PartialTiledOneHot(FAMILIES)
    condition = torch.ones(64, len(FAMILIES))
    torch.manual_seed(5)
    first = cond.drop(condition, 0.5)
    torch.manual_seed(5)
    assert torch.equal(cond.drop(condition, 0.5), first)  # torch's global random state, as training draws it
    a = cond.drop(condition, 0.5, generator=torch.Generator().manual_seed(1))
    b = cond.drop(condition, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, first)

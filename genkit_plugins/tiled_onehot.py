"""Conditioner ``tiled-onehot``: the paper's conditioning (§4.1).

The attribute vector x is multi-hot. At the encoder input it is tiled to the image's H×W and
concatenated on the channel axis; at the decoder input it is concatenated with z. For models that
embed the condition instead, :meth:`TiledOneHot.vector` gives it as plain features, and
:meth:`TiledOneHot.null_condition` the condition that gives no attribute (every entry −1), which
classifier-free guidance needs.

With ``partial`` (the default for new runs) the conditioner is a :class:`PartialTiledOneHot`: an
entry may also be *unspecified* (−1), left to a model trained to fill it (``--rest model``).
Its :meth:`~PartialTiledOneHot.vector` has an "on" and an "off" feature per attribute, both 0 when
the attribute is unspecified, so the null condition is the one with every attribute unspecified;
:meth:`~PartialTiledOneHot.drop` leaves whole units unspecified at random in training (a unit is a
``group::value`` family, or a plain attribute), which teaches the model each unit's null. Runs saved
before the option existed read ``partial=false``: the multi-hot vector and a last feature that is 1
for the null condition, ``vector_dim`` one more than the attributes, as they were trained.

Tiling is done *exactly* without building the tiled tensor (``mode="fused"``, the default): the
tiled channels are constant over space, so their share of the first convolution is, for each
kernel tap, the product of x with that tap's weights, added wherever the tap lands inside the
image (zero padding masks the border). ``mode="naive"`` builds the B×A×H×W tensor and
concatenates it, literally as the paper describes; both modes share the same weights and agree
to float rounding.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn
from torch.nn import functional as F

import genkit

MODES = ("fused", "naive")
#: every entry of the null condition (classifier-free guidance's "no attributes given")
NULL_VALUE = -1.0


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise genkit.UsageError(f"conditioning mode {mode!r} is not known; choose one of: {', '.join(MODES)}")


class TiledConditionConv(nn.Module):
    """``conv(concat(images, tile(condition)))`` with one weight for image and condition channels."""

    def __init__(self, image_channels: int, condition_dim: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, dilation: int = 1, mode: str = "fused"):
        super().__init__()
        _check_mode(mode)
        self.conv = nn.Conv2d(image_channels + condition_dim, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation)
        self.image_channels = image_channels
        self.mode = mode

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.mode == "naive":
            return self.conv(tile_and_concat(images, condition))
        conv = self.conv
        w_image, w_cond = conv.weight[:, : self.image_channels], conv.weight[:, self.image_channels:]
        out = F.conv2d(images, w_image, conv.bias, conv.stride, conv.padding, conv.dilation)
        return out + tiled_condition_conv(condition, w_cond, images.shape[-2:], out.shape[-2:],
                                          conv.stride, conv.padding, conv.dilation)


def tile_and_concat(images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The literal encoder input: ``condition`` tiled to H×W, appended as channels."""
    b, _, h, w = images.shape
    tiled = condition.to(images.dtype)[:, :, None, None].expand(b, condition.shape[1], h, w)
    return torch.cat([images, tiled], dim=1)


def _tap_mask(in_size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int,
              device, dtype) -> torch.Tensor:
    """``mask[k, o] = 1`` where kernel tap ``k`` of output position ``o`` falls inside the input."""
    pos = (torch.arange(out_size, device=device) * stride)[None, :] + \
        (torch.arange(kernel, device=device) * dilation)[:, None] - padding
    return ((pos >= 0) & (pos < in_size)).to(dtype)


def tiled_condition_conv(condition: torch.Tensor, weight: torch.Tensor, in_hw, out_hw, stride, padding,
                         dilation) -> torch.Tensor:
    """The convolution of a spatially constant ``condition`` with ``weight``, borders included.

    ``per_tap[b, o, i, j] = Σ_a condition[b, a] · weight[o, a, i, j]``; each output pixel sums the
    taps that land inside the image. The row and column masks factor, so the cost is
    O(B·O·K·(K·W + H·W)) instead of the tiled convolution's O(B·O·A·K²·H·W).
    """
    kh, kw = weight.shape[-2:]
    per_tap = torch.einsum("ba,oaij->boij", condition.to(weight.dtype), weight)
    rows = _tap_mask(in_hw[0], out_hw[0], kh, stride[0], padding[0], dilation[0], weight.device, per_tap.dtype)
    cols = _tap_mask(in_hw[1], out_hw[1], kw, stride[1], padding[1], dilation[1], weight.device, per_tap.dtype)
    per_row = torch.einsum("boij,jw->boiw", per_tap, cols)
    return torch.einsum("boiw,ih->bohw", per_row, rows)


class TiledOneHot(nn.Module):
    """Attribute names to a multi-hot vector; tiled at the encoder, concatenated at the decoder."""

    def __init__(self, attribute_names: list[str], mode: str = "fused"):
        super().__init__()
        _check_mode(mode)
        self.attribute_names = list(attribute_names)
        self._position = {name: i for i, name in enumerate(self.attribute_names)}
        self.dim = len(self.attribute_names)
        self.latent_extra_dim = self.dim
        self.vector_dim = self.dim + 1
        self.mode = mode

    def encode(self, spec: str | list[str]) -> torch.Tensor:
        """``"A,B,-C"`` (or ``["A", "B", "-C"]``) to a 0/1 vector: listed on, ``-name`` and the rest off."""
        return self._filled(spec, 0.0)

    def _filled(self, spec: str | list[str], rest: float) -> torch.Tensor:
        """The vector of ``spec``: named entries 1 (on) or 0 (``-name``), every other entry ``rest``."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        vector = torch.full((self.dim,), rest)
        seen: dict[str, bool] = {}
        for raw in items:
            item = raw.strip()
            if not item:
                continue
            on = not item.startswith("-")
            name = item[1:].strip() if item[0] in "+-" else item  # one sign at most: "+-large" says nothing clear
            if not name or name[0] in "+-":
                raise genkit.UsageError(f"{genkit.shown(item)} names no attribute clearly; write NAME to switch one on "
                                        "and -NAME to switch it off")
            if name not in self._position:
                raise genkit.UsageError(self._unknown(name))
            if seen.get(name, on) != on:
                raise genkit.UsageError(f"attribute {genkit.shown(name)} is asked for both on and off; list it once")
            seen[name] = on
            vector[self._position[name]] = 1.0 if on else 0.0
        return vector

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name[:200], self.attribute_names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        if len(self.attribute_names) <= 40:
            return f"unknown attribute {genkit.shown(name)}; {hint}valid attributes: {', '.join(self.attribute_names)}"
        return f"unknown attribute {genkit.shown(name)}; {hint}list the valid ones with `genkit data info`"

    def input_layer(self, image_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                    padding: int = 0) -> nn.Module:
        return TiledConditionConv(image_channels, self.dim, out_channels, kernel_size, stride, padding,
                                  mode=self.mode)

    def join_latent(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, condition.to(z.dtype)], dim=1)

    def null_condition(self, n: int) -> torch.Tensor:
        """``n`` conditions that give no attribute (on or off): every entry −1, which no encoded vector has."""
        return torch.full((n, self.dim), NULL_VALUE)

    def vector(self, condition: torch.Tensor) -> torch.Tensor:
        """The condition as features for a model that embeds it: the vector (a null condition's as zeros)
        and a last feature that is 1 for the null condition, 0 otherwise."""
        null = (condition <= NULL_VALUE).all(dim=1, keepdim=True)
        return torch.cat([condition.clamp_min(0) * ~null, null.to(condition.dtype)], dim=1)


def drop_units(attribute_names: list[str]) -> list[tuple[str, ...]]:
    """The units :meth:`PartialTiledOneHot.drop` leaves unspecified, from the names alone: each ``group::``
    family whole (naming one of its values tells about the others when the family is exclusive, and the
    conditioner cannot know which are), and each plain attribute on its own."""
    units: dict[tuple[str, str], list[str]] = {}
    for name in attribute_names:
        key = ("family", name.split("::", 1)[0]) if "::" in name else ("attribute", name)
        units.setdefault(key, []).append(name)
    return [tuple(names) for names in units.values()]


class PartialTiledOneHot(TiledOneHot):
    """:class:`TiledOneHot` whose conditions may leave attributes unspecified (−1), for a model trained with
    :meth:`drop` to fill them itself (``--rest model``)."""

    def __init__(self, attribute_names: list[str], mode: str = "fused"):
        super().__init__(attribute_names, mode=mode)
        self.vector_dim = 2 * self.dim
        #: the attribute names of each unit :meth:`drop` leaves unspecified together
        self.units = drop_units(self.attribute_names)
        unit_of = {name: i for i, unit in enumerate(self.units) for name in unit}
        # which unit each entry belongs to; a buffer, so it moves with the model, and not saved with the weights
        self.register_buffer("unit_of_entry", torch.tensor([unit_of[n] for n in self.attribute_names],
                                                           dtype=torch.long), persistent=False)

    def encode_partial(self, spec: str | list[str]) -> torch.Tensor:
        """``"A,-C"`` to a vector: A 1, C 0, every attribute not named −1 (unspecified)."""
        return self._filled(spec, NULL_VALUE)

    def drop(self, condition: torch.Tensor, probability: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """``condition`` (B, dim) with each unit of each row unspecified (−1) with ``probability``, independently.

        For training: the model learns each unit's null, on its own and beside the others. The draws come
        from ``generator``, else torch's global random state (so a seeded run draws the same, and a
        resumed one continues them); one uniform per row and unit, whatever ``probability``.
        """
        draws = torch.rand(condition.shape[0], len(self.units), generator=generator,
                           device=condition.device if generator is None else generator.device)
        dropped = (draws.to(condition.device) < probability)[:, self.unit_of_entry.to(condition.device)]
        return condition.masked_fill(dropped, NULL_VALUE)

    def vector(self, condition: torch.Tensor) -> torch.Tensor:
        """The condition as features for a model that embeds it: per attribute an "on" feature (the entry)
        and then an "off" feature (1 − the entry), both 0 where the entry is unspecified (below 0). The null
        condition is every attribute unspecified: all zeros, which no specified condition gives."""
        specified = (condition >= 0).to(condition.dtype)
        return torch.cat([condition.clamp_min(0) * specified, (1 - condition) * specified], dim=1)


def build(attribute_names: list[str], mode: str = "fused", partial: bool = True) -> TiledOneHot:
    """Multi-hot attributes, tiled over the image at the encoder and joined with z at the decoder.

    :param mode: fused (exact, fast) or naive (literal tiling, the same result slower).
    :param partial: conditions may leave attributes unspecified, for a model trained to fill them
        (--rest model; the flow's attribute_dropout); the embedded vector then has an on and an off
        feature per attribute. Runs saved before this option read false.
    """
    if not isinstance(partial, bool):
        raise genkit.UsageError(f"partial {partial!r} must be true or false, for example "
                                "--conditioner-opt partial=true")
    return (PartialTiledOneHot if partial else TiledOneHot)(attribute_names, mode=mode)


@genkit.hookimpl
def register_conditioners(register):
    # runs saved before `partial` existed were trained on the full vector with its null feature
    register("tiled-onehot", build, flags={"mode": "--conditioning"}, older_runs={"partial": False})

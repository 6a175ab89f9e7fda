"""Model ``flow``: conditional rectified flow (flow matching on the straight path).

Training (Lipman et al. 2023; Liu et al. 2023, as in facebookresearch/flow_matching): an image
x₁ (pixels mapped to [−1, 1]) and noise x₀ ~ N(0, I) of the same shape are joined by the straight
path x_t = t·x₁ + (1 − t)·x₀, t drawn logit-normal (or uniform: ``time_sampling``); the network
v(x_t, t, y) learns the path's velocity x₁ − x₀ (the ``flow-matching`` loss). With probability
``condition_dropout`` a training image's condition is replaced by the conditioner's null
condition, so the same network also learns the unconditional velocity, which classifier-free
guidance needs. With probability ``attribute_dropout`` each unit of it (an attribute family, a
plain attribute) is left unspecified, independently (the conditioner's ``drop``), so the network
also learns each one's null: sampling may then leave the attributes a user did not name to the
model (``--rest model``).

Sampling integrates dx/dt = v from t = 0 (noise) to t = 1 (image) in ``steps`` equal steps with
Euler's method (one network evaluation a step) or Heun's (two). Classifier-free guidance
(Ho & Salimans 2022) uses v = v_null + w·(v_cond − v_null): w = 1 is the conditional velocity
alone and w = 0 the unconditional one, each a single pass; any other w evaluates both in one
batch; with a guidance interval (Kynkäänniemi et al. 2024) it applies only for t from
``guidance_from`` to ``guidance_until``, and the steps outside take the conditional pass alone.
:meth:`FlowModel.invert` runs the same solver backwards, from images to the noise that
``sample`` maps back to them (exactly only as the steps get small). :meth:`FlowModel.invert_partway`
and :meth:`FlowModel.sample_partway` (the ``partial_invert`` capability) do the same over only the
last ``depth`` of the path, from t = 1 − depth, in max(1, ⌊steps·depth + ½⌋) of the steps: an edit
from there keeps what the path settles before 1 − depth. ``invert`` and ``sample`` are them at depth 1.

The path, its preconditioning, guidance and the solvers are ``genkit.plugin_api``'s, used as a
third-party flow would use them; what this module brings is the network, its options and their checks.

The network works on patches (space-to-depth by ``patch``): a small U-Net of residual blocks whose
features are modulated (FiLM) by an embedding of t and of ``conditioner.vector(condition)``; one
linear layer gives every block's scale and shift at once, so the embedding costs one small
matrix product per step. Its output layer starts at zero. The design and its defaults were
chosen by measurement at 32x32 (docs/evaluation.md, "The flow model against the CVAE", and
benchmarks/flow_design.py). At 64x64 that network ignored position attributes: FiLM can only scale
whole channels, so "on the left" needed a position feature and a condition's weight of it, both zero
at the start (a saddle it never left). So each level adds a map the condition draws from a sin-cos
position basis (``placement``), an unconditional position embedding (``positions``) and, at the
lowest level, self-attention with QK-norm (``attention``); all three start as the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import genkit
from genkit.plugin_api import (SOLVERS, TIME_SAMPLINGS, average_velocity_target, check_guidance_interval,
                               check_interval_share, check_shift, draw_interval, draw_path, drop_conditions,
                               guided_field, guided_velocity, integrate, network_passes, preconditioned)

#: beyond this a sample takes minutes and the solver's error no longer shrinks visibly
MAX_STEPS = 1000
#: guidance far above this only saturates colours; a typo such as 200 for 2.0 is refused
MAX_GUIDANCE = 50.0
DEFAULT_GUIDANCE = 2.0
DEFAULT_STEPS = 8
DEFAULT_SOLVER = "euler"
#: joint: one guidance for the whole condition; composed: each unit given guided on its own (Liu et al. 2022)
GUIDANCE_MODES = ("joint", "composed")
#: each unit unspecified in a fifth of the images: most conditions keep most of their attributes (each
#: attribute's effect is still learned from 80 % of the images), and each null is seen thousands of times an epoch
DEFAULT_ATTRIBUTE_DROPOUT = 0.2
TIME_FREQUENCIES = 16
#: octaves of the position embedding: the finest resolves a 32nd of the image's side
POSITION_FREQUENCIES = 5
PREDICTIONS = ("preconditioned", "velocity")


@dataclass
class FlowOutput:
    """What ``flow``'s training forward returns, for the ``flow-matching`` loss.

    ``velocity`` is the network's prediction at (x_t, t), ``target`` the path's velocity x₁ − x₀ (with
    ``mean_flow``, the average velocity to a later time and its MeanFlow target); ``t`` the times drawn
    (B,), for losses that weight by time.
    """

    velocity: torch.Tensor
    target: torch.Tensor
    t: torch.Tensor


class ResidualBlock(nn.Module):
    """x + conv(silu(FiLM(norm(conv(silu(norm(x))))))): FiLM scales by (1 + γ) and shifts by β per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.norm2 = nn.GroupNorm(_groups(channels), channels, affine=False)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return x + self.conv2(F.silu(h))


class AttentionBlock(nn.Module):
    """x + proj(attention(norm(x))) over every position of a level: what one place draws can depend on
    the whole image (ADM's self-attention at the low resolutions). Queries and keys are RMS-normalised
    per head (QK-norm, as in SD3 and EDM2's spirit), so attention logits cannot grow without bound:
    without it, 64x64 runs at the flow's learning rate blew up within a few epochs. Starts as the identity."""

    def __init__(self, channels: int, head_width: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_width)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        #: attention by the plain math kernel, which forward-mode differentiation (mean_flow) needs
        self.differentiable_forwards = False
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, height * width).unbind(1)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))  # (B, heads, positions, width)
        q, k = F.rms_norm(q, (q.shape[-1],)), F.rms_norm(k, (k.shape[-1],))
        if self.differentiable_forwards:  # the fused kernels have no forward-mode derivative (mean_flow's jvp)
            with sdpa_kernel(SDPBackend.MATH):
                h = F.scaled_dot_product_attention(q, k, v)
        else:
            h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(-1, -2).reshape(b, c, height, width))


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class VelocityNet(nn.Module):
    """v(x_t, t, y) on patches: stem, a U-Net of FiLM residual blocks, a zero-initialised head."""

    def __init__(self, image_channels: int, vector_dim: int, patch: int, channels: tuple[int, ...],
                 blocks: int, embedding: int, attention: int = 0, positions: bool = False, placement: bool = False,
                 intervals: bool = False):
        super().__init__()
        #: whether the network also takes an end time and embeds the interval to it (average velocities)
        self.intervals = intervals
        per_level = [blocks] * len(channels)
        #: the levels (counted from the finest, 0) whose blocks are followed by self-attention: the lowest ``attention``
        self.attention_levels = set(range(len(channels) - attention, len(channels)))
        self.patch = patch
        patched = image_channels * patch * patch
        self.stem = nn.Conv2d(patched + 2, channels[0], 3, padding=1)  # + the two coordinate channels
        times = 4 * TIME_FREQUENCIES if intervals else 2 * TIME_FREQUENCIES
        self.embed = nn.Sequential(nn.Linear(times + vector_dim, embedding), nn.SiLU(),
                                   nn.Linear(embedding, embedding), nn.SiLU())
        self.down = nn.ModuleList(nn.ModuleList(ResidualBlock(c) for _ in range(k))
                                  for c, k in zip(channels, per_level))
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1)
                                        for a, b in zip(channels[:-1], channels[1:]))
        self.upsample = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(channels[:-1], channels[1:]))
        self.up = nn.ModuleList(nn.ModuleList(ResidualBlock(c) for _ in range(k))
                                for c, k in zip(channels[:-1], per_level))
        self.down_attention = nn.ModuleList(
            nn.ModuleList(AttentionBlock(c) for _ in range(k)) if level in self.attention_levels else nn.ModuleList()
            for level, (c, k) in enumerate(zip(channels, per_level)))
        self.up_attention = nn.ModuleList(
            nn.ModuleList(AttentionBlock(c) for _ in range(k)) if level in self.attention_levels else nn.ModuleList()
            for level, (c, k) in enumerate(zip(channels[:-1], per_level)))
        for block in self.modules():
            if isinstance(block, AttentionBlock):
                block.differentiable_forwards = intervals
        # where each feature is, at every level (DiT's 2-D sin-cos embedding): the stem's coordinates fade with depth
        self.positions = nn.ModuleList(nn.Conv2d(4 * POSITION_FREQUENCIES, c, 1) for c in channels) if positions else None
        for layer in self.positions or ():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        # a map per channel and level that the condition draws from the position basis: where to put what the
        # condition asks for. FiLM alone scales whole channels, so "on the left" needs a position feature and a
        # condition's scale of it, both zero at the start (a saddle); this learns from the first step
        self.level_widths = list(channels)
        self.placement = nn.Linear(embedding, 4 * POSITION_FREQUENCIES * sum(channels)) if placement else None
        if self.placement is not None:
            nn.init.zeros_(self.placement.weight)
            nn.init.zeros_(self.placement.bias)
        widths = [c for c, k in zip(channels, per_level) for _ in range(k)] + \
            [c for c, k in reversed(list(zip(channels[:-1], per_level))) for _ in range(k)]
        self.film_widths = widths
        self.film = nn.Linear(embedding, 2 * sum(widths))
        nn.init.zeros_(self.film.weight)  # FiLM starts as the identity
        nn.init.zeros_(self.film.bias)
        self.head = nn.Conv2d(channels[0], patched, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        frequencies = torch.exp(torch.linspace(0.0, math.log(1000.0), TIME_FREQUENCIES))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def embedding(self, t: torch.Tensor, vector: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        """One embedding of the time (and, with intervals, of the interval to ``end``; none without an end)
        and the condition vector, from which every block's modulation is read."""
        angles = t[:, None].to(self.frequencies.dtype) * self.frequencies
        features = [torch.sin(angles), torch.cos(angles)]
        if self.intervals:
            gap = (end - t if end is not None else torch.zeros_like(t))[:, None].to(angles.dtype) * self.frequencies
            features += [torch.sin(gap), torch.cos(gap)]
        return self.embed(torch.cat([*features, vector.to(angles.dtype)], dim=1))

    def modulation(self, embedded: torch.Tensor) -> list[torch.Tensor]:
        """Every block's (scale, shift), from the embedding: one small matrix product."""
        return list(self.film(embedded).split([w for w in self.film_widths for _ in (0, 1)], dim=1))

    def placements(self, embedded: torch.Tensor) -> list[torch.Tensor | None]:
        """Each level's coefficients (B, C, 4·POSITION_FREQUENCIES) of the position basis, or ``None`` without placement."""
        if self.placement is None:
            return [None] * len(self.level_widths)
        coefficients = self.placement(embedded).split([4 * POSITION_FREQUENCIES * c for c in self.level_widths], dim=1)
        return [k.reshape(k.shape[0], c, 4 * POSITION_FREQUENCIES) for k, c in zip(coefficients, self.level_widths)]

    def forward(self, x: torch.Tensor, t: torch.Tensor, vector: torch.Tensor,
                end: torch.Tensor | None = None) -> torch.Tensor:
        embedded = self.embedding(t, vector, end)
        film = iter(self.modulation(embedded))
        placements = self.placements(embedded)
        h = F.pixel_unshuffle(x, self.patch)
        h = torch.cat([h, _coordinates(h)], dim=1)  # where each patch is: the convolutions alone barely see it
        h = self.stem(h)
        skips = []
        for level, blocks in enumerate(self.down):
            if self.positions is not None:
                h = h + self.positions[level](_sincos(h))
            if placements[level] is not None:
                h = h + torch.einsum("bck,khw->bchw", placements[level], _sincos(h)[0])
            for i, block in enumerate(blocks):
                h = block(h, next(film), next(film))
                if self.down_attention[level]:
                    h = self.down_attention[level][i](h)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        for level in reversed(range(len(self.up))):
            h = skips[level] + self.upsample[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            for i, block in enumerate(self.up[level]):
                h = block(h, next(film), next(film))
                if self.up_attention[level]:
                    h = self.up_attention[level][i](h)
        return F.pixel_shuffle(self.head(F.silu(h)), self.patch)


def _coordinates(h: torch.Tensor) -> torch.Tensor:
    """Two channels, the row and the column of each position, from −1 to 1."""
    b, _, height, width = h.shape
    rows = torch.linspace(-1, 1, height, device=h.device, dtype=h.dtype)[:, None].expand(height, width)
    cols = torch.linspace(-1, 1, width, device=h.device, dtype=h.dtype)[None, :].expand(height, width)
    return torch.stack([rows, cols])[None].expand(b, 2, height, width)


def _sincos(h: torch.Tensor) -> torch.Tensor:
    """(1, 4·POSITION_FREQUENCIES, H, W): sines and cosines of each row's and column's position in [0, 1] at
    octave frequencies, the same at every resolution for the same place in the image."""
    _, _, height, width = h.shape
    frequencies = math.pi * 2.0 ** torch.arange(POSITION_FREQUENCIES, device=h.device, dtype=h.dtype)
    rows = (torch.arange(height, device=h.device, dtype=h.dtype) + 0.5) / height
    cols = (torch.arange(width, device=h.device, dtype=h.dtype) + 0.5) / width
    r = rows[:, None] * frequencies  # (H, F)
    c = cols[:, None] * frequencies  # (W, F)
    r = torch.cat([torch.sin(r), torch.cos(r)], dim=1).T[:, :, None].expand(-1, height, width)
    c = torch.cat([torch.sin(c), torch.cos(c)], dim=1).T[:, None, :].expand(-1, height, width)
    return torch.cat([r, c])[None]


class FlowModel(nn.Module):
    """A conditional rectified flow with classifier-free guidance; see the module docstring."""

    #: ``genkit sample``'s own ``--steps`` is the interpolation's, so the solver's steps get another flag
    sampling_flags = {"steps": "--sampling-steps"}

    def __init__(self, image_shape: tuple[int, int, int], conditioner, patch: int = 2,
                 channels: tuple[int, ...] = (16, 32, 64), blocks: int = 2, embedding: int = 128,
                 condition_dropout: float = 0.1, prediction: str = "preconditioned",
                 time_sampling: str = "logit-normal", attribute_dropout: float = DEFAULT_ATTRIBUTE_DROPOUT,
                 attention: int = 0, positions: bool = False, placement: bool = False, time_shift: float = 1.0,
                 mean_flow: float = 0.0):
        super().__init__()
        image_channels, height, width = image_shape
        multiple = patch * 2 ** (len(channels) - 1)
        if height % multiple or width % multiple:
            raise genkit.UsageError(
                f"image size {height}x{width} does not divide into the flow's {patch}x{patch} patches and "
                f"{len(channels) - 1} halvings (sides must be multiples of {multiple}); choose "
                f"{_nearest_sizes(height, width, multiple)}")
        if not 0 < condition_dropout < 1:  # guidance, on by default, needs the null condition learned
            raise genkit.UsageError(f"condition_dropout {condition_dropout} must be in (0, 1): sampling with "
                                    "guidance needs the unconditional flow learned; for example "
                                    "--model-opt condition_dropout=0.1")
        if not 0 <= attribute_dropout < 1:  # NaN fails both comparisons
            raise genkit.UsageError(f"attribute_dropout {attribute_dropout} must be in [0, 1): the probability that "
                                    "training leaves each attribute (or family) unspecified, 0 for never; for "
                                    f"example --model-opt attribute_dropout={DEFAULT_ATTRIBUTE_DROPOUT}")
        if attribute_dropout > 0 and not (callable(getattr(conditioner, "drop", None))
                                          and callable(getattr(conditioner, "encode_partial", None))):
            raise genkit.UsageError(f"attribute_dropout {attribute_dropout} needs a conditioner that can leave "
                                    f"attributes unspecified (drop, encode_partial); {type(conditioner).__name__} "
                                    "cannot: use --model-opt attribute_dropout=0, or --conditioner-opt partial=true "
                                    "with tiled-onehot")
        for name, value, allowed in (("prediction", prediction, PREDICTIONS),
                                     ("time_sampling", time_sampling, TIME_SAMPLINGS)):
            if value not in allowed:
                raise genkit.UsageError(f"{name} {value!r} is not known; choose one of: {', '.join(allowed)}, "
                                        f"for example --model-opt {name}={allowed[0]}")
        self.image_shape = (image_channels, height, width)
        self.conditioner = conditioner
        self.condition_dropout = float(condition_dropout)
        self.attribute_dropout = float(attribute_dropout)
        self.prediction = prediction
        self.time_sampling = time_sampling
        self.time_shift = check_shift(time_shift)
        self.mean_flow = check_interval_share(mean_flow, name="mean_flow")
        self.net = VelocityNet(image_channels, conditioner.vector_dim, patch, tuple(channels), blocks, embedding,
                               attention=attention, positions=positions, placement=placement,
                               intervals=self.mean_flow > 0)

    @staticmethod
    def to_flow(images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the flow's data x₁ in [−1, 1]."""
        return images * 2 - 1

    @staticmethod
    def to_images(x: torch.Tensor) -> torch.Tensor:
        """The flow's x₁ back to images in [0, 1] (clipped)."""
        return ((x + 1) / 2).clamp(0, 1)

    @property
    def partial_conditions(self) -> bool:
        """Whether training left attributes unspecified, so sampling may leave unnamed ones to the model
        (``--rest model``; :mod:`genkit.sampling.capabilities`). A run trained without is not."""
        return self.attribute_dropout > 0

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """One sample's noise is an image-shaped draw of N(0, I): the flow's start at t = 0."""
        return self.image_shape

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> FlowOutput:
        """The network's velocity at a random point of each image's path, and the path's velocity.

        t, the noise and the dropouts (both only in training) are drawn from torch's global random state, so
        a seeded run draws the same ones, and a resumed run continues them.
        """
        x1 = self.to_flow(images)
        point = draw_path(x1, self.time_sampling, shift=self.time_shift)
        if self.mean_flow:
            point, end = draw_interval(point, x1, self.mean_flow, self.time_sampling, shift=self.time_shift)
        if self.training and self.attribute_dropout:
            condition = self.conditioner.drop(condition, self.attribute_dropout)
        vector = self.conditioner.vector(condition)
        if self.training:
            null = self.conditioner.vector(self.conditioner.null_condition(images.shape[0]).to(condition))
            vector = drop_conditions(vector, null, self.condition_dropout)
        if self.mean_flow:
            u, target = average_velocity_target(lambda x, t, e: self.predict(x, t, vector, e), point, end)
            return FlowOutput(velocity=u, target=target, t=point.t)
        return FlowOutput(velocity=self.predict(point.x_t, point.t, vector), target=point.target, t=point.t)

    def predict(self, x: torch.Tensor, t: torch.Tensor, vector: torch.Tensor,
                end: torch.Tensor | None = None) -> torch.Tensor:
        """The velocity at (x, t); with ``end`` (a ``mean_flow`` network), the average velocity from t to end.

        ``preconditioned`` (EDM's idea, Karras et al. 2022, on the straight path): the network sees
        x_t scaled to unit variance and adds a correction to the best linear guess of v from x_t,
        so its input and output stay near unit scale at every t; ``velocity``: the network's output as is.
        """
        inputs = (vector,) if end is None else (vector, end)
        if self.prediction == "velocity":
            return self.net(x, t, *inputs)
        return preconditioned(self.net, x, t, *inputs)

    def _field(self, condition: torch.Tensor, x: torch.Tensor, guidance: float, interval: tuple[float, float],
               mode: str = "joint", weights: str = ""):
        """The guided velocity field the solver integrates, for the rows of ``condition``.

        ``joint``: v(∅) + w·(v(c) − v(∅)). ``composed``: v(∅) + Σᵢ wᵢ·(v(cᵢ) − v(∅)) over the units (attribute
        families, plain attributes) ``condition`` specifies, cᵢ stating unit i alone; every row of a step in
        one network call, so a step costs 1 + (units specified) passes. Outside the interval either is the
        conditional velocity alone, one pass.
        """
        vector = self.conditioner.vector(condition.to(x.device))
        if mode == "joint":
            null = (self.conditioner.vector(self.conditioner.null_condition(x.shape[0]).to(vector))
                    if guidance != 1 else None)
            return guided_field(self.predict, [vector], [guidance], null, interval=interval)
        condition = condition.to(x.device)
        blank = self.conditioner.null_condition(x.shape[0]).to(condition)
        null = self.conditioner.vector(blank)
        per_unit = self.unit_weights(weights, guidance)
        vectors, scales = [], []
        for unit, columns in self._units(condition):
            alone = blank.clone()
            alone[:, columns] = condition[:, columns]
            vectors.append(self.conditioner.vector(alone))
            scales.append(per_unit.get(unit, guidance))
        low, high = check_guidance_interval(*interval)

        def velocity(x_t: torch.Tensor, t: float, end: float | None = None) -> torch.Tensor:
            if vectors and low <= t <= high:
                return guided_velocity(self.predict, x_t, t, vectors, scales, null, end)
            return guided_velocity(self.predict, x_t, t, [vector], [1.0], end=end)

        return velocity

    def _units(self, condition: torch.Tensor) -> list[tuple[str, list[int]]]:
        """The units some row of ``condition`` specifies (an entry 0 or more): ``(unit name, its columns)``."""
        position = {name: i for i, name in enumerate(self.conditioner.attribute_names)}
        specified = (condition >= 0).any(dim=0).tolist()
        found = []
        for unit in self.conditioner.units:
            columns = [position[name] for name in unit]
            if any(specified[c] for c in columns):
                found.append((_unit_name(unit), columns))
        return found

    def unit_weights(self, weights: str, guidance: float = DEFAULT_GUIDANCE) -> dict[str, float]:
        """``"left=4,shape=3"`` as ``{unit: weight}``: a unit is an attribute family (``shape``, or one of its
        values, ``shape::circle``) or a plain attribute; a one-line error for an unknown unit or a weight
        that is not a number from 0 to the guidance's bound."""
        names = list(getattr(self.conditioner, "units", ()))
        known = {_unit_name(unit): unit for unit in names}
        member = {name: _unit_name(unit) for unit in names for name in unit}
        found: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in str(weights).split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            unit = key if key in known else member.get(key)
            if not sep or unit is None:
                listing = ", ".join(known) if len(known) <= 40 else "the families and attributes of `genkit data info`"
                raise genkit.UsageError(f"--attribute-guidance {genkit.shown(item)} is not UNIT=WEIGHT with a unit "
                                        f"of this run ({listing}); for example --attribute-guidance "
                                        f"{next(iter(known), 'left')}=3")
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not 0 <= number <= MAX_GUIDANCE:  # NaN fails both
                raise genkit.UsageError(f"--attribute-guidance {genkit.shown(item)}: the weight must be a number from "
                                        f"0 to {MAX_GUIDANCE:g}, for example {unit}={DEFAULT_GUIDANCE:g}")
            found[unit] = number
        return found

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, *, guidance: float = DEFAULT_GUIDANCE,
               steps: int = DEFAULT_STEPS, solver: Literal["euler", "heun", "mean"] = DEFAULT_SOLVER,
               guidance_from: float = 0.0, guidance_until: float = 1.0,
               guidance_mode: Literal["joint", "composed"] = "joint", attribute_guidance: str = "") -> torch.Tensor:
        """Images in [0, 1] for each condition row: the flow integrated from ``noise`` (N(0, I) of
        ``noise_shape``, drawn from ``generator`` when not given).

        :param guidance: classifier-free guidance scale, 0 or more: 1 follows the condition as
            trained, above 1 keeps to the attributes more strictly, 0 ignores them.
        :param steps: solver steps from noise to image, 1 to 1000; each costs one network pass
            with euler, two with heun (twice that where guidance other than 0 and 1 applies).
        :param solver: euler (one network pass a step), heun (two, more accurate per step), or mean
            (one jump a step by the average velocity to the next step's time: 1 to 4 steps give an
            image; needs a run trained with mean_flow).
        :param guidance_from: time of the path (0 noise, 1 image) where guidance starts; before
            it, the conditional velocity alone (half the passes).
        :param guidance_until: time of the path where guidance ends, guidance_from to 1; after
            it, the conditional velocity alone.
        :param guidance_mode: joint (one guidance for the whole condition) or composed (each attribute
            or family given guided on its own and the guidance summed: 1 + one pass per unit given a
            step; needs a run trained with attribute_dropout).
        :param attribute_guidance: composed guidance's weight per unit, e.g. "left=4,shape=3"
            (a family or plain attribute; the others take --guidance).
        """
        if noise is None:
            self.check_sampling_options(guidance, steps, solver, guidance_from, guidance_until, guidance_mode,
                                        attribute_guidance)  # before drawing anything
            noise = torch.randn(condition.shape[0], *self.image_shape, generator=generator,
                                device=condition.device if generator is None else generator.device)
        return self.sample_partway(noise, condition, 1.0, guidance=guidance, steps=steps, solver=solver,
                                   guidance_from=guidance_from, guidance_until=guidance_until,
                                   guidance_mode=guidance_mode, attribute_guidance=attribute_guidance)

    @torch.no_grad()
    def invert(self, images: torch.Tensor, condition: torch.Tensor, guidance: float = DEFAULT_GUIDANCE,
               steps: int = DEFAULT_STEPS, solver: Literal["euler", "heun", "mean"] = DEFAULT_SOLVER,
               guidance_from: float = 0.0, guidance_until: float = 1.0,
               guidance_mode: Literal["joint", "composed"] = "joint", attribute_guidance: str = "") -> torch.Tensor:
        """The noise that :meth:`sample` with the same options maps to ``images`` (in [0, 1]): the
        same ODE integrated backwards, from t = 1 to t = 0."""
        return self.invert_partway(images, condition, 1.0, guidance=guidance, steps=steps, solver=solver,
                                   guidance_from=guidance_from, guidance_until=guidance_until,
                                   guidance_mode=guidance_mode, attribute_guidance=attribute_guidance)

    @torch.no_grad()
    def sample_partway(self, latent: torch.Tensor, condition: torch.Tensor, depth: float,
                       guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS,
                       solver: Literal["euler", "heun", "mean"] = DEFAULT_SOLVER, guidance_from: float = 0.0,
                       guidance_until: float = 1.0, guidance_mode: Literal["joint", "composed"] = "joint",
                       attribute_guidance: str = "") -> torch.Tensor:
        """Images in [0, 1] from ``latent``, the path's point at time 1 − ``depth``: the flow integrated over
        the last ``depth`` of the path only, in max(1, ⌊steps·depth + ½⌋) steps (depth 1: :meth:`sample`)."""
        x = latent.to(condition.device, next(self.parameters()).dtype)
        return self.to_images(self._last_part(x, condition, depth, False, guidance, steps, solver, guidance_from,
                                              guidance_until, guidance_mode, attribute_guidance))

    @torch.no_grad()
    def invert_partway(self, images: torch.Tensor, condition: torch.Tensor, depth: float,
                       guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS,
                       solver: Literal["euler", "heun", "mean"] = DEFAULT_SOLVER, guidance_from: float = 0.0,
                       guidance_until: float = 1.0, guidance_mode: Literal["joint", "composed"] = "joint",
                       attribute_guidance: str = "") -> torch.Tensor:
        """The path's point at time 1 − ``depth`` that :meth:`sample_partway` with the same options maps to
        ``images``: the ODE integrated backwards from t = 1 over the last ``depth`` of the path, in the same
        steps (depth 1: :meth:`invert`)."""
        x = self.to_flow(images.to(condition.device, next(self.parameters()).dtype))
        return self._last_part(x, condition, depth, True, guidance, steps, solver, guidance_from, guidance_until,
                               guidance_mode, attribute_guidance)

    def _last_part(self, x: torch.Tensor, condition: torch.Tensor, depth: float, backwards: bool, guidance: float,
                   steps: int, solver: str, guidance_from: float, guidance_until: float, guidance_mode: str,
                   attribute_guidance: str) -> torch.Tensor:
        """``x`` carried over the last ``depth`` of the path (from t = 1 − depth to 1, or back), options checked."""
        self.check_sampling_options(guidance, steps, solver, guidance_from, guidance_until, guidance_mode,
                                    attribute_guidance)
        if backwards and solver == "mean":
            raise genkit.UsageError("--solver mean jumps forwards only and cannot invert an image; invert with "
                                    "--invert-opt solver=euler")
        start, count = _partway(depth, steps)
        field = self._field(condition, x, guidance, (guidance_from, guidance_until), guidance_mode,
                            attribute_guidance)
        return integrate(field, x, count, solver, start=start, backwards=backwards, shift=self.time_shift)

    def sampling_cost(self, condition: torch.Tensor, guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS,
                      solver: str = DEFAULT_SOLVER, guidance_from: float = 0.0, guidance_until: float = 1.0,
                      guidance_mode: str = "joint", attribute_guidance: str = "") -> tuple[int, int]:
        """What :meth:`sample` of ``condition``'s rows costs: (network passes over every row and step, the most
        rows one sample puts into a network call), so a server can bound and split a request (genkit serve)."""
        self.check_sampling_options(guidance, steps, solver, guidance_from, guidance_until, guidance_mode,
                                    attribute_guidance)
        if guidance_mode == "joint":
            weights = [guidance]
        else:  # as _field: a weight per unit the rows specify; none specified, the conditional velocity alone
            per_unit = self.unit_weights(attribute_guidance, guidance)
            weights = [per_unit.get(unit, guidance) for unit, _ in self._units(condition)] or [1.0]
        per_sample = network_passes(steps, solver, weights, (guidance_from, guidance_until), shift=self.time_shift)
        width = network_passes(1, "euler", weights)  # one evaluation, guided: its rows
        return len(condition) * per_sample, width

    def check_sampling_options(self, guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS,
                               solver: str = DEFAULT_SOLVER, guidance_from: float = 0.0,
                               guidance_until: float = 1.0, guidance_mode: str = "joint",
                               attribute_guidance: str = "") -> None:
        """Refuse options the solver cannot use, with one line naming the flag and what to choose."""
        if not 0 <= guidance <= MAX_GUIDANCE:  # NaN fails both comparisons
            raise genkit.UsageError(f"--guidance {guidance:g} is outside [0, {MAX_GUIDANCE:g}]; choose for example "
                                    f"{DEFAULT_GUIDANCE:g} (1: the condition as trained, higher: stricter, "
                                    "0: ignore it)")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise genkit.UsageError(f"--sampling-steps {steps} is outside 1 to {MAX_STEPS}; choose for example "
                                    f"{DEFAULT_STEPS} (more: closer to the exact flow, slower)")
        if solver not in SOLVERS:
            raise genkit.UsageError(f"--solver {solver!r} is not known; choose one of: {', '.join(SOLVERS)}")
        if solver == "mean" and not self.mean_flow:
            raise genkit.UsageError("--solver mean jumps by average velocities, which this run did not learn (it was "
                                    "trained with mean_flow 0): use --solver euler, or train with --model-opt "
                                    "mean_flow=0.25")
        check_guidance_interval(guidance_from, guidance_until)
        if guidance_mode not in GUIDANCE_MODES:
            raise genkit.UsageError(f"--guidance-mode {genkit.shown(guidance_mode)} is not known; choose one of: "
                                    f"{', '.join(GUIDANCE_MODES)}")
        if guidance_mode == "composed" and not (self.partial_conditions and hasattr(self.conditioner, "units")):
            raise genkit.UsageError("--guidance-mode composed needs a flow trained with each attribute left out at "
                                    "times (attribute_dropout above 0), and this run was trained without: use "
                                    "--guidance-mode joint")
        if attribute_guidance and guidance_mode != "composed":
            raise genkit.UsageError("--attribute-guidance weighs the units of composed guidance; add "
                                    "--guidance-mode composed, or leave it out")
        if attribute_guidance:
            self.unit_weights(attribute_guidance, guidance)


def _partway(depth: float, steps: int) -> tuple[float, int]:
    """Where a partial integration starts (1 − depth) and its steps, max(1, ⌊steps·depth + ½⌋) (halves up); a
    one-line error for a depth outside (0, 1]."""
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 < depth <= 1:  # NaN fails too
        raise genkit.UsageError(f"depth {genkit.shown(depth)} must be in (0, 1]: the last part of the path to "
                                "integrate, from the image (1: all of it)")
    return 1.0 - float(depth), max(1, math.floor(steps * depth + 0.5))


def _unit_name(unit: tuple[str, ...]) -> str:
    """A unit's name: its family (``shape`` for ``shape::circle``, ...) or its one plain attribute."""
    return unit[0].split("::", 1)[0] if "::" in unit[0] else unit[0]


def _nearest_sizes(height: int, width: int, multiple: int) -> str:
    """The sizes nearest ``height``x``width`` with both sides multiples of ``multiple``: ``"16x16 or 24x24"``."""
    def down(n: int) -> int:
        return max(multiple, n // multiple * multiple)

    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    return " or ".join(dict.fromkeys(f"{h}x{w}" for h, w in ((down(height), down(width)), (up(height), up(width)))))


def build(image_shape: tuple[int, int, int], conditioner, patch: int = 2, channels: list[int] = (16, 32, 64),
          blocks: int = 2, embedding: int = 128, condition_dropout: float = 0.1,
          prediction: Literal["preconditioned", "velocity"] = "preconditioned",
          time_sampling: Literal["logit-normal", "uniform"] = "logit-normal",
          attribute_dropout: float = DEFAULT_ATTRIBUTE_DROPOUT, attention: int = 1, positions: bool = True,
          placement: bool = True, time_shift: float = 1.0, mean_flow: float = 0.0) -> FlowModel:
    """Conditional rectified flow with classifier-free guidance; Euler or Heun sampling.

    :param patch: side of the square patches the network works on (space-to-depth); 4 trains
        faster but draws grainy blotches (measured at 64x64).
    :param channels: widths of the U-Net's levels, each at half the previous resolution.
    :param blocks: residual blocks per level (and per level on the way up).
    :param embedding: width of the embedding of the time and the condition.
    :param condition_dropout: probability that training replaces a condition by the null one
        (what guidance needs), in (0, 1).
    :param prediction: preconditioned (the network's input and output scaled to unit variance at
        every time) or velocity (the network's output is the velocity).
    :param time_sampling: how training draws t: logit-normal (more of the middle of the path) or uniform.
    :param attribute_dropout: probability that training leaves each attribute family or plain
        attribute unspecified, independently, in [0, 1); above 0 the model samples with the unnamed
        attributes left to it (--rest model). Runs saved before this option read 0.
    :param attention: how many of the lowest levels follow each residual block with self-attention
        (0 to the number of levels), so a shape's placement can depend on the whole image. Runs saved
        before this option read 0.
    :param positions: add a 2-D sine-cosine embedding of each position at every level. Runs saved
        before this option read false.
    :param placement: add at every level a map the condition draws from the same position basis, so
        an attribute can say where (``left``, ``top``) as directly as FiLM says what: without it a
        64x64 flow ignores position. Runs saved before this option read false.
    :param time_shift: move training and sampling times toward the noise by this factor, 1 or more
        (SD3's resolution shift; 1: none). It trains the end of the path rarely: 3 at 64x64 left
        the samples noise after 6 epochs of shapes (docs/evaluation.md).
    :param mean_flow: share of training points, in [0, 1), that learn the average velocity to a later
        time (MeanFlow) instead of the velocity, so --solver mean samples in 1 to 4 steps; 0: plain
        flow matching. A training step costs about twice as much above 0.
    """
    for name, value, example in (("patch", patch, 2), ("blocks", blocks, 2), ("embedding", embedding, 128)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise genkit.UsageError(f"{name} {value!r} must be a positive whole number, for example "
                                    f"--model-opt {name}={example}")
    if (isinstance(channels, (str, bytes)) or not isinstance(channels, (list, tuple)) or not channels
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)):
        raise genkit.UsageError(f"channels {channels!r} must be one or more positive widths, for example "
                                "--model-opt channels=[16,32,64]")
    if isinstance(attention, bool) or not isinstance(attention, int) or not 0 <= attention <= len(channels):
        raise genkit.UsageError(f"attention {attention!r} must be a whole number of levels from 0 to {len(channels)} "
                                "(the lowest levels that get self-attention), for example --model-opt attention=1")
    for name, value in (("positions", positions), ("placement", placement)):
        if not isinstance(value, bool):
            raise genkit.UsageError(f"{name} {value!r} must be true or false, for example --model-opt {name}=true")
    return FlowModel(tuple(image_shape), conditioner, patch=patch, channels=tuple(channels), blocks=blocks,
                     embedding=embedding, condition_dropout=condition_dropout, prediction=prediction,
                     time_sampling=time_sampling, attribute_dropout=attribute_dropout, attention=attention,
                     positions=positions, placement=placement, time_shift=time_shift, mean_flow=mean_flow)


@genkit.hookimpl
def register_models(register):
    # batch 8 and an average of the weights (decay 0.999): measured on shapes, docs/evaluation.md; at least
    # 7,200 steps (the full shapes set's 6 epochs): on a small set the condition is learned only with as many
    # updates (docs/training.md, "Small datasets")
    # gradients clipped to norm 1, as the 64x64 design runs were (docs/evaluation.md, "Placing shapes in a large
    # image"); runs saved before attribute_dropout, attention, positions and placement were trained without them
    register("flow", build, flags=("condition_dropout", "attribute_dropout"), default_loss="flow-matching",
             train_defaults={"batch_size": 8, "ema": 0.999, "grad_clip": 1.0, "min_steps": 7200},
             older_runs={"attribute_dropout": 0.0, "attention": 0, "positions": False, "placement": False})

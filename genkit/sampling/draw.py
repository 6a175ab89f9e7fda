"""Drawing samples for attribute sets: one batched loop for ``Run.sample``, ``genkit sample`` and ``genkit serve``.

Which attribute vectors to draw for (``--attrs``, the rest from the data or off) is
:mod:`genkit.sampling.attributes`. The noise is the model's (``noise_shape``), drawn from N(0, I) by seed; what the sampler does
with it, and the options it takes (a CVAE's temperature, a flow's guidance and steps), are the
model's own (:mod:`genkit.sampling.capabilities`). Images are drawn ``SAMPLE_BATCH`` at a time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from genkit.errors import UsageError, shown
from genkit.sampling import capabilities
from genkit.sampling.attributes import (AttributeRequest, check_exclusive, check_rest, conditions, encode_rows,
                                        parse_attrs)

#: images drawn in one call of the sampler: what a model's activations cost is bounded by this batch
SAMPLE_BATCH = 256


# --- parsing --------------------------------------------------------------------------------


# --- the training attribute vectors ---------------------------------------------------------


# --- conditions -----------------------------------------------------------------------------


# --- images ---------------------------------------------------------------------------------

@dataclass
class Samples:
    """Images in [0, 1] on the CPU, the attribute set of each, and a note when the rest fell back to off."""

    images: torch.Tensor
    attribute_sets: list[list[str]] = field(default_factory=list)
    note: str | None = None


def batches(run, condition: torch.Tensor, noise: torch.Tensor, options: dict[str, Any], seed: int = 0,
            batch_size: int | None = None):
    """The samples of ``condition`` at ``noise`` with the model's ``options``, ``batch_size`` at a time:
    yields ``(start, images)`` with images float on the run's device. A sampler that draws fresh
    noise of its own gets a generator seeded by ``seed``."""
    run.model.eval()
    batch_size = batch_size or SAMPLE_BATCH
    generator = torch.Generator(run.device).manual_seed(int(seed) % 2**63)
    for start in range(0, len(noise), batch_size):
        stop = min(start + batch_size, len(noise))
        yield start, capabilities.sample(run.model, condition[start:stop].to(run.device),
                                         noise[start:stop].to(run.device), generator, options).float()


def check_images_fit(run, count: int, what: str) -> None:
    """Refuse ``count`` float images of the run's size that cannot fit in memory, before any is drawn."""
    from genkit.runtime.memory import require_memory

    per_image = 4 * math.prod(run.config.image_shape)
    require_memory(count * per_image, f"{what} ({count} images of {'x'.join(map(str, run.config.image_shape[1:]))})",
                   "ask for fewer images")


@torch.no_grad()
def decode(run, condition: torch.Tensor, noise: torch.Tensor, options: dict[str, Any], seed: int = 0) -> torch.Tensor:
    """All the samples of ``condition`` at ``noise``, on the CPU, drawn in batches into one tensor (never the
    batches and their concatenation at once)."""
    images = None
    for start, part in batches(run, condition, noise, options, seed):
        part = part.cpu()
        if images is None:
            images = part if len(part) == len(noise) else part.new_empty((len(noise), *part.shape[1:]))
        if images is not part:
            images[start:start + len(part)] = part
    return images


def generate(run, attrs: str | Sequence[str], n: int = 16, seed: int = 0, rest: str = "data",
             options: dict[str, Any] | None = None) -> Samples:
    """``n`` images with ``attrs``; the rest filled as ``rest`` says (see the module docstring).

    ``options`` are the model's sampling options, already resolved (``run.resolve_options``).
    """
    if n < 1:
        raise UsageError(f"n {n} must be a positive integer")
    check_images_fit(run, n, f"n={n}")
    options = run.resolve_options(options)
    z = run.noise(n, seed)
    cond = conditions(run, attrs, n, seed, rest)
    return Samples(decode(run, cond.condition, z, options, seed), cond.attribute_sets, cond.note)


def vary(run, attrs: str | Sequence[str], names: Sequence[str], n: int, seed: int = 0, rest: str = "off",
         options: dict[str, Any] | None = None) -> Samples:
    """Per attribute two rows, off then on over ``attrs``, the same ``n`` codes in every row (Figure 5).

    With ``rest="data"`` each column's other attributes come from a training vector that has the
    varied attribute on; the upper row switches only that attribute off.
    """
    names_all = run.attribute_names
    request = parse_attrs(attrs, names_all, run.exclusive_groups)
    varied = _varied_names(run, names, request)  # every name checked before anything is drawn
    check_images_fit(run, 2 * len(varied) * n, f"n={n} with {len(varied)} varied attribute(s)")
    options = run.resolve_options(options)
    z = run.noise(n, seed)
    rows, sets, notes = [], [], []
    for name in varied:
        if rest == "off":  # exactly the grid `genkit sample --vary` always drew
            base = run.conditioner.encode(attrs)
            switch = run.conditioner.encode(name)
            off_set = [x for x in request.on if x != name]
            for c, attribute_set in ((base * (1 - switch), off_set), (torch.maximum(base, switch), off_set + [name])):
                rows.append(decode(run, c.reshape(1, -1).expand(n, -1).float(), z, options, seed))
                sets += [attribute_set] * n
            continue
        cond = conditions(run, attrs, n, seed, check_rest(rest), force_on=[name])
        if cond.note:
            notes.append(cond.note)
        off_sets = [[x for x in s if x != name] for s in cond.attribute_sets]
        off_vectors = torch.tensor([[1 if a in set(s) else 0 for a in names_all] for s in off_sets], dtype=torch.uint8)
        rows += [decode(run, encode_rows(run.conditioner, off_vectors, names_all).float(), z, options, seed),
                 decode(run, cond.condition, z, options, seed)]
        sets += off_sets + cond.attribute_sets
    return Samples(torch.cat(rows), sets, notes[0] if notes else None)


def _varied_names(run, names: Sequence[str], request: AttributeRequest) -> list[str]:
    """The attributes ``--vary`` names: one known name each, given once, and on together with
    ``attrs`` without two values of an exclusive group."""
    varied: list[str] = []
    for raw in names:
        item = str(raw).strip()
        name = item.lstrip("+").strip()
        if not name or name.startswith("-") or "," in name:
            raise UsageError(f"--vary takes one attribute name, not {shown(item)}: it is off in the upper row and on "
                             "in the lower one, over --attrs")
        run.conditioner.encode(name)  # an unknown name: the conditioner's message
        if name in varied:
            raise UsageError(f"--vary {name!r} is given twice; give each attribute once")
        check_exclusive(AttributeRequest(on=tuple(dict.fromkeys([*request.on, name])), off=()), run.exclusive_groups)
        varied.append(name)
    return varied


def interpolate(run, pair: tuple[str, str], n: int, steps: int, seed: int = 0, rest: str = "off",
                options: dict[str, Any] | None = None) -> Samples:
    """``n`` rows (noise draws) × ``steps`` columns, the condition moving linearly from one set to the other.

    With ``rest="data"`` each end's unlisted attributes are filled per row as for a grid.
    """
    if steps < 2:
        raise UsageError(f"steps {steps} must be at least 2 (the two ends)")
    check_images_fit(run, n * steps, f"n={n} with steps={steps}")
    options = run.resolve_options(options)
    z = run.noise(n, seed)
    ends = [conditions(run, spec, n, seed, rest) for spec in pair]
    weights = torch.linspace(0, 1, steps)
    rows, sets = [], []
    for i in range(n):
        cond = torch.stack([(1 - t) * ends[0].condition[i] + t * ends[1].condition[i] for t in weights])
        rows.append(decode(run, cond, z[i:i + 1].expand(steps, *z.shape[1:]), options, seed))
        sets += [ends[0].attribute_sets[i]] + [[]] * (steps - 2) + [ends[1].attribute_sets[i]]
    note = next((e.note for e in ends if e.note), None)
    return Samples(torch.cat(rows), sets, note)


def warn_note(samples: Samples) -> Samples:
    """The Python API's way of saying the rest fell back to off: a warning."""
    if samples.note:
        warnings.warn(samples.note, stacklevel=3)
    return samples

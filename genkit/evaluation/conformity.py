"""``genkit evaluate``'s conformity: how often a sample shows *every* attribute asked for, on attribute sets
the run trained on and on the combinations it held out (:mod:`genkit.data.holdout`).

The evaluation split's attribute vectors are split in two: those carrying a held-out combination
(every attribute of it on) and the others, the *seen* sets. From each group a seeded draw of
:data:`CONFORMITY_SAMPLES` vectors (at most :data:`MAX_REPEATS` per image; each image's vector
repeated as evenly as the count allows) is sampled once each (seeded noise, the model's sampling options), and a sample *conforms* when the
run's attribute classifier reads every attribute of its vector as asked, on and off.

* ``seen_conformity``: the fraction of conforming samples of the seen sets;
* ``heldout_conformity``: the same for the held-out ones; ``null`` when the run holds nothing
  out or the split has no image with a held-out combination.

``conformity`` holds the details: each held-out combination's own figure, how many samples and
distinct vectors each group had, and the classifier's conformity on the real images the group's
samples were drawn for (its ceiling: what a perfect model would score with this judge).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from genkit.components.limits import derived_seed
from genkit.data.holdout import combination_of
from genkit.evaluation.classifier import predict
from genkit.sampling.draw import sample_batches
from genkit.sampling.run import Run
from genkit_datasets.torch_dataset import CachedImageDataset

#: samples drawn per group (seen, held out) ...
CONFORMITY_SAMPLES = 1024
#: ... but at most this many per image of the group (a small group is not sampled hundreds of times over)
MAX_REPEATS = 8


def conforms(predictions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Per row, whether every attribute is read as asked: ``predictions`` (N, A) bool against 0/1 ``vectors``."""
    return (predictions.bool() == (vectors > 0.5)).all(dim=1)


def groups(vectors: torch.Tensor, names: Sequence[str], hold_out: Sequence[str]) -> list[str | None]:
    """Per row of ``vectors``, the held-out combination it carries, or None (a seen set)."""
    return [combination_of(v, names, hold_out) if hold_out else None for v in vectors]


@torch.no_grad()
def conformity_metrics(run: Run, dataset: CachedImageDataset, classifier, seed: int,
                       options: Mapping[str, Any] | None = None, samples: int = CONFORMITY_SAMPLES) -> dict[str, Any]:
    """``seen_conformity``, ``heldout_conformity`` and their details (see the module docstring).

    ``options`` are the sampling options resolved by ``Run.resolve_options`` (None: the model's defaults)."""
    names = run.attribute_names
    hold_out = list(getattr(run.config.data, "hold_out", None) or [])
    vectors = (dataset.attributes > 0.5).float()
    combination = groups(vectors, names, hold_out)
    seen_rows = [i for i, c in enumerate(combination) if c is None]
    held_rows = [i for i, c in enumerate(combination) if c is not None]
    generator = torch.Generator().manual_seed(seed)
    # for a sampler that draws randomness of its own beyond the noise: seeded too, never the global state
    sampler_generator = torch.Generator(run.device).manual_seed(derived_seed(seed, 1))

    def score(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not rows:
            return None
        picked = _spread(rows, min(samples, MAX_REPEATS * len(rows)), generator)
        asked = vectors[picked]
        read = [predict(classifier, images.clamp(0, 1), run.device)
                for _, images in sample_batches(run.model, asked, generator, options, run.device, sampler_generator)]
        return torch.tensor(picked), conforms(torch.cat(read), asked)

    seen, held = score(seen_rows), score(held_rows)
    per_combination = {}
    if held is not None:
        picked, ok = held
        for name in hold_out:
            mine = torch.tensor([combination[i] == name for i in picked.tolist()], dtype=torch.bool)
            if mine.any():
                per_combination[name] = float(ok[mine].float().mean())
    return {
        "seen_conformity": float(seen[1].float().mean()) if seen is not None else None,
        "heldout_conformity": float(held[1].float().mean()) if held is not None else None,
        "conformity": {
            "hold_out": hold_out,
            "per_combination": per_combination,
            "seen_samples": len(seen[0]) if seen is not None else 0,
            "seen_vectors": len({tuple(vectors[i].tolist()) for i in seen_rows}),
            "heldout_samples": len(held[0]) if held is not None else 0,
            "heldout_images": len(held_rows),
            "classifier_seen_conformity": _real(classifier, dataset, vectors, seen, run.device),
            "classifier_heldout_conformity": _real(classifier, dataset, vectors, held, run.device),
            "seed": seed,
        },
    }


def _spread(rows: list[int], count: int, generator: torch.Generator) -> list[int]:
    """``count`` of ``rows``, each as often as the count allows (whole repeats, then a seeded subset)."""
    repeats = math.ceil(count / len(rows))
    pool = torch.tensor(rows).repeat(repeats)
    whole = (count // len(rows)) * len(rows)
    extra = pool[whole:][torch.randperm(len(pool) - whole, generator=generator)[:count - whole]]
    return sorted(torch.cat([pool[:whole], extra]).tolist())


def _real(classifier, dataset, vectors: torch.Tensor, scored, device) -> float | None:
    """The classifier's conformity on the real images a group's samples were drawn for (each image once)."""
    if scored is None:
        return None
    index = torch.unique(scored[0])
    read = predict(classifier, dataset.images_uint8()[index], device)
    return float(conforms(read, vectors[index]).float().mean())

"""``genkit evaluate``'s edit metrics: change one attribute of a real image, judged by the attribute classifier.

Each image of a fixed, seeded subset of the evaluation split (at most :data:`EDIT_IMAGES`; the
JSON says how many and which seed) is edited (:mod:`genkit.sampling.editing`) by every change of a single
attribute (:func:`genkit.sampling.editing.single_changes`: a swap to each other value of an exclusive
family, on↔off for every other attribute; a seeded subset of :data:`MAX_CHANGES_PER_IMAGE` when an
image has more, as CUB's 511 would). The run's attribute classifier judges:

* ``edit_success``: the fraction of edits in which every attribute the change touched is read as
  asked (a swap: the new value on and the old one off);
* ``edit_preservation``: the fraction of edits in which every other attribute is read as the
  classifier reads it on the input image;
* ``edit_clean``: the fraction of edits that do both, what was asked and nothing else (an edit that
  changes nothing preserves everything, so preservation alone rewards edits that fail);
* ``edit_psnr``: the PSNR (dB, pixels in [0, 1], per image, averaged) of the edit that changes
  nothing against the input: the reconstruction under ``redraw``, the input itself (so
  :data:`MAX_PSNR`, by construction) under ``residual``; ``edit_setup.reconstruction_psnr`` is the
  reconstruction's in either mode;
* ``edit_cycle_psnr``: the PSNR of the edit edited back (encoded with the new attributes, edited
  to the old in the same mode) against the input, averaged over the edits.

The edits are made in the mode, depth and inversion options given (``Run.editor``'s), recorded
in ``edit_setup``.

``per_attribute_edit_*`` gives success, preservation and cycle PSNR of the edits that set each
attribute (a swap counts for the value swapped to). Every figure is ``null`` for a model that can
neither encode nor invert, and with ``--no-edits``; nothing is computed then.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from genkit.evaluation.classifier import predict
from genkit.sampling.capabilities import has
from genkit.sampling.editing import DEFAULT_EDIT_MODE, EDIT_BATCH, Editor, apply_change, single_changes
from genkit.sampling.run import Run
from genkit_datasets.torch_dataset import CachedImageDataset

#: evaluation images edited (a seeded subset of the split when it has more)
EDIT_IMAGES = 256
#: single-attribute changes per image (a seeded subset when an image has more)
MAX_CHANGES_PER_IMAGE = 16
#: PSNR of a perfect copy is infinite; a mean needs a finite ceiling
MAX_PSNR = 100.0
KEYS = ("edit_success", "edit_preservation", "edit_clean", "edit_psnr", "edit_cycle_psnr")
PER_ATTRIBUTE = ("per_attribute_edit_success", "per_attribute_edit_preservation", "per_attribute_edit_cycle_psnr")


def skipped(reason: str) -> dict[str, Any]:
    """Every edit metric ``null``, and why."""
    return {**{key: None for key in KEYS}, **{key: None for key in PER_ATTRIBUTE},
            "edit_setup": {"skipped": reason}}


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (B,), at most :data:`MAX_PSNR`."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(dim=1)
    return (-10 * torch.log10(mse.clamp_min(10 ** (-MAX_PSNR / 10)))).double()


def planned_edits(run: Run, dataset: CachedImageDataset, enabled: bool = True, images: int = EDIT_IMAGES) -> tuple[int, int]:
    """How many images :func:`edit_metrics` would edit and how many edits it would make, (0, 0) when none,
    for an estimate of its time before it starts."""
    if not enabled or not (has(run.model, "posterior") or has(run.model, "invert")) or len(dataset) == 0:
        return 0, 0
    chosen = min(images, len(dataset))
    first = (dataset.attributes[0] > 0.5).float().tolist()
    changes = min(MAX_CHANGES_PER_IMAGE, len(single_changes(first, run.attribute_names, run.exclusive_groups)))
    return chosen, chosen * changes


@torch.no_grad()
def edit_metrics(run: Run, dataset: CachedImageDataset, classifier, seed: int, enabled: bool = True,
                 options: Mapping[str, Any] | None = None, images: int = EDIT_IMAGES, *,
                 edit_mode: str = DEFAULT_EDIT_MODE, edit_depth: float | str | None = None,
                 invert_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The edit metrics (see the module docstring) of ``run`` on ``dataset`` (a cached split), as JSON-ready
    values; ``edit_mode``, ``edit_depth`` and ``invert_options`` as ``Run.editor`` takes them."""
    if not enabled:
        return skipped("--no-edits")
    if not (has(run.model, "posterior") or has(run.model, "invert")):
        return skipped("the model can neither encode images (encode/decode) nor invert its sampler (invert)")
    editor = run.editor(options, edit_mode=edit_mode, edit_depth=edit_depth, invert_options=invert_options)
    names, groups = run.attribute_names, run.exclusive_groups
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(dataset), generator=generator)[:images].tolist())
    pixels, labels = dataset.read_uint8(chosen)
    originals = pixels.float().div(255)
    labels = (labels > 0.5).float()
    read_before = predict(classifier, pixels, run.device)

    rows, judged, afters = [], [], []
    position = {name: i for i, name in enumerate(names)}
    for i, vector in enumerate(labels):
        changes = single_changes(vector.tolist(), names, groups)
        if len(changes) > MAX_CHANGES_PER_IMAGE:
            keep = sorted(torch.randperm(len(changes), generator=generator)[:MAX_CHANGES_PER_IMAGE].tolist())
            changes = [changes[k] for k in keep]
        for name, request in changes:
            rows.append(i)
            judged.append(position[name])
            afters.append(apply_change(vector[None], request, names, groups)[0])

    batches = [slice(s, s + EDIT_BATCH) for s in range(0, len(originals), EDIT_BATCH)]
    codes = torch.cat([editor.encode(originals[b], labels[b]) for b in batches])
    drawn = torch.cat([editor.draw(codes[b], labels[b], labels[b]) for b in batches])  # the reconstructions
    unchanged = torch.cat([editor.decode(codes[b], labels[b], labels[b], originals[b], drawn[b]) for b in batches])
    unchanged_psnr = psnr(unchanged, originals)
    drawn_psnr = psnr(drawn, originals)

    rows_t, judged_t = torch.tensor(rows, dtype=torch.long), torch.tensor(judged, dtype=torch.long)
    after_all = torch.stack(afters) if afters else torch.zeros(0, len(names))
    success = torch.zeros(len(rows), dtype=torch.bool)
    preserved = torch.zeros(len(rows), dtype=torch.bool)
    cycle = torch.zeros(len(rows), dtype=torch.float64)
    for start in range(0, len(rows), EDIT_BATCH):
        idx = rows_t[start:start + EDIT_BATCH]
        before, after = labels[idx], after_all[start:start + EDIT_BATCH]
        edited = editor.decode(codes[idx.to(codes.device)], before, after, originals[idx], drawn[idx])
        read = predict(classifier, edited, run.device)
        touched = before != after
        success[start:start + len(idx)] = ((read == after.bool()) | ~touched).all(dim=1)
        preserved[start:start + len(idx)] = ((read == read_before[idx]) | touched).all(dim=1)
        back = editor.decode(editor.encode(edited, after), after, before, edited)
        cycle[start:start + len(idx)] = psnr(back, originals[idx])

    per_success, per_preserved, per_cycle = {}, {}, {}
    for a, name in enumerate(names):
        mine = judged_t == a
        if mine.any():
            per_success[name] = float(success[mine].float().mean())
            per_preserved[name] = float(preserved[mine].float().mean())
            per_cycle[name] = float(cycle[mine].mean())
    return {
        "edit_success": _mean(success),
        "edit_preservation": _mean(preserved),
        "edit_clean": _mean(success & preserved),
        "edit_psnr": float(unchanged_psnr.mean()),
        "edit_cycle_psnr": _mean(cycle),
        "per_attribute_edit_success": per_success,
        "per_attribute_edit_preservation": per_preserved,
        "per_attribute_edit_cycle_psnr": per_cycle,
        "edit_setup": {"method": editor.method, "code": _code(editor), "mode": editor.mode, "depth": editor.depth,
                       "invert_options": editor.invert_options if editor.method == "invert" else None,
                       "images": len(chosen), "split_images": len(dataset), "image_seed": seed, "edits": len(rows),
                       "max_changes_per_image": MAX_CHANGES_PER_IMAGE,
                       "reconstruction_psnr": float(drawn_psnr.mean()),
                       "reconstruction_psnr_of_mean_mse": _psnr_of_mean(drawn_psnr)},
    }


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if len(values) else None


def _psnr_of_mean(per_image: torch.Tensor) -> float:
    """The PSNR of the mean squared error (the figure a mean MSE converts to), from per-image PSNRs."""
    mse = torch.pow(10.0, -per_image / 10).mean()
    return float(-10 * math.log10(max(float(mse), 10 ** (-MAX_PSNR / 10))))


def _code(editor: Editor) -> str:
    if editor.method == "posterior":
        carried = callable(getattr(editor.model, "prior_params", None))
        return "posterior mean" + (", carried through the conditional prior" if carried else "")
    if editor.depth < 1:
        return f"inverted sampler state at time {1 - editor.depth:g}"
    return "inverted sampler noise"

"""Metrics of a trained run on held-out data; they use only the model contract, so any model works.

Each metric needs something of the model (:mod:`genkit.sampling.capabilities`): the sample metrics
(attribute accuracy, diversity, fd) need only ``sample``; the likelihood bounds (mse, kl, elbo,
cll) need a posterior (``encode``/``decode``); ``log_likelihood`` needs the model's own. A metric
whose capability the model lacks is ``None`` (``null`` in JSON), computed at no cost.

The likelihood bounds (``mse``, ``kl``, ``elbo``, ``cll``) and ``log_likelihood`` are defined in
:mod:`genkit.evaluation.likelihood`. The sample metrics:

* ``attribute_accuracy``: one image is generated for each evaluation image's attribute vector and
  the attribute classifier scores it; the fraction of attributes it finds as asked, per attribute
  and averaged. ``classifier_accuracy`` is the classifier on the real evaluation images: the ceiling.
* ``min_attribute_accuracy``: the accuracy of the weakest attribute (``weakest_attribute``).
* ``diversity``: the mean pairwise root-mean-square pixel distance between samples drawn for the
  same attribute vector; ``data_diversity`` is the same figure for real images sharing a vector;
  ``diversity_ratio`` = diversity / data_diversity (1 for a model as varied as the data).
* ``fd``: the Fréchet distance between the classifier's ``features(images)`` (its penultimate
  layer) of the generated images scored for attribute accuracy and of the real evaluation images
  with the same attribute vectors. ``fd_floor``: the same between the real evaluation images and
  as many real images of another split (train, or valid when evaluating on train), each with the
  evaluation image's attribute vector where that split has one: what a perfect model would reach
  at this sample size. Genkit's own distance on its own classifier, not the Inception FID.
  None when the classifier has no ``features`` method.

Sampling uses ``model.sample(condition, noise, **options)`` with noise ~ N(0, I) of the model's
``noise_shape`` and the sampling options given (the model's defaults otherwise); scoring q's draws
uses ``model.decode(z, condition)``, and the prior is ``model.prior_params(condition)`` when the
model has one, N(0, I) otherwise.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable

import torch

from genkit.components.limits import derived_seed
from genkit.errors import UsageError
from genkit.evaluation.classifier import DEFAULT_CLASSIFIER, attribute_accuracy, features_of, get_classifier, predict
from genkit.evaluation.conformity import CONFORMITY_SAMPLES, conformity_metrics
from genkit.evaluation.edits import edit_metrics, planned_edits
from genkit.evaluation.frechet import frechet_distance
from genkit.evaluation.likelihood import (BOUND_KEYS, DEFAULT_SAMPLES, DEFAULT_SIGMA, EvalProgress, bound_means,
                                          check_samples_fit, check_settings, likelihood_sums, own_likelihood)
from genkit.sampling import capabilities
from genkit.sampling.draw import sample_batches
from genkit.sampling.editing import DEFAULT_EDIT_MODE, Editor, check_edit_mode
from genkit.sampling.run import Run, open_run_data
from genkit_datasets.cache import CacheInfo
from genkit_datasets.torch_dataset import CachedImageDataset

DIVERSITY_SETS = 32
DIVERSITY_PER_SET = 8


def pairwise_rms(images: torch.Tensor) -> torch.Tensor:
    """Mean root-mean-square pixel distance over all pairs of a batch (N ≥ 2)."""
    flat = images.float().flatten(1)
    pairs = [(i, j) for i, j in itertools.combinations(range(len(flat)), 2)]
    dist = torch.stack([(flat[i] - flat[j]).pow(2).mean().sqrt() for i, j in pairs])
    return dist.mean()


def distinct_vectors(attributes: torch.Tensor, limit: int) -> list[torch.Tensor]:
    """Up to ``limit`` distinct attribute vectors, in order of first appearance."""
    seen: dict[tuple, torch.Tensor] = {}
    for vector in attributes:
        key = tuple(vector.tolist())
        if key not in seen:
            seen[key] = vector
            if len(seen) == limit:
                break
    return list(seen.values())


def evaluate_run(run: Run, split: str = "test", samples: int = DEFAULT_SAMPLES, sigma: float = DEFAULT_SIGMA,
                 seed: int = 0, limit: int | None = None, data: str | None = None,
                 data_options: dict[str, Any] | None = None, root: str | None = None, cache_dir: str | None = None,
                 classifier_name: str = DEFAULT_CLASSIFIER, train_classifier: bool = False,
                 batch_size: int = 128, progress: EvalProgress | None = None,
                 classifier_progress=None, options: dict[str, Any] | None = None,
                 on_message: Callable[[str], None] | None = None, edits: bool = True,
                 edit_mode: str = DEFAULT_EDIT_MODE, edit_depth: float | str | None = None,
                 invert_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric of ``run`` on ``split`` (see the module docstring), as a JSON-ready dict.

    ``options`` are the model's sampling options (its defaults otherwise); ``edit_mode``,
    ``edit_depth`` and ``invert_options`` how the edit metrics edit (``Run.editor``'s). Seeded: the
    same arguments give the same figures. The caller's random state is untouched. ``on_message``
    hears how long the work is expected to take, before it starts.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} must be a positive integer")
    check_settings(samples, sigma, seed)
    options = run.resolve_options(options)
    edit_settings = {"edit_mode": edit_mode, "edit_depth": edit_depth, "invert_options": invert_options}
    check_edit_mode(edit_mode)
    can_edit = capabilities.has(run.model, "posterior") or capabilities.has(run.model, "invert")
    given = edit_depth is not None or bool(invert_options)
    # the edit settings are checked before any work; given for a model that cannot edit, they are refused
    editor = run.editor(options, **edit_settings) if (edits and can_edit) or given else None
    if capabilities.has(run.model, "posterior"):
        check_samples_fit(run.model, samples, batch_size)
    info = open_run_data(run, data, data_options, root, cache_dir)
    dataset = CachedImageDataset(info.path, split, limit=limit, in_memory=True)
    classifier, record, trained_now = get_classifier(info, classifier_name, train_if_needed=train_classifier,
                                                     device=run.device, progress=classifier_progress)
    run.model.eval()
    device = run.device
    found = capabilities.capabilities(run.model)
    with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        if on_message is not None:
            on_message(estimate(run, dataset, samples, options, found["posterior"], batch_size, edits, editor))
        torch.manual_seed(seed)
        bounds = likelihood_sums(run, dataset, samples, sigma, seed, batch_size, progress) if found["posterior"] else None
        own = own_likelihood(run, dataset, seed, batch_size) if found["log_likelihood"] else None
        per_attribute, real_per_attribute, generated_features = _attribute_accuracies(
            run, dataset, classifier, derived_seed(seed, 1), batch_size, progress, options)
        diversity, data_diversity = _diversities(run, dataset, derived_seed(seed, 2), options)
        fd, fd_floor, reference_split = _frechet_distances(info, dataset, classifier, generated_features, run.device,
                                                           derived_seed(seed, 3))
        # editing real images (genkit.evaluation.edits) and held-out combinations (genkit.evaluation.conformity)
        counterfactual = {**edit_metrics(run, dataset, classifier, derived_seed(seed, 4), enabled=edits, options=options,
                                         **edit_settings),
                          **conformity_metrics(run, dataset, classifier, derived_seed(seed, 5), options=options)}

    n = len(dataset)
    names = list(info.attribute_names)
    return {
        "run": str(run.directory),
        "dataset": info.dataset,
        "split": split,
        "images": n,
        "image_size": list(info.image_size),
        "data_matches_training": info.fingerprint == run.config.data.cache_fingerprint,
        "config": run.config.to_dict(),
        "capabilities": found,
        "sampling_options": options,
        "likelihood": f"gaussian, fixed sigma={sigma}" if bounds is not None else None,
        "sigma": sigma,
        "samples": samples if bounds is not None else None,
        "seed": seed,
        **(bound_means(bounds, n, math.prod(dataset.image_shape)) if bounds is not None
           else dict.fromkeys(BOUND_KEYS)),
        "log_likelihood": own,
        "attribute_accuracy": float(per_attribute.mean()),
        "per_attribute_accuracy": {a: float(v) for a, v in zip(names, per_attribute)},
        "min_attribute_accuracy": float(per_attribute.min()),
        "weakest_attribute": names[int(per_attribute.argmin())],
        "classifier_accuracy": float(real_per_attribute.mean()),
        "per_attribute_classifier_accuracy": {a: float(v) for a, v in zip(names, real_per_attribute)},
        "relative_attribute_accuracy": float(per_attribute.mean() / real_per_attribute.mean().clamp_min(1e-9)),
        "diversity": diversity,
        "data_diversity": data_diversity,
        "diversity_ratio": diversity / data_diversity if data_diversity else None,
        "fd": fd,
        "fd_floor": fd_floor,
        "fd_reference_split": reference_split,
        **counterfactual,
        "classifier": {"name": record.name, "trained_now": trained_now, "valid_accuracy": record.accuracy,
                       "fingerprint": record.fingerprint},
    }


def estimate(run: Run, dataset: CachedImageDataset, samples: int, options: dict[str, Any], posterior: bool,
             batch_size: int, edits: bool = True, editor: Editor | None = None) -> str:
    """How long the evaluation will take, from one timed batch of samples (and of encodes and decodes): one line.

    Counted: the samples of the attribute accuracy, diversity and conformity, the likelihood bounds'
    decodes, and the edit metrics' codes (an encode, or an inverted sampler: as costly as a sample, a
    ``depth`` of it when it inverts part of the way) and draws (one more per edit, for the cycle's
    reconstruction, in ``residual`` mode)."""
    probe = min(16, len(dataset))
    condition = dataset.attributes[:probe].to(run.device)
    noise = run.noise(probe, 0)

    def draw() -> None:
        for _ in sample_batches(run.model, condition, noise, options, run.device,
                                torch.Generator(run.device).manual_seed(0)):
            pass

    draw()  # the first call pays one-off costs (allocations, kernel selection) the evaluation pays once
    per_sample = _timed(draw, run.device) / probe
    held_out = bool(run.config.data.hold_out)
    drawn = len(dataset) + DIVERSITY_SETS * DIVERSITY_PER_SET + CONFORMITY_SAMPLES * (2 if held_out else 1)
    seconds = per_sample * drawn
    parts = [f"{drawn:,} samples ({per_sample * 1000:.1f} ms each)"]
    per_code = per_sample  # inverting a sampler costs about as much as sampling
    if posterior:
        images = dataset.images_uint8()[:probe].to(run.device).float().div_(255)
        per_decode = _timed(lambda: run.model.decode(run.model.encode(images, condition)[0], condition),
                            run.device) / probe
        per_code = per_decode / 2
        seconds += per_decode * samples * len(dataset)
        parts.append(f"{samples * len(dataset):,} decodes for the likelihood bounds")
    edited, changes = planned_edits(run, dataset, edits)
    if changes:
        # codes of the images and of every edit (for the cycle), draws of the reconstructions, edits and cycles
        residual = editor is not None and editor.mode == "residual"
        part = editor.depth if editor is not None and not posterior else 1.0
        seconds += part * (per_code * (edited + changes) + per_sample * (edited + (3 if residual else 2) * changes))
        parts.append(f"{changes:,} edits of {edited:,} images (--no-edits skips them)")
    return f"evaluating {len(dataset):,} {dataset.split} images: {' and '.join(parts)}, about {_duration(seconds)}"


def _timed(work: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``work`` takes, its queued GPU work included."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    synchronize(device)
    started = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - started


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _attribute_accuracies(run: Run, dataset: CachedImageDataset, classifier, seed: int, batch_size: int,
                          progress: EvalProgress | None, options: dict[str, Any]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-attribute accuracy of one sample per evaluation vector, and of the real images; the
    samples' classifier features (None without ``features``)."""
    generator = torch.Generator().manual_seed(seed)
    attributes, n = dataset.attributes, len(dataset)
    predictions, features = [], []
    for start, images in sample_batches(run.model, attributes, generator, options, run.device,
                                        lambda first: _sampler_generator(run.device, seed, first), batch_size):
        images = images.clamp(0, 1)
        predictions.append(predict(classifier, images, run.device))
        features.append(features_of(classifier, images, run.device))
        if progress:
            progress("samples", min(n, start + batch_size), n)
    real = predict(classifier, dataset.images_uint8(), run.device)
    generated = None if any(f is None for f in features) else torch.cat(features)
    return attribute_accuracy(torch.cat(predictions), attributes), attribute_accuracy(real, attributes), generated


def _frechet_distances(info: CacheInfo, dataset: CachedImageDataset, classifier, generated: torch.Tensor | None,
                       device: torch.device, seed: int) -> tuple[float | None, float | None, str | None]:
    """``(fd, fd_floor, reference split)``: samples against the real evaluation images, and another
    split's real images (matched by attribute vector where possible) against them."""
    if generated is None or len(dataset) < 2:
        return None, None, None
    real = features_of(classifier, dataset.images_uint8(), device)
    fd = frechet_distance(generated, real)
    others = [s for s in ("train", "valid", "test") if s != dataset.split and info.split_sizes.get(s)]
    if not others:
        return fd, None, None
    reference = CachedImageDataset(info.path, others[0])
    rows = _matching_rows(reference.attributes, dataset.attributes, torch.Generator().manual_seed(seed))
    order = torch.argsort(rows)  # read in index order (fast slices), then put back
    images = torch.empty(len(rows), *dataset.image_shape, dtype=torch.uint8)
    for start in range(0, len(rows), 1024):
        part = order[start:start + 1024]
        images[part] = reference.read_uint8(rows[part].tolist())[0]
    return fd, frechet_distance(features_of(classifier, images, device), real), others[0]


def _matching_rows(pool: torch.Tensor, wanted: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each row of ``wanted``, a random row of ``pool`` with the same attribute vector (any row if none)."""
    by_vector: dict[tuple, list[int]] = {}
    for i, vector in enumerate(pool.tolist()):
        by_vector.setdefault(tuple(vector), []).append(i)
    picks = torch.randint(0, 2 ** 62, (len(wanted),), generator=generator).tolist()
    rows = []
    for vector, pick in zip(wanted.tolist(), picks):
        candidates = by_vector.get(tuple(vector))
        rows.append(candidates[pick % len(candidates)] if candidates else pick % len(pool))
    return torch.tensor(rows, dtype=torch.long)


def _sampler_generator(device: torch.device, seed: int, offset: int) -> torch.Generator:
    """A generator for a sampler that draws noise of its own, seeded per batch (results do not depend on batching
    of earlier stages)."""
    return torch.Generator(device).manual_seed(derived_seed(seed * 1_000_003, offset))


def _diversities(run: Run, dataset: CachedImageDataset, seed: int,
                 options: dict[str, Any]) -> tuple[float, float | None]:
    """Mean pairwise RMS distance of samples sharing a vector, and of real images sharing one."""
    generator = torch.Generator().manual_seed(seed)
    attributes, images_u8 = dataset.attributes, dataset.images_uint8()
    vectors = distinct_vectors(attributes, DIVERSITY_SETS)
    generated, real = [], []
    sets = torch.stack(vectors).repeat_interleave(DIVERSITY_PER_SET, dim=0)  # a batch per vector
    batches = sample_batches(run.model, sets, generator, options, run.device,
                             lambda first: _sampler_generator(run.device, seed, first // DIVERSITY_PER_SET),
                             DIVERSITY_PER_SET)
    for vector, (_, images) in zip(vectors, batches):
        generated.append(pairwise_rms(images.clamp(0, 1).cpu()))
        rows = (attributes == vector).all(dim=1).nonzero().flatten()[:DIVERSITY_PER_SET]
        if len(rows) >= 2:
            real.append(pairwise_rms(images_u8[rows].float() / 255))
    return float(torch.stack(generated).mean()), (float(torch.stack(real).mean()) if real else None)

"""Metrics of a trained run on held-out data; they use only the model contract, so any model works.

Each metric needs something of the model (:mod:`genkit.capabilities`): the sample metrics
(attribute accuracy, diversity, fd) need only ``sample``; the likelihood bounds (mse, kl, elbo,
cll) need a posterior (``encode``/``decode``); ``log_likelihood`` needs the model's own. A metric
whose capability the model lacks is ``None`` (``null`` in JSON), computed at no cost.

Decoder likelihood. The decoder outputs a mean image ŷ(x, z) in [0, 1]; genkit scores it with a
Gaussian of fixed standard deviation σ on every pixel and channel, p(y|x,z) = N(y; ŷ, σ²I)
(σ = 0.1 by default, in the units of pixels scaled to [0, 1]). With D = 3·H·W values per image:

    log p(y|x,z) = −SSE(y, ŷ) / (2σ²) − (D/2)·log(2πσ²)

It is a density over R^D, so the bounds below are true bounds of that model's log-likelihood, in
nats per image (higher is better); they are comparable between runs evaluated with the same σ.

* ``mse``: E_q[SSE] per image, the squared error summed over pixels and channels, averaged over
  the S draws z_s ~ q(z|x,y) (the usual ``mse`` loss term); ``mse_per_pixel`` = mse / D.
* ``kl``: KL(q(z|x,y) ‖ p(z|x)) in closed form; p(z|x) = N(0, I), or the model's conditional
  prior when it returns one (``extras["prior_mu"]``, ``extras["prior_logvar"]``).
* ``elbo`` = −mse/(2σ²) − (D/2)·log(2πσ²) − kl.
* ``cll``: Sohn et al.'s importance-sampled conditional log-likelihood,
  log p(y|x) ≈ logsumexp_s[log p(y|x,z_s) + log p(z_s|x) − log q(z_s|x,y)] − log S on the same
  S draws. Its expectation lies between the ELBO and log p(y|x).
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

* ``log_likelihood``: the model's own ``log_likelihood(images, condition)`` (exact or a bound,
  as the model defines it), nats per image: comparable only between runs of the same model.

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

from genkit import capabilities
from genkit.classifier import DEFAULT_CLASSIFIER, attribute_accuracy, features_of, get_classifier, predict
from genkit.conformity import CONFORMITY_SAMPLES, conformity_metrics
from genkit.data import prepare_dataset
from genkit.edit_metrics import edit_metrics, planned_edits
from genkit.errors import UsageError
from genkit.gaussian import gaussian_kl
from genkit.limits import check_seed, derived_seed
from genkit.memory import items_that_fit, require_memory
from genkit.frechet import frechet_distance
from genkit.runs import Run
from genkit_datasets.cache import CacheInfo
from genkit_datasets.torch_dataset import CachedImageDataset

DEFAULT_SIGMA = 0.1
DEFAULT_SAMPLES = 100
DIVERSITY_SETS = 32
DIVERSITY_PER_SET = 8
#: images reconstructed in one forward pass
RECONSTRUCT_BATCH = 256
LOG_2PI = math.log(2 * math.pi)

#: ``progress(stage, done, total)``; stages: "likelihood", then "samples".
EvalProgress = Callable[[str, int, int], None]
#: the keys of the likelihood bounds, ``None`` for a model without a posterior
BOUND_KEYS = ("mse", "mse_per_pixel", "kl", "elbo", "cll", "cll_ge_elbo_fraction")


def open_run_data(run: Run, data: str | None = None, data_options: dict[str, Any] | None = None,
                  root: str | None = None, cache_dir: str | None = None, progress=None) -> CacheInfo:
    """The cache of the data ``run`` is evaluated on: its own, unless another variant is asked for.

    A different dataset name, or data whose attribute names differ from the run's, is a
    :class:`UsageError`: the run's conditioner and the classifier would read the vectors wrongly.
    """
    own = run.config.data
    name = data or own.name
    if name != own.name:
        raise UsageError(f"run {run.directory} was trained on {own.name!r}, not {name!r}; evaluate it on "
                         f"{own.name} (leave out --data) or pass a run trained on {name}")
    options = {**own.options, **(data_options or {})}
    info, _ = prepare_dataset(name, root=root if root is not None else own.root, image_size=own.image_size,
                              cache_dir=cache_dir, options=options, progress=progress)
    if list(info.attribute_names) != list(own.attribute_names):
        missing = [a for a in own.attribute_names if a not in info.attribute_names]
        detail = f"it lacks {missing[0]!r}" if missing else "they differ in order or number"
        raise UsageError(f"run {run.directory} was trained on {len(own.attribute_names)} attributes of {own.name} "
                         f"but this {name} data has {len(info.attribute_names)} ({detail}); evaluate it on the data "
                         f"it was trained on")
    return info


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


def prior(model, condition: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and log σ² of the model's prior p(z|x): its ``prior_params(condition)``, or N(0, I) without one."""
    params = getattr(model, "prior_params", None)
    if callable(params):
        mu, logvar = params(condition)
        return mu.float(), logvar.float()
    return torch.zeros_like(like), torch.zeros_like(like)


#: σ must keep σ² a normal, finite float64: the likelihood divides by 2σ² and takes log(2πσ²)
SIGMA_RANGE = (1e-150, 1e150)


def check_settings(samples: int, sigma: float, seed: int = 0) -> None:
    """A :class:`UsageError` unless ``samples`` is a positive integer, ``sigma`` a positive number whose
    square float64 holds, and ``seed`` a seed (0 ... 2**63 - 1)."""
    if samples < 1:
        raise UsageError(f"--samples {samples} must be a positive integer (the default is 100)")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UsageError(f"--sigma {sigma} must be a positive number, for example 0.1")
    low, high = SIGMA_RANGE
    if not low <= sigma <= high:
        raise UsageError(f"--sigma {sigma:g} is too {'small' if sigma < low else 'large'}: the likelihood needs σ² as "
                         f"a number, so σ must lie between {low:g} and {high:g}; for example --sigma 0.1")
    check_seed(seed)


def check_samples_fit(model, samples: int, batch_size: int) -> None:
    """Refuse ``samples`` importance samples per image whose draws cannot fit in memory, before any work.

    :func:`likelihood_bounds` holds, for each of ``batch_size`` images, every draw of z (float32)
    and two float64 figures per draw at once.
    """
    latent = math.prod(capabilities.noise_shape(model))  # a VAE's noise is its latent vector
    per_sample = batch_size * (4 * latent + 16)
    fits = items_that_fit(per_sample)
    require_memory(samples * per_sample, f"--samples {samples} ({batch_size} images at a time, {latent} latent "
                   "values per draw)", f"ask for at most --samples {fits}")


@torch.no_grad()
def likelihood_bounds(model, images: torch.Tensor, condition: torch.Tensor, samples: int = DEFAULT_SAMPLES,
                      sigma: float = DEFAULT_SIGMA, generator: torch.Generator | None = None,
                      chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Per-image ``mse``, ``kl``, ``elbo`` and ``cll`` (float64, shape (B,)) for images in [0, 1].

    See the module docstring for the definitions; ``model`` must have a posterior
    (``encode``/``decode``). ``chunk`` bounds how many images are decoded at once.
    """
    check_settings(samples, sigma)
    if not capabilities.has(model, "posterior"):
        raise UsageError(f"{type(model).__name__} has no posterior (encode and decode): the likelihood bounds "
                         "need one")
    mu, logvar = (t.float() for t in model.encode(images, condition))
    prior_mu, prior_logvar = prior(model, condition, mu)
    decode = model.decode
    b, latent = mu.shape
    pixels = images[0].numel()
    log_norm = -0.5 * pixels * math.log(2 * math.pi * sigma ** 2)
    eps = torch.randn(samples, b, latent, generator=generator).to(mu.device)
    std = torch.exp(0.5 * logvar)
    sse = torch.empty(samples, b, dtype=torch.float64, device=mu.device)
    log_w = torch.empty(samples, b, dtype=torch.float64, device=mu.device)
    per_chunk = max(1, chunk // b)
    target = images.float()
    for s0 in range(0, samples, per_chunk):
        s1 = min(samples, s0 + per_chunk)
        z = mu + std * eps[s0:s1]                                       # (s, b, L)
        flat = z.reshape(-1, latent)
        recon = decode(flat, condition.repeat(s1 - s0, 1)).float().reshape(s1 - s0, b, *images.shape[1:])
        err = (recon - target).pow(2).flatten(2).sum(dim=2).double()    # (s, b)
        sse[s0:s1] = err
        log_prior = log_normal(z, prior_mu, prior_logvar)
        log_q = -0.5 * (LOG_2PI + logvar + eps[s0:s1].pow(2)).sum(dim=-1)
        log_w[s0:s1] = -err / (2 * sigma ** 2) + log_norm + (log_prior - log_q).double()
    kl = gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    mse = sse.mean(dim=0)
    kl = kl.double()
    return {
        "mse": mse,
        "kl": kl,
        "elbo": -mse / (2 * sigma ** 2) + log_norm - kl,
        "cll": torch.logsumexp(log_w, dim=0) - math.log(samples),
    }


def can_reconstruct(model) -> bool:
    """A model reconstructs through its posterior, or by inverting its sampler."""
    return capabilities.has(model, "posterior") or capabilities.has(model, "invert")


@torch.no_grad()
def reconstruct(run: Run, images: torch.Tensor, condition: torch.Tensor, seed: int = 0,
                options: dict[str, Any] | None = None) -> torch.Tensor:
    """The model's reconstructions of images in [0, 1], on the CPU.

    With a posterior: one draw z ~ q(z|x,y) (seeded), decoded. Without one, a model that can
    invert its sampler: the noise ``invert`` finds, sampled again with the same options. A model
    with neither has no reconstructions (a :class:`UsageError`). Images go through the model
    :data:`RECONSTRUCT_BATCH` at a time, so its activations stay bounded.
    """
    model = run.model
    model.eval()
    device = run.device
    if capabilities.has(model, "posterior"):
        def rebuild(images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
            mu, logvar = model.encode(images, condition)
            return model.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu), condition)
    elif capabilities.has(model, "invert"):
        resolved = run.resolve_options(options)
        generator = torch.Generator(device).manual_seed(seed)

        def rebuild(images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
            noise = model.invert(images, condition, **resolved)
            return capabilities.sample(model, condition, noise, generator, resolved)
    else:
        raise UsageError(f"model {run.config.model.name!r} has neither a posterior (encode/decode) nor an inverse of "
                         "its sampler (invert), so it cannot reconstruct images")
    parts = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(images), RECONSTRUCT_BATCH):
            stop = start + RECONSTRUCT_BATCH
            parts.append(rebuild(images[start:stop].to(device).float(), condition[start:stop].to(device).float())
                         .float().clamp(0, 1).cpu())
    return torch.cat(parts)


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
                 on_message: Callable[[str], None] | None = None, edits: bool = True) -> dict[str, Any]:
    """Every metric of ``run`` on ``split`` (see the module docstring), as a JSON-ready dict.

    ``options`` are the model's sampling options (its defaults otherwise). Seeded: the same
    arguments give the same figures. The caller's random state is untouched. ``on_message``
    hears how long the work is expected to take, before it starts.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} must be a positive integer")
    check_settings(samples, sigma, seed)
    options = run.resolve_options(options)
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
            on_message(estimate(run, dataset, samples, options, found["posterior"], batch_size, edits))
        torch.manual_seed(seed)
        bounds = _likelihood(run, dataset, samples, sigma, seed, batch_size, progress) if found["posterior"] else None
        own = _own_likelihood(run, dataset, seed, batch_size) if found["log_likelihood"] else None
        per_attribute, real_per_attribute, generated_features = _attribute_accuracies(
            run, dataset, classifier, derived_seed(seed, 1), batch_size, progress, options)
        diversity, data_diversity = _diversities(run, dataset, derived_seed(seed, 2), options)
        fd, fd_floor, reference_split = _frechet_distances(info, dataset, classifier, generated_features, run.device,
                                                           derived_seed(seed, 3))
        # editing real images (genkit.edit_metrics) and held-out combinations (genkit.conformity)
        counterfactual = {**edit_metrics(run, dataset, classifier, derived_seed(seed, 4), enabled=edits, options=options),
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
        **(_bound_means(bounds, n, math.prod(dataset.image_shape)) if bounds is not None
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


def _bound_means(bounds: tuple[dict[str, float], int], n: int, pixels: int) -> dict[str, float]:
    sums, cll_ge_elbo = bounds
    mse = sums["mse"] / n
    return {"mse": mse, "mse_per_pixel": mse / pixels, "kl": sums["kl"] / n, "elbo": sums["elbo"] / n,
            "cll": sums["cll"] / n, "cll_ge_elbo_fraction": cll_ge_elbo / n}


def _own_likelihood(run: Run, dataset: CachedImageDataset, seed: int, batch_size: int) -> float:
    """The mean of the model's own ``log_likelihood`` over the split, nats per image."""
    generator = torch.Generator(run.device).manual_seed(derived_seed(seed, 6))  # 4 and 5: edits, conformity
    images_u8, attributes, total = dataset.images_uint8(), dataset.attributes, 0.0
    for start in range(0, len(dataset), batch_size):
        images = images_u8[start:start + batch_size].to(run.device).float().div_(255)
        cond = attributes[start:start + batch_size].to(run.device)
        total += float(run.model.log_likelihood(images, cond, generator=generator).double().sum())
    return total / len(dataset)


def estimate(run: Run, dataset: CachedImageDataset, samples: int, options: dict[str, Any], posterior: bool,
             batch_size: int, edits: bool = True) -> str:
    """How long the evaluation will take, from one timed batch of samples (and of encodes and decodes): one line.

    Counted: the samples of the attribute accuracy, diversity and conformity, the likelihood bounds'
    decodes, and the edit metrics' codes (an encode, or an inverted sampler: as costly as a sample)
    and draws."""
    probe = min(16, len(dataset))
    condition = dataset.attributes[:probe].to(run.device)
    generator = torch.Generator().manual_seed(0)
    noise = capabilities.draw_noise(run.model, probe, generator).to(run.device)

    def draw() -> None:
        capabilities.sample(run.model, condition, noise, torch.Generator(run.device).manual_seed(0), options)

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
        seconds += per_code * (edited + changes) + per_sample * (edited + 2 * changes)
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


def _likelihood(run: Run, dataset: CachedImageDataset, samples: int, sigma: float, seed: int, batch_size: int,
                progress: EvalProgress | None) -> tuple[dict[str, float], int]:
    """Sums over the split of the per-image bounds, and how many images have cll ≥ elbo."""
    generator = torch.Generator().manual_seed(seed)
    images_u8, attributes, n = dataset.images_uint8(), dataset.attributes, len(dataset)
    sums = {k: 0.0 for k in ("mse", "kl", "elbo", "cll")}
    cll_ge_elbo = 0
    for start in range(0, n, batch_size):
        images = images_u8[start:start + batch_size].to(run.device).float().div_(255)
        cond = attributes[start:start + batch_size].to(run.device)
        bounds = likelihood_bounds(run.model, images, cond, samples, sigma, generator)
        for key in sums:
            sums[key] += float(bounds[key].sum())
        cll_ge_elbo += int((bounds["cll"] >= bounds["elbo"]).sum())
        if progress:
            progress("likelihood", min(n, start + batch_size), n)
    return sums, cll_ge_elbo


def _attribute_accuracies(run: Run, dataset: CachedImageDataset, classifier, seed: int, batch_size: int,
                          progress: EvalProgress | None, options: dict[str, Any]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-attribute accuracy of one sample per evaluation vector, and of the real images; the
    samples' classifier features (None without ``features``)."""
    generator = torch.Generator().manual_seed(seed)
    attributes, n = dataset.attributes, len(dataset)
    predictions, features = [], []
    for start in range(0, n, batch_size):
        cond = attributes[start:start + batch_size].to(run.device)
        noise = capabilities.draw_noise(run.model, len(cond), generator).to(run.device)
        images = capabilities.sample(run.model, cond, noise, _sampler_generator(run, seed, start), options)
        images = images.float().clamp(0, 1)
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


def _sampler_generator(run: Run, seed: int, offset: int) -> torch.Generator:
    """A generator for a sampler that draws noise of its own, seeded per batch (results do not depend on batching
    of earlier stages)."""
    return torch.Generator(run.device).manual_seed(derived_seed(seed * 1_000_003, offset))


def _diversities(run: Run, dataset: CachedImageDataset, seed: int,
                 options: dict[str, Any]) -> tuple[float, float | None]:
    """Mean pairwise RMS distance of samples sharing a vector, and of real images sharing one."""
    generator = torch.Generator().manual_seed(seed)
    attributes, images_u8 = dataset.attributes, dataset.images_uint8()
    vectors = distinct_vectors(attributes, DIVERSITY_SETS)
    generated, real = [], []
    for index, vector in enumerate(vectors):
        cond = vector.to(run.device).reshape(1, -1).expand(DIVERSITY_PER_SET, -1)
        noise = capabilities.draw_noise(run.model, DIVERSITY_PER_SET, generator).to(run.device)
        images = capabilities.sample(run.model, cond, noise, _sampler_generator(run, seed, index), options)
        generated.append(pairwise_rms(images.float().clamp(0, 1).cpu()))
        rows = (attributes == vector).all(dim=1).nonzero().flatten()[:DIVERSITY_PER_SET]
        if len(rows) >= 2:
            real.append(pairwise_rms(images_u8[rows].float() / 255))
    return float(torch.stack(generated).mean()), (float(torch.stack(real).mean()) if real else None)

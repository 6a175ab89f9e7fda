"""The attribute classifier: trained on a dataset's real training split, cached beside its cache.

It judges whether generated images carry the attributes asked for (``genkit evaluate``). Two
files sit next to the dataset's HDF5 cache ``<stem>.h5``: ``<stem>.classifier-<name>.safetensors``
(weights) and ``<stem>.classifier-<name>.json`` (what it was trained on: dataset, image size, attribute
names, the cache's source fingerprint, options, accuracy on the validation split). A classifier
whose fingerprint or attribute names differ from the cache's is *stale*: it is never used, it is
retrained (``genkit classifier train``, or ``--train-classifier``). Both files are written
atomically, the weights first, so a half-written classifier is never taken for a good one.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from genkit.components.build import POSITIONAL_ARGS
from genkit.components.limits import derived_seed
from genkit.components.loading import registry
from genkit.components.recipe import DEFAULT_RECIPE
from genkit.errors import UsageError
from genkit.runtime.distributed import resolve_device
from genkit.sampling.run import Run
from genkit.store.files import write_text_atomic
from genkit.store.weights import load_weights, save_weights
from genkit_datasets.cache import CacheInfo
from genkit_datasets.torch_dataset import CachedImageDataset

CLASSIFIER_FORMAT = 1
DEFAULT_CLASSIFIER = DEFAULT_RECIPE.classifier
DEFAULT_EPOCHS = 6
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 2e-3

#: ``progress(epoch, epochs, step, steps)`` while a classifier trains.
ClassifierProgress = Callable[[int, int, int, int], None]


@dataclass
class ClassifierRecord:
    """The JSON beside a classifier's weights."""

    name: str
    dataset: str
    image_size: tuple[int, int]
    attribute_names: list[str]
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    seed: int = 0
    valid_split: str = "valid"
    accuracy: float = 0.0
    per_attribute_accuracy: dict[str, float] = field(default_factory=dict)
    format: int = CLASSIFIER_FORMAT


def classifier_files(info: CacheInfo, name: str = DEFAULT_CLASSIFIER) -> tuple[Path, Path]:
    """``(weights, record)`` paths of classifier ``name`` for the cache ``info`` describes."""
    stem = info.path.name[:-3] if info.path.name.endswith(".h5") else info.path.name
    base = info.path.with_name(f"{stem}.classifier-{name}")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def train_command(info: CacheInfo, name: str = DEFAULT_CLASSIFIER) -> str:
    """The ``genkit classifier train`` command line that (re)builds the classifier for ``info``."""
    parts = ["genkit", "classifier", "train", "--data", info.dataset,
             "--image-size", f"{info.image_size[0]}x{info.image_size[1]}"]
    for key, value in sorted(info.options.items()):
        parts += ["--data-opt", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if name != DEFAULT_CLASSIFIER:
        parts += ["--classifier", name]
    from genkit_datasets.cache import default_cache_dir

    if info.path.parent.resolve() != default_cache_dir().resolve():  # the cache lives where --cache-dir put it
        parts += ["--cache-dir", str(info.path.parent)]
    try:
        from genkit.data.prepare import open_source

        if getattr(open_source(info.dataset, info.options, saved=True)[0], "needs_root", False):
            parts += ["--root", "PATH"]
    except UsageError:
        pass
    return " ".join(shlex.quote(p) if p != "PATH" else p for p in parts)


def read_record(info: CacheInfo, name: str = DEFAULT_CLASSIFIER) -> ClassifierRecord | None:
    """The record of classifier ``name`` for ``info``'s cache, or None if missing or unreadable."""
    weights, meta = classifier_files(info, name)
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        raw = json.loads(meta.read_text())
        raw["image_size"] = tuple(raw["image_size"])
        return ClassifierRecord(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def stale_reason(record: ClassifierRecord | None, info: CacheInfo) -> str | None:
    """Why ``record`` cannot judge images of ``info``'s cache, or None when it can."""
    if record is None:
        return "missing"
    if record.format != CLASSIFIER_FORMAT:
        return f"it was written by another genkit version (format {record.format})"
    if record.fingerprint != info.fingerprint:
        return (f"it was trained on another version of the data (fingerprint {record.fingerprint[:12]}, "
                f"the cache's is {info.fingerprint[:12]})")
    if list(record.attribute_names) != list(info.attribute_names):
        return "it was trained on another attribute set"
    if tuple(record.image_size) != tuple(info.image_size):
        return f"it was trained on {record.image_size[0]}x{record.image_size[1]} images"
    return None


def load_classifier(info: CacheInfo, name: str = DEFAULT_CLASSIFIER,
                    device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ClassifierRecord]:
    """The cached classifier for ``info``; a one-line :class:`UsageError` saying how to get one if missing or stale."""
    record = read_record(info, name)
    why = stale_reason(record, info)
    size = f"{info.image_size[0]}x{info.image_size[1]}"
    if why == "missing":
        raise UsageError(f"no attribute classifier {name!r} for {info.dataset} {size} yet; pass --train-classifier "
                         f"or run `{train_command(info, name)}`")
    if why is not None:
        raise UsageError(f"the attribute classifier {name!r} for {info.dataset} {size} is stale: {why}; pass "
                         f"--train-classifier or run `{train_command(info, name)}`")
    model = _build(record.name, info, record.options)
    load_weights(model, classifier_files(info, name)[0])
    chosen = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(chosen).eval(), record


def _build(name: str, info: CacheInfo, options: dict[str, Any]) -> torch.nn.Module:
    component = registry("classifiers").get(name)
    return component.create((3, *info.image_size), list(info.attribute_names), **options)


def resolve_classifier_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Every option of classifier ``name``, the given ones over its defaults (checks names)."""
    return registry("classifiers").get(name).resolve_options(options or {}, skip=POSITIONAL_ARGS["classifiers"])


def train_classifier(info: CacheInfo, name: str = DEFAULT_CLASSIFIER, options: dict[str, Any] | None = None,
                     epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                     seed: int = 0, device: str = "auto",
                     progress: ClassifierProgress | None = None) -> tuple[torch.nn.Module, ClassifierRecord]:
    """Train classifier ``name`` on the real training split of ``info``'s cache and save it beside the cache.

    Binary cross-entropy per attribute, Adam, seeded shuffling; accuracy is measured on the
    validation split (the test split when there is none) and stored in the record.
    """
    for what, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise UsageError(f"{what} {value} must be a positive integer")
    if not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"learning rate {lr} must be a positive number, for example 2e-3")
    resolved = resolve_classifier_options(name, options)
    chosen = resolve_device(device)
    train_set = CachedImageDataset(info.path, "train", in_memory=True)
    valid_split = "valid" if info.split_sizes.get("valid") else "test"
    valid_set = CachedImageDataset(info.path, valid_split, in_memory=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(name, info, resolved).to(chosen)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images, targets = train_set.images_uint8(), train_set.attributes
    steps = math.ceil(len(train_set) / batch_size)
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(derived_seed(seed * 7919, epoch)))
        for step, start in enumerate(range(0, len(order), batch_size), start=1):
            idx = order[start:start + batch_size]
            batch = images[idx].to(chosen).float().div_(255)
            loss = F.binary_cross_entropy_with_logits(model(batch), targets[idx].to(chosen))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(epoch, epochs, step, steps)
    model.eval()
    per_attribute = attribute_accuracy(predict(model, valid_set.images_uint8(), chosen), valid_set.attributes)
    record = ClassifierRecord(
        name=name, dataset=info.dataset, image_size=tuple(info.image_size), attribute_names=list(info.attribute_names),
        fingerprint=info.fingerprint, options=resolved, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        valid_split=valid_split, accuracy=float(per_attribute.mean()),
        per_attribute_accuracy={n: float(a) for n, a in zip(info.attribute_names, per_attribute)})
    weights, meta = classifier_files(info, name)
    meta.unlink(missing_ok=True)  # never a fresh record beside old weights, even if interrupted
    save_weights(model, weights)
    write_text_atomic(meta, json.dumps(asdict(record), indent=1))
    return model, record


def get_classifier(info: CacheInfo, name: str = DEFAULT_CLASSIFIER, train_if_needed: bool = False,
                   device: str | torch.device = "auto",
                   progress: ClassifierProgress | None = None) -> tuple[torch.nn.Module, ClassifierRecord, bool]:
    """``(classifier, record, trained_now)``: the cached one, or a new one when allowed and needed."""
    device = resolve_device(device) if isinstance(device, str) else device
    if train_if_needed and stale_reason(read_record(info, name), info) is not None:
        model, record = train_classifier(info, name, device=str(device), progress=progress)
        return model, record, True
    model, record = load_classifier(info, name, device=device)
    return model, record, False


@torch.no_grad()
def predict(classifier: torch.nn.Module, images: torch.Tensor, device: torch.device | None = None,
            batch_size: int = 256) -> torch.Tensor:
    """Boolean attribute predictions (N, A) for images, uint8 (0–255) or float in [0, 1]."""
    device = device or next(classifier.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
        out.append((classifier(batch) > 0).cpu())
    return torch.cat(out)


@torch.no_grad()
def features_of(classifier: torch.nn.Module, images: torch.Tensor, device: torch.device | None = None,
                batch_size: int = 256) -> torch.Tensor | None:
    """The classifier's ``features(images)`` (N, F) on the CPU, in float64 (uint8 or [0, 1] images), or None
    when the classifier has no ``features`` method (then ``genkit evaluate`` reports no fd)."""
    features = getattr(classifier, "features", None)
    if not callable(features):
        return None
    device = device or next(classifier.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
        out.append(features(batch).flatten(1).double().cpu())
    return torch.cat(out)


def attribute_accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-attribute accuracy (A,): how often the predicted presence equals the target's."""
    return (predictions.bool() == (targets > 0.5)).float().mean(dim=0)


def run_classifier(run: Run, name: str | None = None, cache_dir: str | Path | None = None) -> torch.nn.Module:
    """The attribute classifier of the run's data, from beside its cache (nothing is built or trained here);
    a :class:`UsageError` saying how to get one, or to give the attributes with ``--from``, when there is none."""
    from genkit.data.prepare import dataset_cache_path
    from genkit_datasets.cache import read_cache_info

    name = name or DEFAULT_CLASSIFIER
    data = run.config.data
    path = dataset_cache_path(data.name, tuple(data.image_size), data.options, Path(data.root) if data.root else None,
                              cache_dir)
    info = read_cache_info(path)
    if info is None or list(info.attribute_names) != list(run.attribute_names):
        raise UsageError(f"the run's {data.name} cache is not at {path}, so there is no attribute classifier to read "
                         "the image; give its attributes with --from \"...\", or pass --cache-dir with the folder "
                         "that holds the cache")
    why = stale_reason(read_record(info, name), info)
    if why is not None:
        raise UsageError(f"no usable attribute classifier {name!r} for {data.name} ({why}); train it with "
                         f"`{train_command(info, name)}`, or give the image's attributes with --from \"...\"")
    return load_classifier(info, name, device=run.device)[0]

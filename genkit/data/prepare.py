"""From a dataset name to a torch Dataset: resolve the source, build or reuse its cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from genkit.components.loading import registry
from genkit.errors import UsageError
from genkit_datasets.cache import CacheInfo, Progress, UnreadableImage, cache_path, prepare_cache
from genkit_datasets.preprocess import parse_image_size
from genkit_datasets.torch_dataset import CachedImageDataset


def open_source(name: str, options: Mapping[str, Any] | None = None, *, saved: bool = False):
    """Instantiate dataset source ``name`` with its options; returns ``(source, resolved_options)``.

    ``saved``: the options are a run's (``config.data.options``), so an option they lack was added after the
    run was saved and takes the value the dataset declared for older runs, not the factory's default
    (``register(..., older_runs=...)``; a planned run's options are complete, so nothing changes for it).
    """
    component = registry("datasets").get(name)
    given = dict(options or {})
    resolved = component.resolve_options(component.with_older_runs(given) if saved else given)
    return component.create(**resolved), resolved


def resolve_root(name: str, source, root: str | Path | None) -> Path | None:
    """``root`` if given, else ``$GENKIT_DATA_ROOT/<name>``; an error saying where to get the data."""
    hint = getattr(source, "obtain_hint", "")
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise UsageError(
                f"data folder {path} does not exist; pass --root with the folder that holds {name}. {hint}".strip())
        return path
    if not getattr(source, "needs_root", False):
        return None
    env = os.environ.get("GENKIT_DATA_ROOT")
    if env:
        path = Path(env).expanduser() / name
        if path.exists():
            return path
        raise UsageError(f"{path} does not exist (from GENKIT_DATA_ROOT); pass --root with the folder that holds "
                         f"{name}. {hint}".strip())
    raise UsageError(
        f"dataset {name!r} needs its files: pass --root PATH or set GENKIT_DATA_ROOT. {hint}".strip()
    )


def dataset_cache_path(name: str, size: tuple[int, int], options: dict[str, Any], root: Path | None,
                       cache_dir: str | Path | None = None) -> Path:
    """The cache file of a dataset: one per dataset, size, options and source folder.

    The source folder is part of the file name, so two ``folder`` datasets (or two copies of
    CUB) do not take turns overwriting one cache.
    """
    key = dict(options)
    if root is not None:
        key["root"] = str(Path(root).resolve())
    return cache_path(name, size, key, cache_dir)


def prepare_dataset(name: str, root: str | Path | None = None, image_size: Any = None,
                    cache_dir: str | Path | None = None, workers: int | None = None,
                    progress: Progress | None = None, skip_bad: bool = False,
                    options: dict[str, Any] | None = None, saved: bool = False) -> tuple[CacheInfo, dict[str, Any]]:
    """Build (or reuse) the HDF5 cache of a dataset; returns its info and the resolved options.

    ``saved``: ``options`` are a run's ``config.data.options`` (see :func:`open_source`).
    """
    source, resolved = open_source(name, options, saved=saved)
    size = parse_image_size(image_size) if image_size is not None else tuple(source.default_image_size)
    root_path = resolve_root(name, source, root)
    index = source.scan(root_path)
    path = dataset_cache_path(name, size, resolved, root_path, cache_dir)
    try:
        info = prepare_cache(name, index, path, size, resolved, workers=workers, progress=progress,
                             skip_bad=skip_bad)
    except UnreadableImage as exc:
        command = prepare_command(name, root_path, size, options or {}, cache_dir)
        raise UsageError(f"cannot read image {exc.key} ({exc.reason}); fix or remove it, or leave unreadable images "
                         f"out: `{command} --skip-bad`") from None
    return info, resolved


def prepare_command(name: str, root: Path | None, size: tuple[int, int], options: dict[str, Any],
                    cache_dir: str | Path | None) -> str:
    """The ``genkit data prepare`` line that builds this very cache (for advice in messages)."""
    import json
    import shlex

    parts = ["genkit", "data", "prepare", "--data", name]
    if root is not None:
        parts += ["--root", str(Path(root).resolve())]
    parts += ["--image-size", f"{size[0]}x{size[1]}" if size[0] != size[1] else str(size[0])]
    for key, value in options.items():
        parts += ["--data-opt", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    if cache_dir is not None:
        parts += ["--cache-dir", str(cache_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def load_dataset(name: str, root: str | Path | None = None, split: str = "train", image_size: Any = None,
                 limit: int | None = None, in_memory: bool = False, cache_dir: str | Path | None = None,
                 workers: int | None = None, progress: Progress | None = None, **options: Any) -> CachedImageDataset:
    """A torch Dataset of ``(image float32 (3, H, W) in [0, 1], attributes float32 0/1)``.

    The dataset's cache is built on first use (``GENKIT_CACHE`` or the user cache directory
    unless ``cache_dir`` is given) and reused after. ``.attribute_names`` names the attributes.
    Extra keyword arguments are the dataset's own options (``count``, ``seed`` for shapes).
    """
    info, _ = prepare_dataset(name, root=root, image_size=image_size, cache_dir=cache_dir, workers=workers,
                              progress=progress, options=options)
    return CachedImageDataset(info.path, split=split, limit=limit, in_memory=in_memory)

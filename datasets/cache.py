"""The HDF5 cache: every image decoded and resized once, read many times.

Layout of one cache file::

    /images           uint8 (N, 3, H, W), one chunk per image, so reading an image or a
                      batch touches nothing else
    /attributes       uint8 (N, A), 0/1
    /attribute_names  (A,) UTF-8 strings
    /splits/<name>    int64 indices into /images, in the dataset's id order
    attrs["manifest"] JSON: format version, dataset, source fingerprint, preprocessing options,
                      counts, skipped images, exclusive attribute groups

A cache is built into ``<name>.partial-<pid>`` and renamed into place only when complete, so an
interrupted build never leaves a file that is taken for a cache. A cache whose manifest is
missing, unreadable, from another format version or from another source fingerprint is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from genkit_datasets.errors import GenkitRuntimeError, UsageError
from genkit_datasets.source import SourceIndex

FORMAT_VERSION = 1

#: ``progress(done, total)``, called from the building process as images are written.
Progress = Callable[[int, int], None]


@dataclass
class CacheInfo:
    """What a cache file holds, read from its manifest."""

    path: Path
    dataset: str
    image_size: tuple[int, int]
    count: int
    attribute_names: list[str]
    split_sizes: dict[str, int]
    fingerprint: str
    options: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    exclusive_groups: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    built: bool = False

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def default_cache_dir() -> Path:
    """``$GENKIT_CACHE`` when set, else the user cache directory (``~/.cache/genkit`` on Linux)."""
    env = os.environ.get("GENKIT_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("genkit"))


def cache_path(dataset: str, image_size: tuple[int, int], options: dict | None = None,
               cache_dir: str | Path | None = None) -> Path:
    """Where the cache of ``dataset`` at ``image_size`` with reader ``options`` lives.

    The file name depends on the dataset, the size and the options, not on the source
    fingerprint: a changed source rebuilds the same file instead of leaving the old one behind.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    height, width = image_size
    name = f"{dataset}-{height}x{width}"
    if options:
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
        name += f"-{digest}"
    return directory / f"{name}.h5"


def read_cache_info(path: str | Path) -> CacheInfo | None:
    """The manifest of the cache at ``path``, or None when it is missing, corrupt or outdated."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
            if manifest.get("format_version") != FORMAT_VERSION:
                return None
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["attribute_names"][()]]
            splits = {k: int(v.shape[0]) for k, v in f["splits"].items()}
            count = int(f["images"].shape[0])
            if f["attributes"].shape != (count, len(names)):
                return None
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError):
        return None
    return CacheInfo(
        path=path,
        dataset=manifest["dataset"],
        image_size=tuple(manifest["image_size"]),
        count=count,
        attribute_names=names,
        split_sizes=splits,
        fingerprint=manifest["fingerprint"],
        options=manifest.get("options", {}),
        skipped=manifest.get("skipped", []),
        exclusive_groups=list(manifest.get("exclusive_groups", [])),
        format_version=manifest["format_version"],
    )


def prepare_cache(dataset: str, index: SourceIndex, path: str | Path, image_size: tuple[int, int],
                  options: dict | None = None, workers: int | None = None,
                  progress: Progress | None = None, skip_bad: bool = False) -> CacheInfo:
    """Return the cache at ``path``, building it first unless a matching one is there.

    A cache matches when its format version, source fingerprint, image size, options and
    exclusive groups equal those asked for. ``workers`` processes decode and resize in parallel (default: all cores).
    An image that cannot be read is a :class:`UsageError` naming it, unless ``skip_bad`` is set:
    then it is left out of every split and listed in the manifest's ``skipped``.
    """
    path = Path(path)
    options = dict(options or {})
    info = read_cache_info(path)
    if (info is not None and info.fingerprint == index.fingerprint
            and info.image_size == tuple(image_size) and info.options == options
            and info.exclusive_groups == list(index.exclusive_groups)):
        return info
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        _build(dataset, index, partial, tuple(image_size), options, workers, progress, skip_bad)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    info = read_cache_info(path)
    if info is None:  # pragma: no cover - would mean h5py wrote a file it cannot read back
        raise GenkitRuntimeError(f"the cache just written to {path} cannot be read back")
    info.built = True
    return info


def _remove_stale_partials(path: Path) -> None:
    for partial in path.parent.glob(f"{path.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ChunkReader:
    """Reads a run of items in a worker; failures come back as keys instead of raising."""

    def __init__(self, reader, size: tuple[int, int]):
        self.reader = reader
        self.size = size

    def __call__(self, span: tuple[int, int]):
        start, stop = span
        height, width = self.size
        out = np.zeros((stop - start, 3, height, width), dtype=np.uint8)
        bad: list[tuple[int, str]] = []
        for j, i in enumerate(range(start, stop)):
            try:
                pixels = np.asarray(self.reader(i, self.size), dtype=np.uint8)
                if pixels.shape != (height, width, 3):
                    raise ValueError(f"reader returned shape {pixels.shape}, expected {(height, width, 3)}")
            except Exception as exc:  # a corrupt file, a truncated JPEG, a reader bug
                bad.append((i, f"{type(exc).__name__}: {exc}"))
                continue
            out[j] = pixels.transpose(2, 0, 1)
        return start, out, bad


_worker_job: _ChunkReader | None = None


def _init_worker(job: _ChunkReader) -> None:
    """Give a pool worker its reader once, instead of pickling it with every span."""
    global _worker_job
    _worker_job = job


def _run_span(span: tuple[int, int]):
    return _worker_job(span)


def _spans(count: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, count)) for s in range(0, count, chunk)]


def _build(dataset: str, index: SourceIndex, target: Path, size: tuple[int, int], options: dict,
           workers: int | None, progress: Progress | None, skip_bad: bool) -> None:
    count = len(index)
    height, width = size
    workers = max(1, workers or os.cpu_count() or 1)
    chunk = max(1, min(256, count // (workers * 8) or 1))
    job = _ChunkReader(index.reader, size)
    bad: list[tuple[int, str]] = []
    started = time.perf_counter()
    with h5py.File(target, "w") as f:
        images = f.create_dataset("images", shape=(count, 3, height, width), dtype=np.uint8,
                                  chunks=(1, 3, height, width))
        done = 0
        if progress:
            progress(0, count)
        if workers == 1:
            results = map(job, _spans(count, chunk))
            pool = None
        else:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(job,))
            results = pool.imap(_run_span, _spans(count, chunk))
        try:
            for start, pixels, failed in results:
                images[start:start + len(pixels)] = pixels
                bad.extend(failed)
                if failed and not skip_bad:
                    i, why = failed[0]
                    raise UsageError(
                        f"cannot read image {index.key(i)} ({why}); fix or remove it, "
                        "or pass --skip-bad to leave unreadable images out"
                    )
                done += len(pixels)
                if progress:
                    progress(done, count)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        f.create_dataset("attributes", data=index.attributes)
        f.create_dataset("attribute_names", data=np.array(index.attribute_names, dtype=object),
                         dtype=h5py.string_dtype())
        bad_set = {i for i, _ in bad}
        group = f.create_group("splits")
        for name, idx in index.splits.items():
            if bad_set:
                idx = np.array([i for i in idx if i not in bad_set], dtype=np.int64)
            group.create_dataset(name, data=idx.astype(np.int64))
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "fingerprint": index.fingerprint,
            "image_size": [height, width],
            "options": options,
            "crop": index.crop,
            "exclusive_groups": list(index.exclusive_groups),
            "skipped": [index.key(i) for i, _ in bad],
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        f.attrs["manifest"] = json.dumps(manifest)

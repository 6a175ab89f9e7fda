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
missing, unreadable, from another format version or from another source fingerprint is rebuilt,
and :attr:`CacheInfo.rebuilt_because` says why.

HDF5 never sees a failed write. After a write error (a full disk) HDF5 2.0 cannot close the file
it was writing: every later close, including the library's own at interpreter exit, crashes the
process (a segmentation fault, exit 139). So the builder hands HDF5 a Python file object
(:class:`_GuardedFile`) that records the first error, from the disk or an interrupt, and lets
HDF5 finish as if the write had worked; the build then raises that error and deletes the
partial file. Worker processes are forked before the file is opened, so none inherits its state.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import time
from concurrent.futures import ProcessPoolExecutor
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
    #: why an existing cache file was replaced ("it is corrupt ...", "the source files changed"); None if not
    rebuilt_because: str | None = None

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


class UnreadableImage(UsageError):
    """An image the reader cannot decode; ``key`` names it, ``reason`` says why."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"cannot read image {key} ({reason}); fix or remove it, or build the cache with "
                         "skip_bad=True to leave unreadable images out")


def read_cache_info(path: str | Path) -> CacheInfo | None:
    """The manifest of the cache at ``path``, or None when it is missing, corrupt or outdated."""
    return inspect_cache(path)[0]


def inspect_cache(path: str | Path) -> tuple[CacheInfo | None, str | None]:
    """``(info, None)`` for a usable cache, else ``(None, why)``; ``why`` is None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
            if manifest.get("format_version") != FORMAT_VERSION:
                return None, (f"it was written in cache format {manifest.get('format_version')}, "
                              f"this genkit writes format {FORMAT_VERSION}")
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["attribute_names"][()]]
            splits = {k: int(v.shape[0]) for k, v in f["splits"].items()}
            count = int(f["images"].shape[0])
            if f["attributes"].shape != (count, len(names)):
                return None, "it is inconsistent (attribute rows do not match the images)"
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        return None, f"it is corrupt or truncated ({type(exc).__name__})"
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
    ), None


def estimated_size(index: SourceIndex, image_size: tuple[int, int]) -> int:
    """Bytes a cache of ``index`` at ``image_size`` takes on disk (images, attributes, splits, index)."""
    count = len(index)
    height, width = image_size
    return count * (3 * height * width + index.attributes.shape[1] + 8 + 64) + (1 << 20)


def prepare_cache(dataset: str, index: SourceIndex, path: str | Path, image_size: tuple[int, int],
                  options: dict | None = None, workers: int | None = None,
                  progress: Progress | None = None, skip_bad: bool = False) -> CacheInfo:
    """Return the cache at ``path``, building it first unless a matching one is there.

    A cache matches when its format version, source fingerprint, image size, options and
    exclusive groups equal those asked for. ``workers`` processes decode and resize in parallel
    (default: all cores).
    An image that cannot be read is an :class:`UnreadableImage` error naming it, unless
    ``skip_bad`` is set: then it is left out of every split and listed in the manifest's
    ``skipped``. A disk too small for the cache is refused before the build starts; a write that
    fails anyway (the disk filled up meanwhile) is a :class:`GenkitRuntimeError`, and no partial
    file is left either way.
    """
    path = Path(path)
    options = dict(options or {})
    info, why = inspect_cache(path)
    if (info is not None and info.fingerprint == index.fingerprint
            and info.image_size == tuple(image_size) and info.options == options
            and info.exclusive_groups == list(index.exclusive_groups)):
        return info
    if info is not None:
        why = ("the source files changed since it was built" if info.fingerprint != index.fingerprint
               else "it was built by an older genkit, without the dataset's exclusive attribute groups"
               if info.exclusive_groups != list(index.exclusive_groups) else "it was built with other settings")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenkitRuntimeError(f"cannot create the cache folder {path.parent}: {exc.strerror}; "
                                 "pass --cache-dir (or set GENKIT_CACHE) to a folder you can write") from None
    _remove_stale_partials(path)
    _check_disk_space(path, estimated_size(index, image_size) - (path.stat().st_size if path.is_file() else 0))
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        _build(dataset, index, partial, tuple(image_size), options, workers, progress, skip_bad)
        os.replace(partial, path)
    except OSError as exc:
        raise GenkitRuntimeError(_write_failure(path, exc, estimated_size(index, image_size))) from None
    finally:
        if partial.exists():
            partial.unlink()
    info = read_cache_info(path)
    if info is None:  # pragma: no cover - would mean h5py wrote a file it cannot read back
        raise GenkitRuntimeError(f"the cache just written to {path} cannot be read back")
    info.built = True
    info.rebuilt_because = why
    return info


def _check_disk_space(path: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if needed > free:
        raise GenkitRuntimeError(
            f"the cache {path.name} needs about {_mb(needed)}, but {path.parent} has {_mb(free)} free; free some "
            "space, or pass --cache-dir (or set GENKIT_CACHE) to a disk with room")


def _write_failure(path: Path, exc: OSError, needed: int) -> str:
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}.get(
        exc.errno, exc.strerror or str(exc).splitlines()[0])
    return (f"cannot write the cache {path}: {reason} (it needs about {_mb(needed)}); nothing was kept of it. "
            "Free some space, or pass --cache-dir (or set GENKIT_CACHE) to a disk with room")


def _mb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


class _GuardedFile(io.RawIOBase):
    """The file HDF5 writes the cache through: a write that fails is recorded, never reported to HDF5.

    HDF5 cannot recover from a failed write (see the module docstring). Here the first error,
    an ``OSError`` or an exception a signal handler raised (Ctrl-C), is kept in :attr:`error`;
    from then on writes go to memory instead of the disk (HDF5 is told they worked, and reads
    see them), so HDF5 stays consistent and closes cleanly. The builder checks :attr:`error`
    after every batch and after closing, raises it, and deletes the file. Only what HDF5 holds
    at that moment (its chunk and metadata caches) is ever kept in memory.
    """

    def __init__(self, path: Path):
        super().__init__()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pos = 0
        self._size = 0
        self._dropped: list[tuple[int, bytes]] = []  # (offset, data) written after the error, in order
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = len(view)
        n = 0
        if self.error is None:
            try:
                n = os.preadv(self._fd, [view], self._pos)
            except BaseException as exc:  # noqa: BLE001 - HDF5 must not see it; the builder raises it
                self.error = exc
                n = 0
        else:
            try:
                n = os.preadv(self._fd, [view], self._pos)
            except OSError:
                n = 0
        view[n:] = bytes(wanted - n)
        for offset, data in self._dropped:  # what HDF5 wrote after the error, as it expects to read it
            start, stop = max(offset, self._pos), min(offset + len(data), self._pos + wanted)
            if start < stop:
                view[start - self._pos:stop - self._pos] = data[start - offset:stop - offset]
        self._pos += wanted
        return wanted

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except BaseException as exc:  # noqa: BLE001 - an OSError, or KeyboardInterrupt from a signal
                self.error = exc
        if self.error is not None:
            self._dropped.append((self._pos, bytes(view)))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except BaseException as exc:  # noqa: BLE001
                self.error = exc
        self._size = size
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        self._dropped.clear()
        super().close()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


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
    """Give a pool worker its reader once, instead of pickling it with every span.

    Ctrl-C and a SIGTERM sent to the process group reach every worker too: the workers ignore
    both, so only the main process reports the interrupt (one line, no worker tracebacks or
    broken pipes) and shuts the pool down. A worker killed by a signal could die holding the
    pool's queue locks and hang that shutdown; one that ignores them finishes its span and exits.
    """
    global _worker_job
    _worker_job = job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _ready(_: int) -> bool:
    return True


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
    pool = None
    if workers > 1:  # forked before the HDF5 file exists: no worker inherits its state
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(job,))
        list(pool.map(_ready, range(workers)))  # starts every worker now (fork starts them all at once)
    try:
        sink = _GuardedFile(target)
        try:
            with h5py.File(sink, "w") as f:
                _write(f, sink, index, job, pool, count, size, chunk, bad, progress, skip_bad)
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
        finally:
            sink.close()
        sink.raise_error()
    finally:
        if pool is not None:  # the workers finish the span in hand and exit; queued spans are dropped
            pool.shutdown(wait=True, cancel_futures=True)


def _write(f: h5py.File, sink: _GuardedFile, index: SourceIndex, job: _ChunkReader, pool, count: int,
           size: tuple[int, int], chunk: int, bad: list, progress: Progress | None, skip_bad: bool) -> None:
    height, width = size
    images = f.create_dataset("images", shape=(count, 3, height, width), dtype=np.uint8,
                              chunks=(1, 3, height, width))
    done = 0
    if progress:
        progress(0, count)
    results = map(job, _spans(count, chunk)) if pool is None else pool.map(_run_span, _spans(count, chunk))
    for start, pixels, failed in results:
        images[start:start + len(pixels)] = pixels
        sink.raise_error()
        bad.extend(failed)
        if failed and not skip_bad:
            i, why = failed[0]
            raise UnreadableImage(index.key(i), why)
        done += len(pixels)
        if progress:
            progress(done, count)
    f.create_dataset("attributes", data=index.attributes)
    f.create_dataset("attribute_names", data=np.array(index.attribute_names, dtype=object),
                     dtype=h5py.string_dtype())
    bad_set = {i for i, _ in bad}
    group = f.create_group("splits")
    for name, idx in index.splits.items():
        if bad_set:
            idx = np.array([i for i in idx if i not in bad_set], dtype=np.int64)
        group.create_dataset(name, data=idx.astype(np.int64))

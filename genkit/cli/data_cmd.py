"""``genkit data info`` and ``genkit data prepare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.options import parse_options

app = typer.Typer(no_args_is_help=True, help="Inspect datasets and build their HDF5 caches.")


def _describe(data: str, root, image_size, cache_dir, data_opt) -> dict:
    from genkit.data.prepare import dataset_cache_path, open_source, resolve_root
    from genkit_datasets.cache import read_cache_info
    from genkit_datasets.preprocess import parse_image_size

    source, options = open_source(data, parse_options(data_opt, "--data-opt"))
    size = parse_image_size(image_size) if image_size else tuple(source.default_image_size)
    root_path = resolve_root(data, source, root)
    index = source.scan(root_path)
    path = dataset_cache_path(data, size, options, root_path, cache_dir)
    cached = read_cache_info(path)
    return {
        "name": data,
        "description": getattr(source, "description", ""),
        "options": options,
        "image_size": list(size),
        "count": len(index),
        "splits": {k: int(len(v)) for k, v in index.splits.items()},
        "attribute_names": list(index.attribute_names),
        "crop": index.crop,
        "cache_path": str(path),
        "cache_ready": bool(cached and cached.fingerprint == index.fingerprint),
    }


@app.command("info")
def info(
    data: str = typer.Option(..., "--data", "-d", help="Dataset name."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="S or HxW."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache directory."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Attribute names, counts per split, image size and cache location of a dataset."""
    described = _describe(data, root, image_size, cache_dir, data_opt)
    if as_json:
        console.out.print_json(json.dumps(described))
        return
    o = console.out
    o.print(f"[bold]{data}[/]: {described['description']}", highlight=False)
    o.print(f"images: {described['count']}  splits: " +
            ", ".join(f"{k} {v}" for k, v in described["splits"].items()), highlight=False)
    o.print(f"image size: {described['image_size'][0]}x{described['image_size'][1]}  ({described['crop']})",
            highlight=False)
    o.print(f"cache: {described['cache_path']} ({'ready' if described['cache_ready'] else 'not built yet'})",
            highlight=False)
    o.print(f"{len(described['attribute_names'])} attributes: " + ", ".join(described["attribute_names"]),
            highlight=False)


@app.command("prepare")
def prepare(
    data: str = typer.Option(..., "--data", "-d", help="Dataset name."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="S or HxW."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: all cores)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache directory."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable images out instead of stopping."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE."),
) -> None:
    """Decode and resize a dataset once into its HDF5 cache (reused while the source is unchanged)."""
    from genkit.data.prepare import prepare_dataset
    from genkit.errors import UsageError

    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers} must be a positive integer")
    progress, callback = console.cache_progress(f"preparing {data} cache")
    try:
        cache, _ = prepare_dataset(data, root=root, image_size=image_size, cache_dir=cache_dir, workers=workers,
                                   progress=callback, skip_bad=skip_bad, options=parse_options(data_opt, "--data-opt"))
    finally:
        progress.stop()
    verb = "built" if cache.built else "reused"
    if cache.rebuilt_because:
        console.err.print(f"the cache was rebuilt: {cache.rebuilt_because}", highlight=False, markup=False)
        verb = "rebuilt"
    splits = ", ".join(f"{k} {v}" for k, v in sorted(cache.split_sizes.items()))
    console.err.print(
        f"{verb} {cache.path}: {cache.count} images {cache.image_size[0]}x{cache.image_size[1]}, "
        f"{len(cache.attribute_names)} attributes, splits {splits}, {cache.size_bytes / 2**20:.1f} MiB", highlight=False)
    if cache.skipped:
        console.err.print(f"skipped {len(cache.skipped)} unreadable images: {', '.join(cache.skipped[:5])}"
                          + (" ..." if len(cache.skipped) > 5 else ""), highlight=False)
    console.out.print(str(cache.path), highlight=False)

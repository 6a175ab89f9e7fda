"""``genkit edit``: a real image with some attributes changed (original | reconstruction | edits)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from genkit.cli import console
from genkit.cli.sampling_flags import EDIT_DEPTH, EDIT_MODE, INVERT_OPT, SAMPLE_OPT

if TYPE_CHECKING:  # imported when a command runs, so that `genkit --help` stays quick
    from genkit.sampling.run import Run

#: the most rows (images) one figure holds
MAX_ROWS = 64
#: white padding between the figure's cells, in pixels (as the sample grids)
PADDING = 2
#: up to this many images are edited on one thread: torch's thread pool costs more than it saves on so
#: little work, and stalls when other processes hold the cores (as the serve page measured)
THREADED_ROWS = 16


def edit(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train`."),
    changes: list[str] = typer.Option(
        ..., "--set", "-s", help='Attributes to change, as in --attrs: NAME on, -NAME off; a value of an exclusive '
                                 'family replaces the old one, e.g. "color::blue,-outline" (repeatable: a column '
                                 'each).'),
    index: Optional[str] = typer.Option(None, "--index", "-i",
                                        help="Image N of --split, or images A-B (a row each), with their labels."),
    split: str = typer.Option("test", "--split", help="Split --index counts in."),
    image: Optional[Path] = typer.Option(None, "--image",
                                         help="An image file instead (any size; cropped and resized as the dataset "
                                              "reader does); its attributes are read by the attribute classifier."),
    from_attrs: Optional[str] = typer.Option(
        None, "--from", help='With --image: corrections to the classifier\'s reading, as in --set, e.g. '
                             '"shape::square,-large".'),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN/edits.png)."),
    classifier: Optional[str] = typer.Option(None, "--classifier",
                                             help="Attribute classifier that reads --image (default: the recipe's)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    sample_opt: Optional[list[str]] = SAMPLE_OPT,
    edit_mode: str = EDIT_MODE,
    edit_depth: Optional[str] = EDIT_DEPTH,
    invert_opt: Optional[list[str]] = INVERT_OPT,
) -> None:
    """Change attributes of real images and write original | reconstruction | edit side by side as a PNG.

    The image is encoded with its own attributes and drawn again with the changed ones (the
    posterior mean for a model with an encoder; the inverted sampler's noise otherwise, drawn
    with its sampling options, given as flags). With --edit-mode residual the edit is the image
    plus the difference the change makes to that drawing, so what the change does not touch stays
    as it was. See docs/editing.md.
    """
    from genkit.cli.sampling_flags import given_invert_options, given_options
    from genkit.errors import UsageError
    from genkit.store.files import check_output_file

    if (index is None) == (image is None):
        raise UsageError("give the image to edit: --index N (or A-B) of --split, or --image PATH")
    if from_attrs is not None and image is None:
        raise UsageError("--from corrects the attributes read from --image; dataset images (--index) bring their "
                         "own labels")
    rows = parse_index(index) if index is not None else None
    if out is not None:
        if out.suffix.lower() != ".png":
            raise UsageError(f"--out {out} must end in .png")
        check_output_file(out)
    import torch

    from genkit.sampling.editing import parse_change
    from genkit.sampling.run import load_run

    if rows is None or len(rows) <= THREADED_ROWS:
        torch.set_num_threads(1)  # a few images: one thread (see THREADED_ROWS)

    loaded = load_run(run, device=device)
    options = loaded.resolve_options(given_options(ctx.args, sample_opt, loaded.sampling_options,
                                                   loaded.config.model.name, "edit"))
    settings = {"edit_mode": edit_mode, "edit_depth": edit_depth,
                "invert_options": given_invert_options(invert_opt, loaded.sampling_options)}
    names, groups = loaded.attribute_names, loaded.exclusive_groups
    for spec in changes:  # every change checked before any image is read
        parse_change(spec, names, groups)
    editor = loaded.editor(options, **settings)  # a model that cannot edit, or a bad setting: said now
    if rows is not None:
        pixels, vectors = dataset_rows(loaded, split, rows, cache_dir)
    else:
        pixels, vectors = file_image(loaded, image, from_attrs, classifier, cache_dir)
    edits = loaded.edit(pixels, vectors, changes, **settings, **options)
    target = out if out is not None else loaded.directory / "edits.png"
    write_rows(edits.rows(), target)
    columns = " | ".join(["original", "reconstruction", *(spec or "(nothing)" for spec in edits.changes)])
    how = editor.mode + (f", depth {editor.depth:g}" if editor.depth < 1 else "")
    console.err.print(f"wrote {len(pixels)} row(s): {columns} to {target} ({how} edits)", highlight=False,
                      markup=False)
    console.out.print(str(target), highlight=False)


def parse_index(text: str) -> range:
    """``"17"`` or ``"0-15"`` (both ends included) to the rows asked for; a one-line error otherwise."""
    from genkit.errors import UsageError, shown

    match = re.fullmatch(r"\s*(\d{1,18})\s*(?:-\s*(\d{1,18})\s*)?", text)  # beyond any split, never a huge int
    if not match:
        raise UsageError(f"--index {shown(text)} is not N or A-B; for example --index 17 or --index 0-15")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise UsageError(f"--index {text.strip()} ends before it starts; write the smaller number first")
    if last - first + 1 > MAX_ROWS:
        raise UsageError(f"--index {text.strip()} asks for {last - first + 1} images; one figure holds at most "
                         f"{MAX_ROWS} rows")
    return range(first, last + 1)


def dataset_rows(run: Run, split: str, rows: range, cache_dir: Path | None):
    """The images at ``rows`` of ``split`` and their labels; a one-line error for rows outside the split."""
    from genkit.errors import UsageError
    from genkit.sampling.run import open_run_data
    from genkit_datasets.torch_dataset import CachedImageDataset

    info = open_run_data(run, cache_dir=cache_dir)
    dataset = CachedImageDataset(info.path, split)
    if rows.stop > len(dataset):
        asked = str(rows.start) if len(rows) == 1 else f"{rows.start}-{rows.stop - 1}"
        raise UsageError(f"--index {asked} is outside the {split} split, which has {len(dataset)} images "
                         f"(0-{len(dataset) - 1})")
    return dataset.read_uint8(list(rows))


def file_image(run: Run, path: Path, from_attrs: str | None, classifier_name: str | None, cache_dir: Path | None):
    """The image file brought to the run's size, and its attributes: the classifier's reading, corrected by --from."""
    import torch

    from genkit.errors import UsageError
    from genkit.evaluation.classifier import run_classifier
    from genkit.sampling.edit_images import read_attributes, read_image
    from genkit.sampling.editing import apply_change, names_on, parse_change

    names, groups = run.attribute_names, run.exclusive_groups
    correction = parse_change(from_attrs, names, groups, flag="--from") if from_attrs is not None else None
    pixels = read_image(path, tuple(run.config.data.image_size)).unsqueeze(0)
    try:
        classifier = run_classifier(run, classifier_name, cache_dir)
    except UsageError:
        if correction is None:
            raise
        vectors = torch.zeros(1, len(names))
        read = None
    else:
        vectors = read_attributes(classifier, pixels, names, groups)
        read = names_on(vectors[0], names)
        console.err.print(f"the attribute classifier reads: {', '.join(read) or '(none on)'}", highlight=False,
                          markup=False)
    if correction is not None:
        vectors = apply_change(vectors, correction, names, groups)
        if read is None:
            for group in groups:
                if not any(vectors[0, i] for i, n in enumerate(names) if n.startswith(f"{group}::")):
                    raise UsageError(f"--from names no value of {group!r}; without an attribute classifier it must "
                                     f"give the image's value of every family that holds one ({', '.join(groups)})")
        console.err.print(f"attributes used: {', '.join(names_on(vectors[0], names)) or '(none on)'}",
                          highlight=False, markup=False)
    return pixels, vectors


def write_rows(rows, path: Path) -> Path:
    """(R, C, 3, H, W) images in [0, 1] as one PNG, a row per image, white padding between cells, atomically."""
    import numpy as np
    import torch
    from PIL import Image

    from genkit.store.files import atomic_path

    count, columns, channels, height, width = rows.shape
    canvas = np.full((count * (height + PADDING) + PADDING, columns * (width + PADDING) + PADDING, channels), 255,
                     dtype=np.uint8)
    pixels = rows.clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    pixels = pixels.permute(0, 1, 3, 4, 2).numpy()
    for r in range(count):
        for c in range(columns):
            top, left = r * (height + PADDING) + PADDING, c * (width + PADDING) + PADDING
            canvas[top:top + height, left:left + width] = pixels[r, c]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="png")
    return path

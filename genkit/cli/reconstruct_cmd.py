"""``genkit reconstruct``: ground truth above reconstruction (the paper's Figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.sampling_flags import SAMPLE_OPT


def reconstruct(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train`."),
    n: int = typer.Option(8, "--n", help="How many images (the first N of the split)."),
    split: str = typer.Option("test", "--split", help="Split to take the images from."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw z ~ q(z|x,y)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN/reconstructions.png)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches live."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    sample_opt: Optional[list[str]] = SAMPLE_OPT,
) -> None:
    """Write real images (top row) above the run's reconstructions of them (bottom row) as a PNG.

    A model with a posterior encodes and decodes (one seeded draw of z); one that can invert its
    sampler finds each image's noise and samples it again (with its sampling options, given as
    flags); a model with neither has no reconstructions.
    """
    import torch

    from genkit.cli.sampling_flags import given_options
    from genkit.components.limits import check_seed
    from genkit.errors import UsageError
    from genkit.sampling.grids import FLOAT_GRID_BYTES_PER_VALUE, check_grid
    from genkit.sampling.reconstruction import can_reconstruct, reconstruct as reconstruct_images
    from genkit.sampling.run import load_run, open_run_data
    from genkit.store.images import save_grid
    from genkit_datasets.torch_dataset import CachedImageDataset

    if n < 1:
        raise UsageError(f"--n {n} must be a positive integer")
    check_seed(seed)
    target = out if out is not None else run / "reconstructions.png"
    if target.suffix.lower() != ".png":
        raise UsageError(f"--out {target} must end in .png")
    if out is not None:
        from genkit.store.files import check_output_file

        check_output_file(out)
    loaded = load_run(run, device=device)
    options = loaded.resolve_options(given_options(ctx.args, sample_opt, loaded.sampling_options,
                                                   loaded.config.model.name, "reconstruct"))
    if not can_reconstruct(loaded.model):
        raise UsageError(f"model {loaded.config.model.name!r} has neither a posterior (encode/decode) nor an inverse "
                         "of its sampler (invert), so it cannot reconstruct images; `genkit sample` draws new ones")
    # the real images and their reconstructions (float) made into a grid, as genkit sample --vary
    check_grid(2 * n, n, tuple(loaded.config.image_shape), asked=f"--n {n} ({2 * n} images)",
               bytes_per_value=FLOAT_GRID_BYTES_PER_VALUE, columns_flag=None)
    info = open_run_data(loaded, cache_dir=cache_dir)
    dataset = CachedImageDataset(info.path, split, limit=n)
    truth = dataset.images_uint8().float() / 255
    recon = reconstruct_images(loaded, truth, dataset.attributes, seed=seed, options=options)
    save_grid(torch.cat([truth, recon]), target, nrow=len(truth))
    console.err.print(f"wrote {len(truth)} {split} images above their reconstructions to {target}",
                      highlight=False, markup=False)
    console.out.print(str(target), highlight=False)

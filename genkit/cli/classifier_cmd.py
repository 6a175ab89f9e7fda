"""``genkit classifier train``: the attribute classifier that `genkit evaluate` scores samples with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genkit.cli import console
from genkit.cli.options import parse_options
from genkit.evaluation.classifier import DEFAULT_BATCH_SIZE, DEFAULT_CLASSIFIER, DEFAULT_EPOCHS, DEFAULT_LR

app = typer.Typer(no_args_is_help=True, help="The attribute classifier used by `genkit evaluate`.")


@app.command("train")
def train(
    data: str = typer.Option(..., "--data", "-d", help="Dataset name (see `genkit plugins`)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="S or HxW (default: the dataset's)."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE (repeatable)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live."),
    classifier: str = typer.Option(DEFAULT_CLASSIFIER, "--classifier", help="Classifier name."),
    classifier_opt: Optional[list[str]] = typer.Option(None, "--classifier-opt", help="Classifier option KEY=VALUE."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", help="Passes over the training split."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", help="Images per optimiser step."),
    lr: float = typer.Option(DEFAULT_LR, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and the shuffling."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Train the attribute classifier on the real training split and cache it beside the dataset's cache.

    It is retrained every time this runs; `genkit evaluate` and `genkit sweep` reuse it while the
    dataset's cache fingerprint stays the same.
    """
    from genkit.components.limits import check_seed
    from genkit.data.prepare import prepare_dataset
    from genkit.evaluation.classifier import classifier_files, resolve_classifier_options, train_classifier
    from genkit.runtime.distributed import resolve_device

    check_seed(seed)
    options = parse_options(classifier_opt, "--classifier-opt")
    resolve_classifier_options(classifier, options)  # unknown names and options fail before any work
    resolve_device(device)
    progress, callback = console.cache_progress(f"preparing {data} cache")
    try:
        info, _ = prepare_dataset(data, root=root, image_size=image_size, cache_dir=cache_dir,
                                  options=parse_options(data_opt, "--data-opt"), progress=callback)
    finally:
        progress.stop()
    from genkit.cli.evaluate_cmd import stage_progress

    bar, on_classifier, _ = stage_progress()
    try:
        _, record = train_classifier(info, classifier, options, epochs=epochs, batch_size=batch_size, lr=lr,
                                     seed=seed, device=device, progress=on_classifier)
    finally:
        bar.stop()
    weights, _ = classifier_files(info, classifier)
    worst = min(record.per_attribute_accuracy.items(), key=lambda kv: kv[1])
    console.err.print(f"classifier {classifier} on {info.dataset} {info.image_size[0]}x{info.image_size[1]}: "
                      f"mean accuracy {record.accuracy:.4f} on the {record.valid_split} split "
                      f"(lowest: {worst[0]} {worst[1]:.4f})", highlight=False, markup=False)
    console.out.print(str(weights), highlight=False)

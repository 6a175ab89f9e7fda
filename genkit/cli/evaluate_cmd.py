"""``genkit evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from genkit.cli import console
from genkit.cli.options import parse_options
from genkit.cli.sampling_flags import EDIT_DEPTH, EDIT_MODE, INVERT_OPT, SAMPLE_OPT
from genkit.components.recipe import DEFAULT_RECIPE
from genkit.evaluation.likelihood import DEFAULT_SAMPLES, DEFAULT_SIGMA

DEFAULT_CLASSIFIER = DEFAULT_RECIPE.classifier


def evaluate(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run folder written by `genkit train`."),
    split: str = typer.Option("test", "--split", help="Held-out split to evaluate on."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
    samples: int = typer.Option(DEFAULT_SAMPLES, "--samples", "-S", help="Importance samples per image for cll."),
    sigma: float = typer.Option(DEFAULT_SIGMA, "--sigma", help="σ of the Gaussian decoder likelihood, pixels in [0, 1]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the importance samples and generated images."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate on the first N images of the split."),
    train_classifier: bool = typer.Option(False, "--train-classifier",
                                          help="Train the attribute classifier now if it is missing or stale."),
    classifier: str = typer.Option(DEFAULT_CLASSIFIER, "--classifier", help="Attribute classifier name."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset (default: the run's; must match it)."),
    data_opt: Optional[list[str]] = typer.Option(None, "--data-opt", help="Dataset option KEY=VALUE over the run's."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the dataset's files (default: the run's)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    tensorboard: Optional[bool] = typer.Option(
        None, "--tensorboard/--no-tensorboard",
        help="Also write the metrics as TensorBoard events in RUN/evaluation_<split> (default: when the "
             "tensorboard package is installed; --tensorboard fails without it)."),
    sample_opt: Optional[list[str]] = SAMPLE_OPT,
    edits: bool = typer.Option(True, "--edits/--no-edits",
                               help="Edit real test images one attribute at a time and score the edits."),
    edit_mode: str = EDIT_MODE,
    edit_depth: Optional[str] = EDIT_DEPTH,
    invert_opt: Optional[list[str]] = INVERT_OPT,
) -> None:
    """Score a run on held-out data: attribute accuracy, diversity and fd of its samples, and, for a model
    with a posterior, MSE, KL, ELBO and importance-sampled CLL.

    Writes RUN/evaluation_<split>.json too, and TensorBoard events in RUN/evaluation_<split>/. Metrics a
    model cannot have (the likelihood bounds of a model without an encoder) are null. Likelihoods use
    a Gaussian decoder with fixed σ (see docs/evaluation.md), in nats per image; higher is better. The
    run's model adds its sampling options as flags, listed at the end of `genkit evaluate --run RUN --help`.
    """
    from genkit.cli.sampling_flags import given_invert_options, given_options
    from genkit.evaluation.metrics import evaluate_run
    from genkit.sampling.run import load_run
    from genkit.store.files import write_text_atomic
    from genkit.training.tensorboard import log_evaluation, wanted as tensorboard_wanted

    logging = tensorboard_wanted(tensorboard)  # --tensorboard without the package: refused before any work
    loaded = load_run(run, device=device)
    options = loaded.resolve_options(given_options(ctx.args, sample_opt, loaded.sampling_options,
                                                   loaded.config.model.name, "evaluate"))
    progress, on_classifier, on_eval = stage_progress()

    def say(text: str) -> None:
        progress.console.print(text, highlight=False, markup=False)

    try:
        result = evaluate_run(loaded, split=split, samples=samples, sigma=sigma, seed=seed, limit=limit, data=data,
                              data_options=parse_options(data_opt, "--data-opt"), root=root, cache_dir=cache_dir,
                              classifier_name=classifier, train_classifier=train_classifier, progress=on_eval,
                              classifier_progress=on_classifier, options=options, on_message=say, edits=edits,
                              edit_mode=edit_mode, edit_depth=edit_depth,
                              invert_options=given_invert_options(invert_opt, loaded.sampling_options))
    finally:
        progress.stop()
    target = loaded.directory / f"evaluation_{split}.json"
    write_text_atomic(target, json.dumps(result, indent=1))
    if logging:
        log_evaluation(loaded.directory, target.stem, result, warn=lambda text: console.err.print(text, markup=False))
    if as_json:
        console.out.print_json(json.dumps(result))
    else:
        console.out.print(metrics_table(result))
    console.err.print(f"wrote {target}", highlight=False, markup=False)


def stage_progress():
    """A transient progress bar fed by the classifier's training and the evaluation's stages."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    progress = console.LazyProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console.err, transient=True)
    tasks: dict[str, int] = {}

    def update(key: str, description: str, done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        if key not in tasks:
            tasks[key] = progress.add_task(description, total=total)
        progress.update(tasks[key], completed=done, total=total, description=description)

    def on_classifier(epoch: int, epochs: int, step: int, steps: int) -> None:
        update("classifier", f"training the attribute classifier, epoch {epoch}/{epochs}", step, steps)

    def on_eval(stage: str, done: int, total: int) -> None:
        update(stage, {"likelihood": "likelihood bounds", "samples": "attribute accuracy of samples"}.get(stage, stage),
               done, total)

    return progress, on_classifier, on_eval


def metrics_table(result: dict) -> Table:
    """The headline metrics as a rich table."""
    table = Table("metric", "value", title=f"{result['dataset']} {result['split']} ({result['images']} images): "
                                            f"{recipe_line(result.get('config'))}")
    number = lambda value, spec: "-" if value is None else format(value, spec)  # noqa: E731
    rows = [
        ("mse (per image, summed over pixels)", number(result["mse"], ".2f")),
        ("mse per pixel", number(result["mse_per_pixel"], ".5f")),
        ("kl (nats)", number(result["kl"], ".2f")),
        (f"elbo (nats, σ={result['sigma']})", number(result["elbo"], ".1f")),
        (f"cll (nats, S={result['samples'] or '-'})", number(result["cll"], ".1f")),
        ("the model's own log-likelihood (nats)", number(result.get("log_likelihood"), ".1f")),
        ("attribute accuracy of samples", f"{result['attribute_accuracy']:.4f}"),
        ("classifier accuracy on real images", f"{result['classifier_accuracy']:.4f}"),
        (f"weakest attribute ({result['weakest_attribute']})", f"{result['min_attribute_accuracy']:.4f}"),
        ("diversity (RMS distance)", f"{result['diversity']:.4f}"),
        ("data diversity (RMS distance)", number(result["data_diversity"], ".4f")),
        ("diversity ratio (samples / data)", number(result["diversity_ratio"], ".3f")),
        ("fd (classifier features, samples vs real)", number(result["fd"], ".3f")),
        (f"fd floor (real {result['fd_reference_split'] or '-'} vs real)", number(result["fd_floor"], ".3f")),
    ]
    rows += counterfactual_rows(result, number)
    for name, value in rows:
        table.add_row(name, value)
    return table


def counterfactual_rows(result: dict, number) -> list[tuple[str, str]]:
    """The edit and conformity rows (genkit.evaluation.edits, genkit.evaluation.conformity); "-" where a figure is null."""
    setup = result.get("edit_setup") or {}
    how = f"{setup['mode']}, depth {setup['depth']:g}" if setup.get("mode") else "-"
    return [
        ("edit mode", how),
        ("edit success (changed attribute read as asked)", number(result.get("edit_success"), ".4f")),
        ("edit preservation (other attributes kept)", number(result.get("edit_preservation"), ".4f")),
        ("edit clean (both, in the same edit)", number(result.get("edit_clean"), ".4f")),
        ("edit psnr (the edit that changes nothing, dB)", number(result.get("edit_psnr"), ".2f")),
        ("reconstruction psnr (the model's drawing, dB)", number(setup.get("reconstruction_psnr"), ".2f")),
        ("edit cycle psnr (edited and back, dB)", number(result.get("edit_cycle_psnr"), ".2f")),
        ("seen conformity (every attribute as asked)", number(result.get("seen_conformity"), ".4f")),
        ("held-out conformity", number(result.get("heldout_conformity"), ".4f")),
    ]


def recipe_line(config: dict | None) -> str:
    """``model cvae (prior=learned), loss beta-elbo (beta=0.75)``: the components and their options."""
    if not config:
        return "-"
    parts = []
    for kind in ("model", "conditioner", "loss"):
        spec = config.get(kind) or {}
        options = ", ".join(f"{k}={v}" for k, v in (spec.get("options") or {}).items())
        parts.append(f"{kind} {spec.get('name')}" + (f" ({options})" if options else ""))
    return ", ".join(parts)

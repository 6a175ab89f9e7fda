"""``genkit sweep``: one run per value of any component option (Table 1, Figures 3 and 4 for β)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from genkit.cli import console
from genkit.cli.component_flags import given_flags
from genkit.cli.options import command_options, component_options, parse_options, setting_option, settings_given
from genkit.cli.sampling_flags import SAMPLE_OPT
from genkit.config import TrainSpec
from genkit.evaluation.likelihood import DEFAULT_SAMPLES, DEFAULT_SIGMA

_D = TrainSpec()
#: ``sweep``'s own options, and the shared ones it words for a sweep
OWN: dict[str, tuple[Any, Any]] = {
    "out": (Path, typer.Option(..., "--out", "-o", help="Sweep folder: one run folder per value, table, figures.")),
    "vary": (Optional[list[str]], typer.Option(
        None, "--vary", help="KIND.OPTION=V1,V2,... with KIND data, conditioner, model, loss or train: one run per "
                             "value (repeatable: a grid); KIND sample: one evaluation per value of a sampling option "
                             "of the model, without retraining. A component flag given several comma-separated "
                             "values is varied the same way.")),
    "epochs": setting_option("epochs", f"Passes over the training split, every run (default {_D.epochs}, or the "
                                       "model's own, raised by --min-steps; given without --min-steps, exactly these)."),
    "seed": setting_option("seed", "Seed of every run (the same for all of them)."),
    "cache_dir": (Optional[Path], typer.Option(None, "--cache-dir", help="Where HDF5 caches and classifiers live.")),
    "split": (str, typer.Option("test", "--split", help="Held-out split every run is evaluated on.")),
    "samples": (int, typer.Option(DEFAULT_SAMPLES, "--samples", "-S", help="Importance samples per image for cll.")),
    "sigma": (float, typer.Option(DEFAULT_SIGMA, "--sigma", help="σ of the Gaussian decoder likelihood.")),
    "run": (Optional[Path], typer.Option(None, "--run", "-r", help="Evaluate this trained run folder at every value "
                                                                    "of --vary sample.OPTION instead of training runs.")),
    "sample_opt": (Optional[list[str]], SAMPLE_OPT),
}


@command_options(
    "out vary data model conditioner loss SETTINGS image_size limit root cache_dir tensorboard split samples sigma run "
    "sample_opt model_opt loss_opt cond_opt data_opt", **OWN)
def sweep(ctx: typer.Context, **given: Any) -> None:
    """Train one run per value (or grid point) of the varied options with the same seed and data, evaluate
    each, and write table.csv, table.md, figure3.png, figure4.png and mse_kl_vs_<option>.png into --out.
    Finished runs are reused. The paper's β sweep: --beta 0.25,0.5,0.75,0.9 with the beta-elbo loss."""
    from genkit.cli.evaluate_cmd import stage_progress
    from genkit.evaluation.likelihood import check_settings
    from genkit.store.files import check_output_dir
    from genkit.sweep.plan import plan_sweep
    from genkit.sweep.run import prepare_sweep, run_sweep
    from genkit.sweep.vary import parse_vary, varied_from_flags
    from genkit.training.tensorboard import wanted as tensorboard_wanted

    out, data, model, conditioner, tensorboard, cache_dir, split, samples, sigma = (given[k] for k in (
        "out", "data", "model", "conditioner", "tensorboard", "cache_dir", "split", "samples", "sigma"))
    check_output_dir(out)  # a file, under a file, read-only: refused before any training
    from genkit.training.planning import default_loss

    loss = given["loss"] or default_loss(model)
    components = {"data": data, "conditioner": conditioner, "model": model, "loss": loss}
    chosen = {"datasets": data, "conditioners": conditioner, "models": model, "losses": loss}
    flag_varied, fixed = varied_from_flags(given_flags(ctx, chosen, as_text=True), components)
    varied = flag_varied + parse_vary(given["vary"] or [], components)
    options = component_options(given["model_opt"], given["loss_opt"], given["cond_opt"], given["data_opt"], fixed)
    check_settings(samples, sigma)
    tensorboard_wanted(tensorboard)  # --tensorboard without the package: refused before any training
    settings = {**settings_given(given), "log_every": max(1, given["log_every"])}
    notes: list[str] = []
    plan = plan_sweep(
        varied, out, run=given["run"], sample_options=parse_options(given["sample_opt"], "--sample-opt"), model=model,
        data=data, conditioner=conditioner, loss=loss, **options, root=given["root"], image_size=given["image_size"],
        limit=given["limit"], say=notes.append, **settings)
    for note in dict.fromkeys(notes):  # once every run is planned; a note shared by the runs, once
        console.note(note)
    progress, on_cache = console.cache_progress(f"preparing {data} cache")
    bar, on_classifier, _ = stage_progress()
    try:
        record = prepare_sweep(plan, split=split, cache_dir=cache_dir, data_progress=on_cache,
                               classifier_progress=on_classifier)
    finally:
        progress.stop()
        bar.stop()
    console.err.print(f"attribute classifier {record.name}: accuracy {record.accuracy:.4f} on real "
                      f"{record.valid_split} images", highlight=False, markup=False)
    with console.TrainingDisplay() as display:
        results = run_sweep(plan, observer=display, cache_dir=cache_dir, split=split, samples=samples, sigma=sigma,
                            tensorboard=tensorboard)
    console.out.print((out / "table.md").read_text(), highlight=False, markup=False)
    figures = ", ".join(sorted(p.name for p in out.glob("*.png")))
    console.err.print(f"[green]done:[/] {len(results)} evaluations; table.md, table.csv, sweep.json and {figures} "
                      f"in {out}", highlight=False)

"""Running a planned sweep: the data and classifier first, then every point trained (or reused) and
evaluated, then the table, figures and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genkit.data.prepare import prepare_dataset
from genkit.evaluation.classifier import get_classifier
from genkit.evaluation.likelihood import DEFAULT_SAMPLES, DEFAULT_SIGMA
from genkit.evaluation.metrics import evaluate_run
from genkit.sampling.run import Run, load_run
from genkit.store.files import write_text_atomic
from genkit.store.run_folder import METRICS_FILE, read_jsonl
from genkit.sweep.plan import SweepPlan, columns
from genkit.sweep.report import Evaluated, write_outputs
from genkit.training.loop import notify
from genkit.training.resuming import resume
from genkit.training.trainer import train
from genkit_datasets.torch_dataset import CachedImageDataset


def prepare_sweep(plan: SweepPlan, split: str = "test", cache_dir: str | Path | None = None, data_progress=None,
                  classifier_progress=None):
    """Before any training: build the data cache, check the evaluation split, train the classifier if needed.

    Returns the classifier's record. A missing or empty ``split`` is a :class:`UsageError` here,
    not after hours of training.
    """
    config = plan.configs[0]
    info, _ = prepare_dataset(config.data.name, root=config.data.root, image_size=config.data.image_size,
                              cache_dir=cache_dir, options=config.data.options, saved=True,
                              progress=data_progress)
    CachedImageDataset(info.path, split)  # raises for a split that is missing or empty
    return get_classifier(info, train_if_needed=True, device=config.train.device, progress=classifier_progress)[1]


def run_sweep(plan: SweepPlan, observer=None, cache_dir: str | Path | None = None, split: str = "test",
              samples: int = DEFAULT_SAMPLES, sigma: float = DEFAULT_SIGMA, eval_seed: int = 0,
              classifier_progress=None, tensorboard: bool | None = None) -> list[dict[str, Any]]:
    """Train (or reuse) and evaluate every run at every sample point, then write the table, figures and
    plot; returns the rows.

    ``tensorboard`` is :func:`genkit.train`'s: each run folder is a TensorBoard run with its settings
    as hparams, so ``tensorboard --logdir OUT`` overlays the points; each evaluation is a sub-run.
    """
    from genkit.training.tensorboard import log_evaluation, wanted as tensorboard_wanted

    logging = tensorboard_wanted(tensorboard)
    plan.out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    for i, (config, state) in enumerate(zip(plan.configs, plan.states)):
        directory, label = plan.folder(i), plan.label(i)
        if state == "done":
            notify(observer, "on_message", f"{label}: reusing the finished run in {directory}")
            runs.append(load_run(directory, device=config.train.device))
        elif state == "resume":
            notify(observer, "on_message", f"{label}: resuming the unfinished run in {directory}")
            resumed = resume(directory, observer=observer, cache_dir=cache_dir, tensorboard=logging)
            runs.append(resumed if resumed is not None else load_run(directory, device=config.train.device))
        else:
            notify(observer, "on_message", f"{label}: training into {directory}")
            runs.append(train(config, directory, observer=observer, cache_dir=cache_dir, tensorboard=logging))
    entries: list[Evaluated] = []
    for i, j in plan.evaluations():
        run, label, options = runs[i], plan.evaluation_label(i, j), plan.sample_options[j]
        notify(observer, "on_message", f"{label}: evaluating on {split}")
        result = evaluate_run(run, split=split, samples=samples, sigma=sigma, seed=eval_seed, cache_dir=cache_dir,
                              train_classifier=True, classifier_progress=classifier_progress, options=options,
                              on_message=lambda text, label=label: notify(observer, "on_message", f"{label}: {text}"))
        path = plan.evaluation_path(i, j, split)
        write_text_atomic(path, json.dumps(result, indent=1))
        if logging:
            log_evaluation(run.directory, path.stem, result, warn=lambda text: notify(observer, "on_message", text))
        final = (read_jsonl(run.directory / METRICS_FILE) or [{}])[-1]
        terms = {k: v for k, v in final.items() if k.startswith("val_")}
        point = {**plan.points[i], **plan.sample_points[j]}
        varied = dict(zip(columns(plan.varied), (point[v.key] for v in plan.varied)))
        entries.append(Evaluated(label, plan.label(i), run, options, {**varied, **result, **terms}))
    write_outputs(plan.out, entries, columns(plan.varied), split=split, cache_dir=cache_dir)
    return [entry.result for entry in entries]

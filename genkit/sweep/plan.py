"""Sweeps: one run per value (or grid point) of any component's options, each evaluated.

``genkit sweep --vary loss.beta=0.25,0.5,0.75,0.9`` is the paper's §5.3 β sweep;
``--vary model.prior=standard,learned`` compares priors; several ``--vary`` make a grid. A
component flag given comma-separated values (``--beta 0.25,0.5``) is the same as its ``--vary``.
``--vary sample.OPTION=...`` varies one of the model's sampling options (a flow's guidance): it
trains nothing more, each trained run is evaluated at every value (and ``run=`` evaluates an
existing run folder, training nothing at all).

``out/<option>-<value>[_<option>-<value>...]/`` holds each run folder (``out/run`` when only
sampling options vary) with its ``evaluation_<split>.json`` (``evaluation_<split>_<option>-<value>.json``
per sampling point); ``out/`` gets the table, the figures and the plot
(:mod:`genkit.sweep.report`). A finished run folder with the same settings is reused, so an
interrupted sweep picks up where it stopped (an unfinished one resumes from its checkpoint); a
folder holding a run with other settings is refused rather than overwritten.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genkit.components.build import model_outline
from genkit.config import RunConfig, outcome_settings
from genkit.data.holdout import HOLD_OUT_KEY, hold_out_argument
from genkit.errors import UsageError, shown
from genkit.options import SAMPLING
from genkit.sampling.capabilities import resolve_sampling_options, sampling_options
from genkit.store.run_folder import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, evaluation_file, read_jsonl
from genkit.sweep.vary import SAMPLE, SINGLE_RUN, VARY_KINDS, Varied, typed_values
from genkit.training.planning import plan_run


def point_label(point: dict[str, Any], varied: list[Varied]) -> str:
    """``beta=0.25`` or ``beta=0.25, prior=learned``: what tells one run of the sweep from the others."""
    return ", ".join(f"{column}={v.show(point[v.key])}" for v, column in zip(varied, columns(varied)))


def columns(varied: list[Varied]) -> list[str]:
    """A column name per varied option: the bare option, or ``kind.option`` where two kinds share it."""
    options = [v.option for v in varied]
    return [v.option if options.count(v.option) == 1 else v.key for v in varied]


def run_folder(out: str | Path, point: dict[str, Any], varied: list[Varied]) -> Path:
    """``out/beta-0.25`` or ``out/beta-0.25_prior-learned`` (``out/run`` when nothing is varied)."""
    return Path(out) / (point_name(point, varied) or SINGLE_RUN)


def point_name(point: dict[str, Any], varied: list[Varied]) -> str:
    """``beta-0.25_prior-learned``: a point as a file-name part."""
    parts = [f"{column}-{v.show(point[v.key])}" for v, column in zip(varied, columns(varied))]
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


def check_folders(out: Path, points: list[dict[str, Any]], varied: list[Varied]) -> None:
    """Refuse a sweep two of whose runs would share a folder (values alike once made a folder name)."""
    seen: dict[Path, str] = {}
    for point in points:
        folder, label = run_folder(out, point, varied), point_label(point, varied)
        if folder in seen:
            raise UsageError(f"the sweep's runs [{shown(seen[folder], quote=False)}] and [{shown(label, quote=False)}] "
                             f"would share the folder {shown(folder.name, quote=False)} in {shown(str(out), quote=False)}: their values differ only in "
                             "characters a folder name cannot hold; give values that differ in letters or digits")
        seen[folder] = label


@dataclass
class SweepPlan:
    out: Path
    varied: list[Varied]
    #: per run: {"loss.beta": 0.25, ...} (the trained options only)
    points: list[dict[str, Any]]
    configs: list[RunConfig]
    #: per run: "new" (train it), "done" (reuse it) or "resume" (continue from its checkpoint)
    states: list[str]
    #: per evaluation of each run: {"sample.guidance": 2.0} ([{}] when no sampling option varies)
    sample_points: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    #: the sampling options each sample point evaluates with (the model's defaults filled in)
    sample_options: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    #: an existing run folder evaluated instead of training (``genkit sweep --run``)
    existing: Path | None = None

    @property
    def trained(self) -> list[Varied]:
        return [v for v in self.varied if v.kind != SAMPLE]

    @property
    def sampled(self) -> list[Varied]:
        return [v for v in self.varied if v.kind == SAMPLE]

    def folder(self, index: int) -> Path:
        return self.existing if self.existing is not None else run_folder(self.out, self.points[index], self.trained)

    def label(self, index: int) -> str:
        return point_label(self.points[index], self.trained) or (self.existing.name if self.existing else SINGLE_RUN)

    def evaluations(self) -> list[tuple[int, int]]:
        """``(run, sample point)`` for every evaluation, runs outermost."""
        return [(i, j) for i in range(len(self.points)) for j in range(len(self.sample_points))]

    def evaluation_label(self, index: int, sample: int) -> str:
        point = {**self.points[index], **self.sample_points[sample]}
        return point_label(point, [v for v in self.varied if v.key in point]) or self.label(index)

    def evaluation_path(self, index: int, sample: int, split: str) -> Path:
        name = point_name(self.sample_points[sample], self.sampled)
        path = evaluation_file(self.folder(index), split)
        return path.with_name(f"{path.stem}_{name}{path.suffix}") if name else path


def plan_sweep(varied: list[Varied], out: str | Path, run: str | Path | None = None,
               sample_options: dict[str, Any] | None = None, **plan_kwargs: Any) -> SweepPlan:
    """Validate every run of the sweep and the output folder; nothing is written yet.

    ``plan_kwargs`` are :func:`genkit.plan_run`'s arguments; each run gets its grid point's
    values over them. ``run`` evaluates that existing run folder instead (only sampling options
    may vary then); ``sample_options`` are sampling options every evaluation uses.
    """
    if not varied:
        raise UsageError("nothing to vary; give --vary KIND.OPTION=V1,V2 (KIND: data, conditioner, model, loss, "
                         "train or sample; one value makes a sweep of one run) or a component flag with several "
                         "comma-separated values")
    keys = [v.key for v in varied]
    for key in keys:
        if keys.count(key) > 1:
            raise UsageError(f"{key} is varied twice; give all its values once (in one --vary, or with its flag)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the sweep")
    trained = [v for v in varied if v.kind != SAMPLE]
    if run is not None:
        return _plan_existing(Path(run), varied, trained, out, sample_options)
    points = [dict(zip([v.key for v in trained], combo)) for combo in itertools.product(*(v.values for v in trained))]
    check_folders(out, points, trained)
    configs, states = [], []
    for point in points:
        kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in plan_kwargs.items()}
        for key, value in point.items():
            kind, option = key.split(".", 1)
            if key == HOLD_OUT_KEY:
                kwargs["hold_out"] = hold_out_argument(value)
            elif kind == "train":
                kwargs[option] = value
            else:
                target = VARY_KINDS[kind][1]
                kwargs[target] = {**(kwargs.get(target) or {}), option: value}
        config = plan_run(**kwargs)
        configs.append(config)
        states.append(_existing_run_state(run_folder(out, point, trained), config))
    varied, sample_points, resolved = _sample_points(varied, configs[0], sample_options)
    return SweepPlan(out, varied, points, configs, states, sample_points, resolved)


def _plan_existing(run: Path, varied: list[Varied], trained: list[Varied], out: Path,
                   sample_options: dict[str, Any] | None) -> SweepPlan:
    """A sweep over the sampling options of one run that exists already."""
    if trained:
        raise UsageError(f"{trained[0].given_as} changes training, but --run evaluates a trained run; vary only "
                         "sample.OPTION with --run, or leave out --run to train a run per value")
    if not run.is_dir():
        raise UsageError(f"run folder {run} does not exist; pass the folder `genkit train` wrote")
    config = RunConfig.load(run / CONFIG_FILE)
    varied, sample_points, resolved = _sample_points(varied, config, sample_options)
    return SweepPlan(out, varied, [{}], [config], ["done"], sample_points, resolved, existing=run)


def _sample_points(varied: list[Varied], config: RunConfig, base: dict[str, Any] | None
                   ) -> tuple[list[Varied], list[dict[str, Any]], list[dict[str, Any]]]:
    """The sampling options varied, typed and checked against the model's own declaration (built on the
    meta device); every point's full options checked by the model too."""
    model = model_outline(config)
    declared = sampling_options(model)
    typed: list[Varied] = []
    for v in varied:
        if v.kind != SAMPLE:
            typed.append(v)
            continue
        option = declared.get(v.option)
        if option is None:
            own = ", ".join(declared) or "none"
            raise UsageError(f"{v.given_as}: model {config.model.name!r} has no sampling option {v.option!r}; its "
                             f"sampling options are: {own}")
        typed.append(Varied(v.kind, v.option, typed_values(list(v.values), option, v.given_as, SAMPLING), v.given_as))
    sampled = [v for v in typed if v.kind == SAMPLE]
    points = [dict(zip([v.key for v in sampled], combo)) for combo in itertools.product(*(v.values for v in sampled))]
    resolved = [resolve_sampling_options(model, {**(base or {}), **{k.split(".", 1)[1]: x for k, x in p.items()}},
                                         config.model.name) for p in points]
    return typed, points, resolved


def _comparable(config: RunConfig) -> dict[str, Any]:
    """The settings that make two runs the same experiment, flattened and JSON-normalised: every training
    setting that changes what a run computes (``TrainSpec``'s metadata), not where or how it ran."""
    data = config.data
    flat = {"data": data.name, "image_size": list(data.image_size), "limit": data.limit,
            "conditioner": config.conditioner.name, "model": config.model.name, "loss": config.loss.name,
            **{name: getattr(config.train, name) for name in outcome_settings()}, "hold_out": list(data.hold_out)}
    for prefix, options in (("data", data.options), ("conditioner", config.conditioner.options),
                            ("model", config.model.options), ("loss", config.loss.options)):
        flat.update({f"{prefix}.{k}": v for k, v in options.items()})
    return json.loads(json.dumps(flat))


def _existing_run_state(directory: Path, config: RunConfig) -> str:
    """"new", "done" or "resume" for ``directory``; a UsageError when it holds something else."""
    if not (directory / CONFIG_FILE).exists():
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"{directory} is not empty but holds no run; remove it or choose another --out")
        return "new"
    old = RunConfig.load(directory / CONFIG_FILE)
    if old.data.name != config.data.name or list(old.data.attribute_names) != list(config.data.attribute_names):
        raise UsageError(f"{directory} holds a run for {old.data.name} ({len(old.data.attribute_names)} attributes), "
                         f"not the {config.data.name} asked for; choose another --out or remove it")
    mine, theirs = _comparable(config), _comparable(old)
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise UsageError(f"{directory} holds a run with {key}={json.dumps(theirs.get(key))}, not the "
                             f"{json.dumps(mine.get(key))} asked for; choose another --out or remove it")
    epochs_done = len(read_jsonl(directory / METRICS_FILE))
    finished = (directory / WEIGHTS_FILE).exists() and epochs_done >= config.train.epochs
    return "done" if finished else "resume"



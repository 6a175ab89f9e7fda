"""Editing on ``shapes``: the edit metrics under each way of finding the code and each edit mode and depth,
the held-out table, the figure, and how long ``genkit edit`` takes from a cold process.

    python benchmarks/editing.py codes RUN [--edit-mode redraw]  # edit metrics: μ carried / μ kept / z ~ q
    python benchmarks/editing.py modes RUN [--depths 1,0.5,0.3] [--invert-opt guidance=1]  # per mode and depth
    python benchmarks/editing.py heldout LABEL=RUN ...           # seen vs held-out conformity, per run
    python benchmarks/editing.py figure --out docs/images/edits.png [--edit-mode redraw] RUN
    python benchmarks/editing.py startup RUN [--repeats 7]       # genkit edit against import torch and --help

``modes`` evaluates the edit metrics exactly as ``genkit evaluate`` does (the same 256 test images
and seed) once per edit mode (``--modes``, default redraw and residual) and depth (``--depths``,
default 1; below 1 for a model with ``partial_invert``), with ``--invert-opt`` for the inversion,
and prints one table row each, with its wall time. Every setting is checked before the first row.

``codes`` evaluates the edit metrics of :mod:`genkit.evaluation.edits` on the test split three ways:
the posterior mean carried through the conditional prior (genkit's choice), the posterior mean
kept as it is for the new attributes, and one draw z ~ q(z|x, y) (seeded) carried through the
prior; it also reports the PSNR of the mean squared error (the unit of the ≈ 22.6 dB quoted for a
sampled z). ``heldout`` prints the table of docs/editing.md from each RUN/evaluation_test.json.
``figure`` writes five test images, each with its reconstruction and four single-attribute edits.
``startup`` times whole processes, interleaved, `--repeats` times each (median wall seconds, and
the median user+system CPU seconds, which a loaded machine inflates less).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import genkit
import genkit.sampling.editing as editing
from genkit.evaluation.classifier import get_classifier
from genkit.evaluation.edits import edit_metrics
from genkit.sampling.run import open_run_data
from genkit_datasets.torch_dataset import CachedImageDataset

FIGURE_ROWS = (0, 1, 2, 3, 4)
FIGURE_CHANGES = ("color::blue", "shape::triangle", "large", "outline")


def codes(run_dir: Path, edit_mode: str = editing.DEFAULT_EDIT_MODE) -> None:
    run = genkit.load_run(run_dir, device="cpu")
    info = open_run_data(run)
    dataset = CachedImageDataset(info.path, "test", in_memory=True)
    classifier, record, _ = get_classifier(info, device=run.device)
    carried = editing.carry_through_prior
    encode = editing.Editor.encode

    def sampled_encode(self, images, vectors):
        model = self.model
        mu, logvar = model.encode(*self._inputs(images, vectors))
        generator = torch.Generator().manual_seed(0)
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator).to(mu.device)

    variants = {"posterior mean, carried through the prior": (carried, encode),
                "posterior mean, kept": (lambda model, z, before, after: z, encode),
                "z ~ q(z|x,y), carried through the prior": (carried, sampled_encode)}
    print(f"classifier accuracy on real test images: {_classifier_accuracy(classifier, dataset, run):.4f}")
    print("| code | edit_success | edit_preservation | edit_psnr | psnr of mean mse | edit_cycle_psnr |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (carry, encoder) in variants.items():
        editing.carry_through_prior, editing.Editor.encode = carry, encoder
        try:
            m = edit_metrics(run, dataset, classifier, seed=4, edit_mode=edit_mode)
        finally:
            editing.carry_through_prior, editing.Editor.encode = carried, encode
        print(f"| {label} | {m['edit_success']:.4f} | {m['edit_preservation']:.4f} | {m['edit_psnr']:.2f} | "
              f"{m['edit_setup']['reconstruction_psnr_of_mean_mse']:.2f} | {m['edit_cycle_psnr']:.2f} |")


def modes(run_dir: Path, edit_modes: list[str], depths: list[str], invert_pairs: list[str], images: int) -> None:
    from genkit.cli.sampling_flags import given_invert_options
    from genkit.components.limits import derived_seed

    run = genkit.load_run(run_dir, device="cpu")
    inverting = given_invert_options(invert_pairs, run.sampling_options)
    settings = [{"edit_mode": mode, "edit_depth": depth, "invert_options": inverting}
                for depth in depths for mode in edit_modes]
    for setting in settings:  # every setting refused before any work
        run.editor(**setting)
    info = open_run_data(run)
    dataset = CachedImageDataset(info.path, "test", in_memory=True)
    classifier, _, _ = get_classifier(info, device=run.device)
    shown = ", ".join(f"{k}={v}" for k, v in inverting.items()) or "-"
    print(f"run {run_dir} ({run.config.model.name}); classifier accuracy on real test images: "
          f"{_classifier_accuracy(classifier, dataset, run):.4f}")
    print("| mode | depth | inversion options | edit_success | edit_preservation | edit_clean | edit_psnr | "
          "reconstruction psnr | edit_cycle_psnr | seconds |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for setting in settings:
        started = time.perf_counter()
        m = edit_metrics(run, dataset, classifier, seed=derived_seed(0, 4), images=images, **setting)  # evaluate's
        setup = m["edit_setup"]
        print(f"| {setup['mode']} | {setup['depth']:g} | {shown} | {m['edit_success']:.4f} | "
              f"{m['edit_preservation']:.4f} | {m['edit_clean']:.4f} | {m['edit_psnr']:.2f} | "
              f"{setup['reconstruction_psnr']:.2f} | "
              f"{m['edit_cycle_psnr']:.2f} | {time.perf_counter() - started:.0f} |", flush=True)


def _classifier_accuracy(classifier, dataset, run) -> float:
    from genkit.evaluation.classifier import attribute_accuracy, predict

    return float(attribute_accuracy(predict(classifier, dataset.images_uint8(), run.device), dataset.attributes).mean())


def heldout(pairs: list[tuple[str, Path]]) -> None:
    print("| held out | training images left out | seen conformity | held-out conformity | ratio | "
          "classifier on real (seen / held out) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, run_dir in pairs:
        m = json.loads((run_dir / "evaluation_test.json").read_text())
        details = m["conformity"]
        seen, held = m["seen_conformity"], m["heldout_conformity"]
        ratio = f"{held / seen:.2f}" if held is not None and seen else "-"
        left_out = _left_out(run_dir)
        real = f"{details['classifier_seen_conformity']:.3f} / " + (
            f"{details['classifier_heldout_conformity']:.3f}" if details["classifier_heldout_conformity"] is not None
            else "-")
        print(f"| {label} | {left_out} | {seen:.4f} | {'-' if held is None else f'{held:.4f}'} | {ratio} | {real} |")


def _left_out(run_dir: Path) -> int:
    from genkit.data.holdout import held_out_rows

    run = genkit.load_run(run_dir, device="cpu")
    info = open_run_data(run)
    train = CachedImageDataset(info.path, "train", limit=run.config.data.limit)
    return int(held_out_rows(train.attributes.numpy(), run.attribute_names, run.config.data.hold_out).sum())


def figure(run_dir: Path, out: Path, edit_mode: str = editing.DEFAULT_EDIT_MODE) -> None:
    from genkit.cli.edit_cmd import write_rows

    run = genkit.load_run(run_dir, device="cpu")
    dataset = CachedImageDataset(open_run_data(run).path, "test")
    images, labels = dataset.read_uint8(list(FIGURE_ROWS))
    write_rows(run.edit(images, labels, set=list(FIGURE_CHANGES), edit_mode=edit_mode).rows(), out)
    print(f"wrote {out}: rows = test images {FIGURE_ROWS}; columns = original | reconstruction | "
          + " | ".join(FIGURE_CHANGES) + f" ({edit_mode} edits)")


def startup(run_dir: Path, repeats: int) -> None:
    out = Path("/tmp/genkit-edit-startup.png")
    cases = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "genkit --help": [sys.executable, "-m", "genkit", "--help"],
        "genkit edit --index 17": [sys.executable, "-m", "genkit", "edit", "--run", str(run_dir), "--index", "17",
                                   "--set", "color::blue", "--out", str(out)],
    }
    photo = Path("/tmp/genkit-edit-startup-input.png")
    if not photo.exists():
        from PIL import Image

        Image.effect_noise((200, 150), 40).convert("RGB").save(photo)
    cases["genkit edit --image"] = [sys.executable, "-m", "genkit", "edit", "--run", str(run_dir), "--image",
                                    str(photo), "--set", "color::blue", "--out", str(out)]
    env = {**os.environ}
    for command in cases.values():  # warm the page cache and the byte-code
        subprocess.run(command, env=env, capture_output=True, check=True)
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, command in cases.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, env=env, capture_output=True, check=True)
            wall[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print(f"load average before: {os.getloadavg()[0]:.1f}; {repeats} interleaved runs each")
    print("| command | median wall s | median CPU s |")
    print("|---|---:|---:|")
    for name in cases:
        print(f"| `{name}` | {median(wall[name]):.2f} | {median(cpu[name]):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    by_code = sub.add_parser("codes")
    by_code.add_argument("run", type=Path)
    by_code.add_argument("--edit-mode", default=editing.DEFAULT_EDIT_MODE, choices=editing.EDIT_MODES)
    by_mode = sub.add_parser("modes")
    by_mode.add_argument("run", type=Path)
    by_mode.add_argument("--modes", default="redraw,residual", help="edit modes, comma-separated")
    by_mode.add_argument("--depths", default="1", help="edit depths in (0, 1], comma-separated")
    by_mode.add_argument("--invert-opt", action="append", default=[], metavar="KEY=VALUE",
                         help="a sampling option of the inversion (repeatable)")
    by_mode.add_argument("--images", type=int, default=256, help="test images edited (genkit evaluate's 256)")
    sub.add_parser("heldout").add_argument("pairs", nargs="+")
    fig = sub.add_parser("figure")
    fig.add_argument("run", type=Path)
    fig.add_argument("--out", type=Path, required=True)
    fig.add_argument("--edit-mode", default=editing.DEFAULT_EDIT_MODE, choices=editing.EDIT_MODES)
    start = sub.add_parser("startup")
    start.add_argument("run", type=Path)
    start.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.command == "codes":
        codes(args.run, args.edit_mode)
    elif args.command == "modes":
        try:
            modes(args.run, args.modes.split(","), args.depths.split(","), args.invert_opt, args.images)
        except genkit.UsageError as exc:
            parser.exit(2, f"error: {exc}\n")
    elif args.command == "heldout":
        heldout([(label, Path(path)) for label, _, path in (p.rpartition("=") for p in args.pairs)])
    elif args.command == "figure":
        figure(args.run, args.out, args.edit_mode)
    else:
        startup(args.run, args.repeats)


if __name__ == "__main__":
    main()

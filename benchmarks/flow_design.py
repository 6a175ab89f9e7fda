"""Choosing the ``flow`` model's network and defaults by measurement, on ``shapes``.

    python benchmarks/flow_design.py train OUT [--model-opt KEY=JSON ...] [--loss-opt KEY=JSON ...] [--epochs 6] [--batch 16]
                                               [--lr 2e-3] [--ema 0.999,0.9999] [--size 32] [--seed 0]
    python benchmarks/flow_design.py eval OUT [--weights ema0.999] [--guidance 2] [--steps 8]
                                              [--solver euler] [--grid PNG]
    python benchmarks/flow_design.py time [--size 32] [--repeats 7] LABEL=JSON ...
    python benchmarks/flow_design.py step [--size 32] [--batch 16] [--repeats 21] LABEL=JSON ...
    python benchmarks/flow_design.py table OUT ...
    python benchmarks/flow_design.py sensitivity OUT [--weights ema0.999 ...]
    python benchmarks/flow_design.py denoise OUT [--weights ema0.999] [--family shape] [--grid PNG]

``train`` trains ``flow`` with ``flow-matching`` the way ``genkit train`` does (the training
split held as uint8 in RAM, a seeded shuffle per epoch, fused Adam, seeded), keeping exponential
moving averages of the weights at each ``--ema`` decay beside the raw weights (several decays
from one run, which ``genkit train --ema`` cannot), and writes ``OUT/{raw,ema<decay>}.safetensors``
and ``OUT/design.json`` (options, epochs, seconds per epoch).

``eval`` computes the sample metrics of ``genkit evaluate`` on the test split, exactly as it does
(same seeds; one sample per test image for the attribute accuracy and fd, 32 attribute vectors ×
8 samples for the diversity), from a model's ``sample(condition, noise, **options)``, and writes
an 8×8 grid (the first 8 attribute vectors of the test split, 8 noises each), plus the seconds it
took. With ``--cvae RUN`` it evaluates a cvae run folder instead (to check that this reproduces
``genkit evaluate``'s figures).

``time`` measures, interleaved in one process, sampling 64 images with the default cvae recipe and
with each candidate, a JSON object of the flow's options and sampling options
(``{"patch": 4, "steps": 8, "guidance": 2}``), with random weights (the time does not depend on
them); it prints each as a multiple of the cvae's time. ``step`` does the same for a training step
(forward, backward, Adam), each model at its own batch (a candidate's ``"batch"``), and prints the
time per image, to which an epoch's time is proportional. ``table`` lists the ``eval`` results
of several OUT folders.

``sensitivity`` asks whether the network listens to each attribute at all: the mean |Δv| of its
velocity when one attribute of 64 test conditions changes (a family's value moved to this one, a
plain attribute flipped), on the same noisy test images at t = 0.3, 0.5 and 0.7. An attribute the
samples ignore reads an order of magnitude below the others, long before the samples can be scored.

``denoise`` shows where a family's value is decided: one real test image noised to t = 0.1, 0.3,
0.5 and 0.7 (one noise), and the network's estimate of the clean image, x̂₁ = x_t + (1 − t)·v, under
each value of ``--family`` (the rest of the condition the image's own), in a grid (a row per value,
the image first), and the mean |Δx̂₁| between values at each t. Where the estimates do not differ
at the early times, the samples' value of that family is the noise's, not the condition's. OUT may
also be a ``genkit train`` run folder of the flow (its ``model.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import genkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import interleaved, machine, table  # noqa: E402

from genkit.evaluation.classifier import attribute_accuracy, features_of, get_classifier, predict  # noqa: E402
from genkit.data.prepare import prepare_dataset  # noqa: E402
from genkit.evaluation.metrics import DIVERSITY_PER_SET, DIVERSITY_SETS, distinct_vectors, pairwise_rms, _matching_rows  # noqa: E402
from genkit.evaluation.frechet import frechet_distance  # noqa: E402
from genkit.store.images import save_grid  # noqa: E402
from genkit_datasets.torch_dataset import CachedImageDataset  # noqa: E402
from genkit_plugins.cvae import CVAE  # noqa: E402
from genkit_plugins.flow import build as build_flow  # noqa: E402
from genkit_plugins.flow_matching import FlowMatching, build as build_loss  # noqa: E402
from genkit_plugins.tiled_onehot import TiledOneHot, build as build_conditioner  # noqa: E402

FLOW_OPTIONS = ("patch", "channels", "blocks", "embedding", "condition_dropout", "prediction", "time_sampling",
                "attribute_dropout", "attention", "positions", "placement", "time_shift")
SAMPLING_OPTIONS = ("guidance", "steps", "solver")


def _parse_opts(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = json.loads(value)
    return out


def _data(size: int, split: str) -> tuple:
    info, _ = prepare_dataset("shapes", image_size=size)
    return info, CachedImageDataset(info.path, split, in_memory=True)


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = _parse_opts(args.model_opt)
    info, train_set = _data(args.size, "train")
    torch.manual_seed(args.seed)
    conditioner = build_conditioner(list(info.attribute_names))  # partial, as genkit train's default
    model = build_flow((3, args.size, args.size), conditioner, **options)
    loss_options = _parse_opts(args.loss_opt)
    loss_fn = build_loss(**loss_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    decays = [float(d) for d in args.ema.split(",") if d] if args.ema else []
    averages = {d: [p.detach().clone() for p in model.parameters()] for d in decays}
    images_u8, attributes = train_set.images_uint8(), train_set.attributes
    n = len(train_set)
    epoch_seconds, losses = [], []
    record = {"options": options, "loss_options": loss_options, "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "clip": args.clip,
              "seed": args.seed, "partial": True,
              "size": args.size, "ema": decays, "parameters": sum(p.numel() for p in model.parameters()),
              "machine": machine()}
    (out / "design.json").write_text(json.dumps(record, indent=1))
    model.train()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 7919 + epoch))
        started = time.perf_counter()
        total, count = torch.zeros(()), 0
        for start in range(0, n - args.batch + 1, args.batch):
            idx = order[start:start + args.batch]
            images = images_u8[idx].float().div_(255)
            result = loss_fn(model(images, attributes[idx]), images)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            with torch.no_grad():
                for decay, average in averages.items():
                    torch._foreach_lerp_(average, [p.detach() for p in model.parameters()], 1 - decay)
            total += result.total.detach()
            count += 1
        epoch_seconds.append(time.perf_counter() - started)
        losses.append(float(total / count))
        print(f"epoch {epoch}: loss {losses[-1]:.4f}, {epoch_seconds[-1]:.0f} s", flush=True)
        if epoch in args.save_at:
            _save(model, averages, out, f"-e{epoch}")
    _save(model, averages, out, "")
    record.update(epoch_seconds=epoch_seconds, losses=losses)
    (out / "design.json").write_text(json.dumps(record, indent=1))


def _save(model, averages: dict, out: Path, suffix: str) -> None:
    names = [name for name, _ in model.named_parameters()]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"raw{suffix}.safetensors")
    for decay, average in averages.items():
        state = dict(model.state_dict())
        state.update(dict(zip(names, average)))
        save_file({k: v.contiguous() for k, v in state.items()}, out / f"ema{decay:g}{suffix}.safetensors")


def load_flow(out: Path, weights: str):
    record = json.loads((out / "design.json").read_text())
    info, _ = _data(record["size"], "test")
    conditioner = build_conditioner(list(info.attribute_names), partial=record.get("partial", False))
    model = build_flow((3, record["size"], record["size"]), conditioner,
                       **record["options"])
    model.load_state_dict(load_file(out / f"{weights}.safetensors"))
    return model.eval(), record


def load_cvae(run: Path):
    config = json.loads((run / "config.json").read_text())
    size = config["data"]["image_size"]
    info, _ = _data(size[0], "test")
    model = CVAE((3, *size), TiledOneHot(list(info.attribute_names)), **{
        k: v for k, v in config["model"]["options"].items()})
    model.load_state_dict(load_file(run / "model.safetensors"))
    return model.eval(), size[0]


def sample_metrics(model, size: int, options: dict, seed: int = 0, batch_size: int = 128) -> dict:
    """``genkit evaluate``'s sample metrics on the test split, from ``model.sample(cond, noise, **options)``."""
    info, dataset = _data(size, "test")
    classifier, _, _ = get_classifier(info, train_if_needed=True, device=torch.device("cpu"))
    shape = tuple(getattr(model, "noise_shape", None) or (model.latent_dim,))
    attributes, images_u8, n = dataset.attributes, dataset.images_uint8(), len(dataset)
    started = time.perf_counter()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 1)
        predictions, features = [], []
        for start in range(0, n, batch_size):
            cond = attributes[start:start + batch_size]
            noise = torch.randn(len(cond), *shape, generator=generator)
            images = model.sample(cond, noise, **options).float().clamp(0, 1)
            predictions.append(predict(classifier, images))
            features.append(features_of(classifier, images))
        per_attribute = attribute_accuracy(torch.cat(predictions), attributes)
        real_per_attribute = attribute_accuracy(predict(classifier, images_u8), attributes)
        generator = torch.Generator().manual_seed(seed + 2)
        generated, real = [], []
        for vector in distinct_vectors(attributes, DIVERSITY_SETS):
            cond = vector.reshape(1, -1).expand(DIVERSITY_PER_SET, -1)
            noise = torch.randn(DIVERSITY_PER_SET, *shape, generator=generator)
            generated.append(pairwise_rms(model.sample(cond, noise, **options).float().clamp(0, 1)))
            rows = (attributes == vector).all(dim=1).nonzero().flatten()[:DIVERSITY_PER_SET]
            if len(rows) >= 2:
                real.append(pairwise_rms(images_u8[rows].float() / 255))
        sampled = time.perf_counter() - started
        real_features = features_of(classifier, images_u8)
        fd = frechet_distance(torch.cat(features), real_features)
        reference = CachedImageDataset(info.path, "train")
        rows = _matching_rows(reference.attributes, attributes, torch.Generator().manual_seed(seed + 3))
        order = torch.argsort(rows)
        floor_images = torch.empty(len(rows), *dataset.image_shape, dtype=torch.uint8)
        for start in range(0, len(rows), 1024):
            part = order[start:start + 1024]
            floor_images[part] = reference.read_uint8(rows[part].tolist())[0]
        fd_floor = frechet_distance(features_of(classifier, floor_images), real_features)
    names = list(info.attribute_names)
    diversity, data_diversity = float(torch.stack(generated).mean()), float(torch.stack(real).mean())
    return {"relative_attribute_accuracy": float(per_attribute.mean() / real_per_attribute.mean()),
            "attribute_accuracy": float(per_attribute.mean()),
            "min_attribute_accuracy": float(per_attribute.min()), "weakest_attribute": names[int(per_attribute.argmin())],
            "per_attribute_accuracy": {a: round(float(v), 4) for a, v in zip(names, per_attribute)},
            "diversity": diversity, "data_diversity": data_diversity, "diversity_ratio": diversity / data_diversity,
            "fd": fd, "fd_floor": fd_floor, "sampling_seconds": sampled}


def grid(model, size: int, options: dict, path: Path) -> None:
    """8 attribute vectors of the test split (rows) × 8 noises (columns), the same noises in every row."""
    _, dataset = _data(size, "test")
    vectors = distinct_vectors(dataset.attributes, 8)
    shape = tuple(getattr(model, "noise_shape", None) or (model.latent_dim,))
    noise = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rows = [model.sample(v.reshape(1, -1).expand(8, -1), noise, **options) for v in vectors]
    save_grid(torch.cat(rows).clamp(0, 1), path, nrow=8)


def evaluate(args) -> None:
    if args.cvae:
        model, size = load_cvae(Path(args.cvae))
        options, label, out = {}, "cvae", Path(args.cvae)
    else:
        out = Path(args.out)
        model, record = load_flow(out, args.weights)
        size = record["size"]
        options = {"guidance": args.guidance, "steps": args.steps, "solver": args.solver}
        label = f"{args.weights}-g{args.guidance:g}-{args.solver}{args.steps}"
    metrics = sample_metrics(model, size, options)
    metrics.update({"weights": args.weights, **options})
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_attribute_accuracy"}), flush=True)
    results = out / "design_eval.jsonl"
    with results.open("a") as f:
        f.write(json.dumps({"label": label, **metrics}) + "\n")
    grid(model, size, options, Path(args.grid) if args.grid else out / f"grid-{label}.png")


def timing(args) -> None:
    names = list(_data(args.size, "test")[0].attribute_names)
    torch.manual_seed(0)
    conditioner = build_conditioner(names)
    condition = (torch.rand(64, len(names)) > 0.5).float()
    cvae = CVAE((3, args.size, args.size), conditioner, prior="learned").eval()
    cases = {"cvae (default recipe)": lambda: cvae.sample(condition)}
    for item in args.candidates:
        label, _, spec = item.partition("=")
        spec = json.loads(spec)
        model = build_flow((3, args.size, args.size), conditioner,
                           **{k: v for k, v in spec.items() if k in FLOW_OPTIONS}).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.05)
        options = {k: v for k, v in spec.items() if k in SAMPLING_OPTIONS}
        cases[label] = lambda m=model, o=options: m.sample(condition, **o)
    with torch.no_grad():
        times = interleaved(cases, repeats=args.repeats)
    base = times["cvae (default recipe)"]
    print(f"machine: {machine()}")
    print(f"64 samples at {args.size}x{args.size}, median of {args.repeats} interleaved repeats\n")
    print(table([(k, f"{v * 1000:.0f} ms", f"{v / base:.1f}x") for k, v in times.items()],
                ("sampler", "64 samples", "vs cvae")))


def step_timing(args) -> None:
    """Training time per image (forward, backward, Adam) of the default cvae recipe and each candidate,
    each at its own batch size (a candidate's ``"batch"``; ``--batch`` for the cvae), interleaved."""
    from genkit_plugins.gaussian_elbo import GaussianELBO

    names = list(_data(args.size, "test")[0].attribute_names)
    torch.manual_seed(0)
    conditioner = build_conditioner(names)

    def stepper(model, loss_fn, batch):
        images = torch.rand(batch, 3, args.size, args.size)
        condition = (torch.rand(batch, len(names)) > 0.5).float()
        params = [*model.parameters(), *getattr(loss_fn, "parameters", lambda: [])()]
        optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)

        def step():
            result = loss_fn(model(images, condition), images)
            optimizer.zero_grad(set_to_none=True)
            result.total.backward()
            optimizer.step()
        return step

    base_label = "cvae (default recipe)"
    batches = {base_label: args.batch}
    cases = {base_label: stepper(CVAE((3, args.size, args.size), conditioner, prior="learned"), GaussianELBO(),
                                 args.batch)}
    for item in args.candidates:
        label, _, spec = item.partition("=")
        spec = json.loads(spec)
        batches[label] = spec.get("batch", args.batch)
        model = build_flow((3, args.size, args.size), conditioner, **{k: v for k, v in spec.items() if k in FLOW_OPTIONS})
        cases[label] = stepper(model, FlowMatching(), batches[label])
    times = interleaved(cases, repeats=args.repeats, warmup=3)
    per_image = {k: v / batches[k] for k, v in times.items()}
    print(f"machine: {machine()}")
    print(f"one training step at {args.size}x{args.size}, median of {args.repeats} interleaved; an epoch's time "
          "is proportional to the time per image\n")
    print(table([(k, str(batches[k]), f"{times[k] * 1000:.1f} ms", f"{per_image[k] * 1000:.2f} ms",
                  f"{per_image[k] / per_image[base_label]:.1f}x") for k in times],
                ("model", "batch", "step", "per image", "epoch vs cvae")))


def report(args) -> None:
    rows = []
    for out in map(Path, args.outs):
        record = json.loads((out / "design.json").read_text())
        for line in (out / "design_eval.jsonl").read_text().splitlines():
            m = json.loads(line)
            rows.append((out.name, m["label"], f"{record['parameters'] / 1e3:.0f}k",
                         f"{sum(record['epoch_seconds']) / len(record['epoch_seconds']):.0f}",
                         f"{m['relative_attribute_accuracy']:.3f}",
                         f"{m['weakest_attribute']} {m['min_attribute_accuracy']:.3f}",
                         f"{m['diversity_ratio']:.3f}", f"{m['fd']:.1f}", f"{m['sampling_seconds']:.0f}"))
    print(table(rows, ("run", "sampling", "params", "s/epoch", "attr/clf", "weakest", "div. ratio", "fd",
                       "eval sampling s")))


def sensitivity(args) -> None:
    out = Path(args.out)
    for weights in args.weights:
        model, record = load_flow(out, weights)
        info, dataset = _data(record["size"], "test")
        names = list(info.attribute_names)
        generator = torch.Generator().manual_seed(0)
        x1 = model.to_flow(dataset.images_uint8()[:64].float() / 255)
        condition = dataset.attributes[:64].float()
        change: dict[str, list[float]] = {name: [] for name in names}
        with torch.no_grad():
            for t in (0.3, 0.5, 0.7):
                x_t = (1 - t) * torch.randn(x1.shape, generator=generator) + t * x1
                times = torch.full((64,), t)
                base = model.net(x_t, times, model.conditioner.vector(condition))
                for j, name in enumerate(names):
                    changed, rows = condition.clone(), torch.ones(64, dtype=torch.bool)
                    if "::" in name:  # move the family's value to this one, in the rows where it is another
                        family = [k for k, n in enumerate(names) if n.split("::")[0] == name.split("::")[0]]
                        changed[:, family] = 0
                        changed[:, j] = 1
                        rows = condition[:, j] == 0
                    else:
                        changed[:, j] = 1 - changed[:, j]
                    moved = model.net(x_t, times, model.conditioner.vector(changed))
                    change[name].append(float((moved - base).abs().mean(dim=(1, 2, 3))[rows].mean()))
        print(weights, "  ".join(f"{name}={sum(v) / len(v):.4f}" for name, v in change.items()), flush=True)


def _any_flow(out: Path, weights: str):
    """A design folder's weights, or a ``genkit train`` run folder's model as ``genkit.load_run`` rebuilds it."""
    if (out / "design.json").exists():
        model, record = load_flow(out, weights)
        return model, record["size"]
    run = genkit.load_run(out, device="cpu")
    return run.model.eval(), run.config.data.image_size[0]


def denoise(args) -> None:
    out = Path(args.out)
    model, size = _any_flow(out, args.weights)
    info, dataset = _data(size, "test")
    names = list(info.attribute_names)
    columns = [k for k, name in enumerate(names) if name.split("::")[0] == args.family]
    if not columns:
        raise SystemExit(f"no family {args.family!r} among {', '.join(names)}")
    image = dataset.images_uint8()[:1].float() / 255
    x1 = model.to_flow(image)
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))
    conditions = dataset.attributes[:1].float().repeat(len(columns), 1)
    conditions[:, columns] = torch.eye(len(columns))
    rows = [image.repeat(len(columns), 1, 1, 1)]
    spread = {}
    with torch.no_grad():
        vector = model.conditioner.vector(conditions)
        for t in (0.1, 0.3, 0.5, 0.7):
            x_t = ((1 - t) * x0 + t * x1).repeat(len(columns), 1, 1, 1)
            estimate = x_t + (1 - t) * model.predict(x_t, torch.full((len(columns),), t), vector)
            rows.append(model.to_images(estimate).clamp(0, 1))
            spread[t] = float((estimate[:, None] - estimate[None]).abs().mean() * len(columns) / (len(columns) - 1))
    print("image:", ",".join(n for n, v in zip(names, dataset.attributes[0]) if v))
    print(f"mean |Δx̂₁| between {args.family} values (flow units):",
          "  ".join(f"t={t:g}: {d:.4f}" for t, d in spread.items()))
    grid_path = Path(args.grid) if args.grid else out / f"denoise-{args.family}.png"
    save_grid(torch.stack(rows, 1).reshape(-1, *image.shape[1:]), grid_path, nrow=len(rows))
    print(grid_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("out")
    p.add_argument("--model-opt", action="append")
    p.add_argument("--loss-opt", action="append", help="flow-matching's options, KEY=JSON (adaptive=1)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (genkit train --grad-clip); 0: off")
    p.add_argument("--ema", default="0.999,0.9999")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-at", type=lambda text: [int(e) for e in text.split(",")], default=[],
                   help="epochs after which to save the weights too (as raw-eN, ema<decay>-eN)")
    p.set_defaults(fn=train)
    p = sub.add_parser("eval")
    p.add_argument("out", nargs="?")
    p.add_argument("--cvae")
    p.add_argument("--weights", default="ema0.999")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--solver", default="euler")
    p.add_argument("--grid")
    p.set_defaults(fn=evaluate)
    p = sub.add_parser("time")
    p.add_argument("candidates", nargs="*")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.set_defaults(fn=timing)
    p = sub.add_parser("step")
    p.add_argument("candidates", nargs="*")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=21)
    p.set_defaults(fn=step_timing)
    p = sub.add_parser("sensitivity")
    p.add_argument("out")
    p.add_argument("--weights", nargs="+", default=["ema0.999"])
    p.set_defaults(fn=sensitivity)
    p = sub.add_parser("denoise")
    p.add_argument("out")
    p.add_argument("--weights", default="ema0.999")
    p.add_argument("--family", default="shape")
    p.add_argument("--grid")
    p.set_defaults(fn=denoise)
    p = sub.add_parser("table")
    p.add_argument("outs", nargs="+")
    p.set_defaults(fn=report)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()

"""Recipes compared on ``shapes``: the table, the side-by-side sample figure, and temperature.

    python benchmarks/recipes.py table LABEL=RUN ...                  # from each RUN/evaluation_test.json
    python benchmarks/recipes.py figure --out docs/images/recipes.png LABEL=RUN[@T] ...  # @T: temperature
    python benchmarks/recipes.py temperature RUN [--t 0.5,0.7,0.85,1] [--fitted global|per-vector]  # at temperature T
    python benchmarks/recipes.py ceiling RUN                          # diversity of reconstructions

``table`` prints the markdown table of docs/evaluation.md from the JSON `genkit evaluate --json`
wrote. ``figure`` draws, for the first three attribute sets of each run's sample grid, one row
per recipe with the same eight latent codes ε (seed 1, as the grids'). ``temperature`` scales the
prior noise ε by T (z = μ_p(x) + T·σ_p(x)·ε for the learned prior) and reports the sample metrics
of `genkit evaluate` (attribute accuracy, the weakest attribute, diversity ratio, fd) on the test
split; the likelihood bounds do not depend on T. ``--fitted`` samples instead from a density fitted
ex post to the training codes (Ghosh et al. 2020; Pythae's Gaussian sampler), over the
standardised codes r = (μ_q − μ_p(x)) / σ_p(x) of the training images: ``global``, one
full-covariance Gaussian N(m, C) (C = cov(r) + mean(σ_q² / σ_p²)), drawn as
z = μ_p(x) + σ_p(x)·(m + T·Lε) with LLᵀ = C; ``per-vector``, one diagonal Gaussian per attribute
vector of the training split (mean of r, variance var(r) + mean(σ_q² / σ_p²) over the images with
that vector; the global one for a vector the training split lacks). It needs the cvae's
``encode``, ``prior_params`` and ``decode``. ``ceiling`` measures `genkit evaluate`'s diversity on the
run's reconstructions of the real images it compares against (the same 32 vectors × 8 images):
the diversity a sampler would reach if every sample were as good as a reconstruction, so what
the decoder can express at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import genkit
from genkit.evaluation.classifier import get_classifier
from genkit.evaluation.metrics import _attribute_accuracies, _diversities, _frechet_distances
from genkit.sampling.run import open_run_data
from genkit.store.images import labelled_grid
from genkit.sweep.report import short_label
from genkit_datasets.torch_dataset import CachedImageDataset

GRID_SETS = 3
CODES = 8


def _pairs(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        label, sep, path = item.rpartition("=")
        if not sep:
            sys.exit(f"expected LABEL=RUN, got {item!r}")
        out.append((label, Path(path)))
    return out


def table(pairs: list[tuple[str, Path]]) -> None:
    print("| recipe | attr. acc. / classifier | weakest attribute | diversity ratio | fd (floor) | cll | mse | kl |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for label, run in pairs:
        m = json.loads((run / "evaluation_test.json").read_text())
        print(f"| {label} | {m['relative_attribute_accuracy']:.3f} | {m['weakest_attribute']} "
              f"{m['min_attribute_accuracy']:.3f} | {m['diversity_ratio']:.3f} | {m['fd']:.2f} ({m['fd_floor']:.2f}) "
              f"| {m['cll']:.0f} | {m['mse']:.1f} | {m['kl']:.1f} |")


def figure(pairs: list[tuple[str, Path]], out: Path) -> None:
    runs = []
    for label, path in pairs:
        run_dir, _, t = str(path).partition("@")
        runs.append((label, genkit.load_run(run_dir, device="cpu"), float(t or 1)))
    pairs = [(label, Path(str(path).partition("@")[0])) for label, path in pairs]
    names = runs[0][1].attribute_names
    first = runs[0][1]
    rows_spec = json.loads((pairs[0][1] / "samples" / "rows.json").read_text())[:GRID_SETS]
    conds = [first.conditioner.encode(spec.split(",") if spec != "(none)" else []) for spec in rows_spec]
    eps = torch.randn(CODES, first.model.latent_dim, generator=torch.Generator().manual_seed(first.config.train.seed + 1))
    rows, labels = [], []
    for cond in conds:
        for label, run, t in runs:
            with torch.no_grad():
                rows.append(run.model.eval().sample(cond.reshape(1, -1).expand(CODES, -1), t * eps).float())
            labels.append(f"{label}\n{short_label(cond, names)}")
    labelled_grid(rows, labels, None, out)
    try:  # a 256-colour palette keeps the PNG small
        from PIL import Image

        Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    except ImportError:
        pass
    print(out)


class _Tempered(torch.nn.Module):
    """The model with its prior noise scaled by T at sampling (and optionally mapped through a fitted
    density); everything else passes through."""

    def __init__(self, model: torch.nn.Module, temperature: float, fitted=None):
        super().__init__()
        self.inner, self.temperature, self.latent_dim, self.fitted = model, temperature, model.latent_dim, fitted

    def sample(self, condition, z=None, generator=None):
        if self.fitted is None:
            return self.inner.sample(condition, z * self.temperature)
        prior_mu, prior_logvar = self.inner.prior_params(condition)
        if isinstance(self.fitted, dict):  # per attribute vector: (mean, std), "*" for unseen vectors
            stats = [self.fitted.get(tuple(v), self.fitted["*"]) for v in condition.tolist()]
            mean, std = torch.stack([m for m, _ in stats]).to(z), torch.stack([s for _, s in stats]).to(z)
            r = mean + self.temperature * std * z
        else:
            mean, chol = self.fitted
            r = mean.to(z) + self.temperature * z @ chol.to(z).T
        return self.inner.decode(prior_mu + torch.exp(0.5 * prior_logvar) * r, condition)


@torch.no_grad()
def fit_codes(run, info, per_vector: bool = False, batch_size: int = 256):
    """Mean and Cholesky factor of the standardised training codes, or per attribute vector a
    mean and standard deviation (see the module docstring)."""
    train = CachedImageDataset(info.path, "train", in_memory=True)
    residuals, variances = [], []
    for start in range(0, len(train), batch_size):
        images_u8, cond = train.read_uint8(range(start, min(start + batch_size, len(train))))
        images, cond = images_u8.to(run.device).float().div_(255), cond.to(run.device)
        mu, logvar = run.model.encode(images, cond)
        prior_mu, prior_logvar = run.model.prior_params(cond)
        residuals.append(((mu - prior_mu) * torch.exp(-0.5 * prior_logvar)).double().cpu())
        variances.append(torch.exp(logvar - prior_logvar).double().cpu())
    r, v = torch.cat(residuals), torch.cat(variances)
    if per_vector:
        table = {"*": (r.mean(0).float(), (r.var(0) + v.mean(0)).sqrt().float())}
        for key in {tuple(a) for a in train.attributes.tolist()}:
            rows = (train.attributes == torch.tensor(key)).all(dim=1)
            if int(rows.sum()) >= 2:
                table[key] = (r[rows].mean(0).float(), (r[rows].var(0) + v[rows].mean(0)).sqrt().float())
        return table
    cov = torch.cov(r.T) + torch.diag(v.mean(0))
    return r.mean(0).float(), torch.linalg.cholesky(cov).float()


def temperature(run_dir: Path, temperatures: list[float], seed: int = 0, fitted: str | None = None) -> None:
    run = genkit.load_run(run_dir)
    info = open_run_data(run)
    density = fit_codes(run, info, per_vector=fitted == "per-vector") if fitted else None
    dataset = CachedImageDataset(info.path, "test", in_memory=True)
    classifier, _, _ = get_classifier(info, device=run.device)
    names = list(info.attribute_names)
    print(f"{run_dir} ({f'fitted density, {fitted}' if fitted else 'prior'}): T | attr. acc. / classifier | weakest | "
          f"diversity ratio | fd (floor)")
    for t in temperatures:
        tempered = genkit.Run(run.directory, run.config, _Tempered(run.model, t, density), run.conditioner, run.loss, run.device)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            acc, real, features = _attribute_accuracies(tempered, dataset, classifier, seed + 1, 128, None)
            diversity, data_diversity = _diversities(tempered, dataset, seed + 2)
            fd, floor, _ = _frechet_distances(info, dataset, classifier, features, run.device, seed + 3)
        print(f"{t:g} | {float(acc.mean() / real.mean()):.3f} | {names[int(acc.argmin())]} {float(acc.min()):.3f} | "
              f"{diversity / data_diversity:.3f} | {fd:.2f} ({floor:.2f})", flush=True)


def ceiling(run_dir: Path) -> None:
    from genkit.evaluation.metrics import distinct_vectors, pairwise_rms
    from genkit.sampling.reconstruction import reconstruct

    run = genkit.load_run(run_dir)
    dataset = CachedImageDataset(open_run_data(run).path, "test", in_memory=True)
    images_u8, attributes = dataset.images_uint8(), dataset.attributes
    real, recon = [], []
    for vector in distinct_vectors(attributes, 32):
        rows = (attributes == vector).all(dim=1).nonzero().flatten()[:8]
        if len(rows) >= 2:
            images = images_u8[rows].float() / 255
            real.append(pairwise_rms(images))
            recon.append(pairwise_rms(reconstruct(run, images, attributes[rows])))
    real_d, recon_d = float(torch.stack(real).mean()), float(torch.stack(recon).mean())
    print(f"{run_dir}: data diversity {real_d:.4f}, reconstructions' {recon_d:.4f}, ratio {recon_d / real_d:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("table")
    p.add_argument("runs", nargs="+")
    p = sub.add_parser("figure")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("runs", nargs="+")
    p = sub.add_parser("temperature")
    p.add_argument("run", type=Path)
    p.add_argument("--t", default="0.5,0.7,0.85,1")
    p.add_argument("--fitted", choices=("global", "per-vector"), default=None)
    p = sub.add_parser("ceiling")
    p.add_argument("run", type=Path)
    args = parser.parse_args()
    if args.what == "table":
        table(_pairs(args.runs))
    elif args.what == "figure":
        figure(_pairs(args.runs), args.out)
    elif args.what == "ceiling":
        ceiling(args.run)
    else:
        temperature(args.run, [float(t) for t in args.t.split(",")], fitted=args.fitted)


if __name__ == "__main__":
    main()

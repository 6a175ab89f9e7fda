"""Fingerprint what genkit produces, so a refactor can show it changed nothing.

Trains the default CVAE and the default flow briefly on a small ``shapes`` set with a fixed seed,
then samples, reconstructs, edits, evaluates and sweeps a sampling option, and writes one JSON
file: every produced file's SHA-256 (``metrics.jsonl`` and the evaluation JSON with their timing
fields removed), plus the CLI's exit code and first stderr line for a few bad inputs. Run it
before and after a change and diff the two files::

    python benchmarks/behaviour_capture.py --out /tmp/before.json
    ... change the code ...
    python benchmarks/behaviour_capture.py --out /tmp/after.json
    diff /tmp/before.json /tmp/after.json && echo unchanged

Takes about two minutes on 2 CPU cores. Equality holds on one machine and one torch build;
float results on another CPU may differ in the last bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: fields that measure time, not behaviour
TIMING_KEYS = {"images_per_s", "seconds", "elapsed_s", "time", "wall_s", "data_wait", "step_s", "time_s",
               "sampling_seconds", "sampling_s", "started", "finished", "duration_s"}
DATA = ["--data", "shapes", "--data-opt", "count=240", "--image-size", "32"]


def scrub(value):
    """``value`` with every timing field dropped, recursively."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in TIMING_KEYS and not k.endswith("_per_s")
                and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def digest(path: Path) -> str:
    if path.suffix in (".jsonl",):
        lines = [json.dumps(scrub(json.loads(line)), sort_keys=True) for line in path.read_text().splitlines() if line]
        data = "\n".join(lines).encode()
    elif path.suffix == ".json":
        data = json.dumps(scrub(json.loads(path.read_text())), sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def genkit(*args: str, cwd: Path) -> dict:
    env = {**os.environ, "GENKIT_CACHE": str(cwd / "cache"), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "genkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    result = {"args": list(args), "rc": done.returncode, "stderr": errors[-1] if done.returncode else ""}
    if "--json" in args and done.returncode == 0:
        result["json"] = scrub(json.loads(done.stdout))
    return result


def folder_digests(folder: Path) -> dict[str, str]:
    skip = {"steps.jsonl", "events", "train.log"}
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("events.out") and p.name not in skip
            and "tensorboard" not in p.parts and p.name != "resumes.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report: dict[str, object] = {"commands": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        commands = [
            ["train", "--model", "cvae", *DATA, "--epochs", "2", "--out", "runs/cvae", "--no-tensorboard"],
            ["train", "--model", "flow", *DATA, "--epochs", "1", "--out", "runs/flow", "--no-tensorboard"],
            ["sample", "--run", "runs/cvae", "--attrs", "shape::circle,color::red", "--n", "8", "--out", "cvae.png"],
            ["sample", "--run", "runs/flow", "--attrs", "shape::circle,color::red", "--n", "4",
             "--sampling-steps", "4", "--out", "flow.png"],
            ["sample", "--run", "runs/cvae", "--attrs", "color::blue", "--rest", "off", "--temperature", "0.5",
             "--n", "4", "--out", "cvae-off.png"],
            ["reconstruct", "--run", "runs/cvae", "--n", "4", "--out", "recon.png"],
            ["edit", "--run", "runs/cvae", "--index", "3", "--set", "color::blue", "--out", "edit-cvae.png"],
            ["edit", "--run", "runs/flow", "--index", "3", "--set", "color::blue", "--sampling-steps", "4",
             "--out", "edit-flow.png"],
            ["evaluate", "--run", "runs/cvae", "--json", "--samples", "4", "--limit", "48", "--train-classifier"],
            ["evaluate", "--run", "runs/flow", "--json", "--limit", "24", "--sampling-steps", "2", "--no-edits"],
            # bad input: one line, exit 2
            ["train", "--model", "cvae", *DATA, "--epochs", "0"],
            ["train", "--model", "nope", *DATA],
            ["train", "--model", "flow", "--loss", "beta-elbo", *DATA],
            ["sample", "--run", "runs/cvae", "--attrs", "shape::blob"],
            ["sample", "--run", "runs/flow", "--guidance", "nan"],
            ["train", "--model", "cvae", *DATA, "--model-opt", "latent_dim=-3"],
        ]
        for command in commands:
            result = genkit(*command, cwd=work)
            report["commands"].append(result)
            print(result["rc"], " ".join(command)[:100], result["stderr"][:120], flush=True)
        for name in ("cvae", "flow"):
            report[name] = folder_digests(work / "runs" / name)
        report["outputs"] = {p.name: digest(p) for p in sorted(work.glob("*.png")) + sorted(work.glob("*.json"))}
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

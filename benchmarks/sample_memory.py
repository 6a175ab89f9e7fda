"""Peak memory of `genkit sample --vary large --n N` against what genkit sizes before drawing.

    python benchmarks/sample_memory.py [--n 10000] [--size 32]

Writes an untrained cvae run folder at --size (memory does not depend on training), then runs
the command in a fresh process twice, measuring its peak resident memory (``/usr/bin/time -v``,
or the process's own ``ru_maxrss``): as genkit runs it (the rows decoded 256 images at a time),
and with the whole row decoded in one forward pass, as before issue 19. Beside them: the bytes
``check_grid`` sizes for the grid, and a bare ``import genkit.cli.app, torch`` process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, table  # noqa: E402

RUN = """
import resource, sys
import genkit.sampling.draw
genkit.sampling.draw.SAMPLE_BATCH = {batch}
from genkit.cli.app import build_app
try:
    build_app()(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def make_run(directory: Path, size: int) -> Path:
    import genkit
    from genkit.components.build import build_components
    from genkit.store.run_folder import CONFIG_FILE, WEIGHTS_FILE
    from genkit.sampling.attributes import AttributeTable
    from genkit.store.weights import save_weights
    from genkit_datasets.shapes import ATTRIBUTE_NAMES, sample_attributes

    config = genkit.plan_run("cvae", "shapes", image_size=size, device="cpu")
    _, model, _ = build_components(config)
    directory.mkdir(parents=True)
    (directory / CONFIG_FILE).write_text(config.to_json())
    save_weights(model, directory / WEIGHTS_FILE)
    AttributeTable.from_rows(ATTRIBUTE_NAMES, sample_attributes(9600, 0)).save(directory)
    return directory


def peak_mb(code: str, args: list[str]) -> float:
    """Peak resident memory (MB) of ``python -c CODE ARGS``, as the process reports it."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    from genkit.sampling.grids import FLOAT_GRID_BYTES_PER_VALUE, check_grid, grid_shape

    with tempfile.TemporaryDirectory(prefix="genkit-bench-memory-") as scratch:
        run = make_run(Path(scratch) / "run", args.size)
        command = ["sample", "--run", str(run), "--vary", "large", "--n", str(args.n), "--device", "cpu",
                   "--out", str(Path(scratch) / "vary.png")]
        shape = (3, args.size, args.size)
        check_grid(2 * args.n, args.n, shape, bytes_per_value=FLOAT_GRID_BYTES_PER_VALUE)  # genkit's check (fits)
        height, width, channels = grid_shape(2 * args.n, args.n, shape)
        sized = height * width * channels * FLOAT_GRID_BYTES_PER_VALUE / 1e6
        bare = peak_mb("import resource, sys, torch, genkit.cli.app; "
                       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)", [])
        batched = peak_mb(RUN.format(batch=256), command)
        whole = peak_mb(RUN.format(batch=10**9), command)
    print(machine())
    print(table([
        ("python with torch and genkit imported", f"{bare:.0f} MB", ""),
        (f"sample --vary large --n {args.n} at {args.size}x{args.size}, decoded 256 at a time (genkit)",
         f"{batched:.0f} MB", f"+{batched - bare:.0f} MB over the bare process"),
        ("the same, each row decoded in one pass (before issue 19)", f"{whole:.0f} MB",
         f"+{whole - bare:.0f} MB over the bare process"),
        (f"what check_grid sizes ({FLOAT_GRID_BYTES_PER_VALUE} bytes per grid value)", f"{sized:.0f} MB", ""),
    ], ("measure", "peak RSS", "note")))


if __name__ == "__main__":
    main()

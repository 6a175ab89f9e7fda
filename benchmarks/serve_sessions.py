"""`genkit serve` under many visitors: memory per session and grid latency under parallel clients.

    python benchmarks/serve_sessions.py [--run DIR] [--requests 5000] [--sessions 500] [--clients 20] [--before COMMIT]

Without --run it writes the cvae run folder at 64x64 of benchmarks/serve.py (untrained weights:
neither memory nor latency depends on training). For each server variant it starts `genkit serve`
on 127.0.0.1 and measures, with the standard library's HTTP client (benchmarks/_gradio_http.py):

* memory: the server's resident memory (VmRSS) after the first 100 grid requests and after
  --requests of them, sent round-robin from --sessions distinct session hashes by 8 threads
  (each request a 16-image grid, as a browser's event: queue/join, then its event stream);
* latency: --clients threads, each its own session, each sending --per-client grid requests of
  16 images back to back; the median and the 95th percentile of the request times, per round;
  the variants' rounds interleaved (--rounds each), and the median round reported.

Variants, both servers up at once: genkit's bounds (SESSION_CAPACITY sessions kept) and, for
comparison in the same run, genkit at the commit --before (its packages taken out of git and
served in place of these through PYTHONPATH), else Gradio's default of 10,000 sessions
(--no-compare: none). On a shared machine only the
ratios between variants measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gradio_http as client  # noqa: E402
from _machine import machine, table  # noqa: E402

GRID = ["shape::circle", "any", "on", "any", "any", "any"]  # shape, color, large, left, top, outline


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(run_dir: Path, port: int, capacity: int | None, source: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`genkit serve` in a subprocess; ``capacity`` overrides genkit's session bound (None: genkit's own);
    ``source`` is a folder holding another version's ``genkit/`` package, served instead of this one."""
    code = "from genkit.cli.app import main; main()"
    if capacity is not None:
        code = f"import genkit.serve.guard as g; g.SESSION_CAPACITY = {capacity}; " + code
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    if source is not None:  # first on the path, and the working folder (which `python -c` puts first)
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-c", code, "serve", "--run", str(run_dir.resolve()), "--port",
                                str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=source)
    url = process.stdout.readline().strip()
    if not url:
        process.kill()
        raise RuntimeError("genkit serve did not start")
    return process, url


def checkout(commit: str, folder: Path) -> Path:
    """The packages of ``commit`` (genkit, genkit_plugins, genkit_datasets) in ``folder``, importable from there."""
    root = Path(__file__).resolve().parents[1]
    folder.mkdir(parents=True)
    for source, package in (("genkit", "genkit"), ("plugins", "genkit_plugins"), ("datasets", "genkit_datasets")):
        archive = subprocess.run(["git", "-C", str(root), "archive", commit, source], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        if source != package:
            (folder / source).rename(folder / package)
    return folder


def memory(url: str, pid: int, requests: int, sessions: int, n: int) -> tuple[float, float, float]:
    """RSS (MB) before, after the first 100 requests and after ``requests``, round-robin over ``sessions``."""
    index = client.fn_index(client.config(url))
    before = rss_mb(pid)
    counter = iter(range(requests))
    lock = threading.Lock()
    after_100: list[float] = []
    done = [0]

    def worker() -> None:
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            message = client.predict(url, [*GRID, n, k, "data", 1.0], index, f"visitor-{k % sessions}")
            assert message.get("success"), message
            with lock:
                done[0] += 1
                if done[0] == 100:
                    after_100.append(rss_mb(pid))

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker) for _ in range(8)]:
            future.result()
    return before, after_100[0], rss_mb(pid)


def latency(url: str, clients: int, per_client: int, n: int) -> tuple[float, float]:
    """Median and 95th percentile seconds of a grid request with ``clients`` clients at once."""
    index = client.fn_index(client.config(url))
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def one_client(c: int) -> None:
        barrier.wait()
        for r in range(per_client):
            started = time.perf_counter()
            message = client.predict(url, [*GRID, n, 1000 * c + r, "data", 1.0], index, f"client-{c}")
            elapsed = time.perf_counter() - started
            assert message.get("success"), message
            with lock:
                times.append(elapsed)

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(one_client, c) for c in range(clients)]:
            future.result()
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.95 * len(times)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds per variant, interleaved")
    parser.add_argument("--n", type=int, default=16, help="images per grid")
    parser.add_argument("--port", type=int, default=7879)
    parser.add_argument("--no-compare", action="store_true", help="measure genkit's bounds only")
    parser.add_argument("--before", default=None,
                        help="a commit to compare with (its genkit, plugins and datasets served instead)")
    args = parser.parse_args()

    from genkit.serve.guard import SESSION_CAPACITY
    from serve import make_run

    scratch = Path(tempfile.mkdtemp(prefix="genkit-bench-sessions-"))
    try:
        run_dir = args.run or make_run(scratch / "cvae-shapes-64")
        variants = [(f"genkit's bounds ({SESSION_CAPACITY} sessions kept)", None, None)]
        if args.before is not None:
            variants.append((f"genkit at {args.before}", None, checkout(args.before, scratch / "before")))
        elif not args.no_compare:
            variants.append(("Gradio's default (10,000 sessions kept)", 10000, None))
        print(machine(), flush=True)
        servers = [(name, *start(run_dir, args.port + offset, capacity, source))
                   for offset, (name, capacity, source) in enumerate(variants)]
        rows = []
        try:
            # latency: the variants in turn, --rounds times, so the machine's load weighs on each alike
            times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in servers}
            for _ in range(args.rounds):
                for name, _, url in servers:
                    times[name].append(latency(url, args.clients, args.per_client, args.n))
                    p50, p95 = times[name][-1]
                    print(f"{name}: latency median / p95 {p50:.2f} / {p95:.2f} s", flush=True)
            for name, process, url in servers:
                p50 = sorted(t[0] for t in times[name])[len(times[name]) // 2]
                p95 = sorted(t[1] for t in times[name])[len(times[name]) // 2]
                before, first, last = memory(url, process.pid, args.requests, args.sessions, args.n)
                print(f"{name}: RSS {before:.0f} / {first:.0f} / {last:.0f} MB", flush=True)
                rows += [(f"{name}: RSS at start / after 100 requests / after {args.requests} "
                          f"({args.sessions} sessions)", f"{before:.0f} / {first:.0f} / {last:.0f} MB",
                          f"growth {last - first:+.0f} MB (target ≤ +150 MB)"),
                         (f"{name}: {args.n}-image grid, {args.clients} parallel clients, median / p95 "
                          f"(median of {args.rounds} rounds)", f"{p50:.2f} / {p95:.2f} s", "p95 target ≤ 1.44 s")]
        finally:
            for _, process, _ in servers:
                process.terminate()
                process.wait(timeout=60)
        print(table(rows, ("measure", "value", "note")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

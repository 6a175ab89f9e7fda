"""The GPU benchmark: genkit's CUDA paths measured in one prepared run of at most 8 minutes.

    python benchmarks/gpu.py                       # on the GPU machine (CUDA device 0)
    python benchmarks/gpu.py --device cpu --tiny   # the same code paths on a CPU, tiny sizes (dry run)

Options: ``--json-out PATH`` (default ``gpu-benchmark.json`` in the current folder), ``--budget-s``
(the whole run's time limit, default 460 s), ``--sections a,b`` (run only those), ``--work-dir``
and ``--keep`` (where the caches and run folders go, and keeping them), ``--profile
auto|always|never``.

Sections, each in its own try/except with its own time limit, the result or the error recorded in
the JSON and the table (a failed or skipped part never loses the others):

* ``data``: the synthetic datasets generated and cached through genkit's HDF5 cache: a
  CelebA-sized one (202,599 images at 64x64, CelebA's split sizes), a 128x128 one and one with
  512 condition values (a plugin registered at run time, benchmarks/_synthetic.py);
* ``throughput``: training images/s of the default cvae (``genkit.train``, data on the GPU) at
  64x64 and 128x128, fp32 and bf16, batch 64, 256 and 1024, eager;
* ``data_wait``: the share of step time the GPU waits for data with ``--data-in gpu``, ``ram``
  and ``disk`` (the loop's ``data_wait_s``, timed with CUDA events);
* ``conditioning``: fused against naive conditioning at 40 and 512 condition values;
* ``sampling``: images/s at batch 1024 (``Run.sample`` to the host, and ``model.sample`` on the
  device in fp32 and bf16);
* ``celeba_epoch``: one epoch of the CelebA-sized set's training split, trained from the cache;
* ``ddp``: ``torchrun --nproc_per_node 1`` with NCCL and with gloo (init, DDP all-reduce,
  checkpoint) against a plain process, final weights compared (gloo only without CUDA);
* ``compile``: the throughput matrix with ``--compile``, most important configuration first,
  as far as the budget allows (each one compiled from scratch, compile time excluded);
* ``profile``: when the 50,000 images/s target is missed, a torch.profiler table of the top
  kernels of the best 64x64 configuration.

Every images/s figure is the median over windows of ``log_every`` steps after a warm-up
window, timed between the loop's own host syncs (the observer's ``on_step`` with metrics), so
compile and first-step costs are left out and queued GPU work is included.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genkit  # noqa: E402
import _synthetic  # noqa: E402
from _machine import machine, table  # noqa: E402

TARGET_IMAGES_PER_S = 50_000
TARGET_DATA_WAIT = 0.05
TARGET_CONDITION_RATIO = 1.2
TARGET_EPOCH_S = 10.0
SECTIONS = ("data", "throughput", "data_wait", "conditioning", "sampling", "celeba_epoch", "ddp", "compile",
            "profile")
#: Each section's share of --budget-s (a cap; every section also stops at the global deadline).
SHARES = {"data": 0.30, "throughput": 0.25, "data_wait": 0.10, "conditioning": 0.10, "sampling": 0.05,
          "celeba_epoch": 0.15, "ddp": 0.20, "compile": 1.0, "profile": 0.08}
PROFILE_RESERVE = 0.08  # of the budget, kept back from the compile section for the profile and output


class SectionTimeout(BaseException):
    """A part ran past its time limit (BaseException, so no ``except Exception`` swallows it)."""


@contextmanager
def time_limit(seconds: float, what: str):
    if seconds <= 0:
        raise SectionTimeout(f"{what}: no time left in the budget")

    def expire(signum, frame):
        raise SectionTimeout(f"{what} ran past its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class StepClock:
    """Observer: wall time between logged steps, each taken right after the loop's host sync.

    The first window of every epoch (warm-up, compilation, epoch start) is kept apart as
    ``warmup_s``; the others are the measurement.
    """

    def __init__(self):
        self.windows: list[dict[str, float]] = []
        self.messages: list[str] = []
        self.records: list[dict] = []
        self.warmup_s: float | None = None
        self._last: tuple[float, int] | None = None
        self._epoch_started = 0.0

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._last = None
        self._epoch_started = time.perf_counter()

    def on_step(self, epoch: int, step: int, metrics: dict | None) -> None:
        if metrics is None:
            return
        now = time.perf_counter()
        if self._last is None:
            if self.warmup_s is None:
                self.warmup_s = now - self._epoch_started
        else:
            self.windows.append({"steps": step - self._last[1], "seconds": now - self._last[0],
                                 "data_wait_s": float(metrics.get("data_wait_s", float("nan")))})
        self._last = (now, step)

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        self.records.append(record)
        self._last = None


class ProfileClock(StepClock):
    """A StepClock that profiles ``steps`` training steps after the first logged window."""

    def __init__(self, device: torch.device, start_step: int, steps: int):
        super().__init__()
        self.device, self.start_step, self.stop_step = device, start_step, start_step + steps
        self.profiler = None
        self.profiled_s = 0.0
        self._began = 0.0

    def on_step(self, epoch: int, step: int, metrics: dict | None) -> None:
        if step == self.start_step and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            sync(self.device)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self._began = time.perf_counter()
        elif step == self.stop_step and self.profiler is not None and not self.profiled_s:
            sync(self.device)
            self.profiled_s = time.perf_counter() - self._began
            self.profiler.__exit__(None, None, None)
        super().on_step(epoch, step, metrics)


@dataclass
class Plan:
    """The sizes of everything, full (GPU) or ``--tiny`` (a CPU dry run of the same code)."""

    device: torch.device
    tiny: bool
    work: Path
    sizes: tuple[int, int] = (64, 128)
    batches: tuple[int, int, int] = (64, 256, 1024)
    log_every: int = 10
    windows: int = 4
    celeba_splits: tuple[int, int, int] = _synthetic.CELEBA_SPLITS
    wait_batch: int = 1024
    cond_batch: int = 1024
    sample_batch: int = 1024
    disk_workers: int = 8
    ddp_limit: int = 4096
    ddp_batch: int = 256
    compile_limit: int = 12
    small_split: int = 512
    cache: Path = field(init=False)

    def __post_init__(self):
        self.cache = self.work / "cache"
        if self.tiny:
            self.sizes, self.batches, self.log_every, self.windows = (16, 32), (4, 8, 16), 2, 2
            self.celeba_splits, self.wait_batch, self.cond_batch, self.sample_batch = (1600, 160, 160), 16, 16, 64
            self.disk_workers, self.ddp_limit, self.ddp_batch, self.compile_limit, self.small_split = 2, 64, 16, 1, 32
        self.disk_workers = max(1, min(self.disk_workers, os.cpu_count() or 1))

    @property
    def steps(self) -> int:
        """Steps per measured run: one warm-up window and ``windows`` measured ones."""
        return self.log_every * (1 + self.windows)

    @property
    def data_in(self) -> str:
        return "gpu" if self.device.type == "cuda" else "ram"

    def celeba_options(self) -> dict:
        train, valid, test = self.celeba_splits
        return {"train": train, "valid": valid, "test": test, "attributes": 40}

    def large_options(self) -> dict:
        return {"train": max(self.batches) * self.steps, "valid": self.small_split, "test": self.small_split,
                "attributes": 40}

    def wide_options(self) -> dict:
        return {"train": self.cond_batch * self.steps, "valid": self.small_split, "test": self.small_split,
                "attributes": 512}


class Bench:
    def __init__(self, args, plan: Plan):
        self.args, self.plan = args, plan
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget_s
        self.runs = 0
        self.sample_run: Path | None = None
        self.report: dict[str, Any] = {
            "benchmark": "benchmarks/gpu.py", "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s,
            "tiny": plan.tiny, "environment": environment(plan.device), "sections": {}, "targets": [],
        }

    # -- plumbing ------------------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def write_json(self) -> None:
        self.report["wall_s"] = round(time.perf_counter() - self.started, 1)
        path = Path(self.args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.report, indent=1, default=str))
        os.replace(tmp, path)

    def section(self, name: str, body: Callable[[dict, float], None], reserve: float = 0.0) -> None:
        if name not in self.args.sections:
            return
        cap = SHARES[name] * self.args.budget_s
        started = time.perf_counter()
        deadline = min(self.deadline - reserve, started + cap)
        record: dict[str, Any] = {"status": "running", "items": [], "notes": []}
        self.report["sections"][name] = record
        say(f"\n== {name} (up to {max(0.0, deadline - started):.0f} s)")
        try:
            if deadline - started < 5:
                raise SectionTimeout("no time left in the budget")
            body(record, deadline)
            failed = [i for i in record["items"] if "error" in i]
            record["status"] = "ok" if not failed else ("error" if len(failed) == len(record["items"]) else "partial")
        except SectionTimeout as exc:
            record["status"], record["error"] = "timeout", str(exc)
        except Exception as exc:  # the section's own code failed: record it, go on with the next
            record["status"], record["error"] = "error", one_line(exc)
            record["traceback"] = traceback.format_exc()[-3000:]
        finally:
            record["seconds"] = round(time.perf_counter() - started, 1)
            free_memory(self.plan.device)
            say(f"   {name}: {record['status']} in {record['seconds']:.0f} s"
                + (f" ({record['error']})" if "error" in record else ""))
            self.write_json()

    def item(self, record: dict, label: dict, fn: Callable[[], dict], deadline: float, cap: float,
             minimum: float = 3.0) -> dict | None:
        """Run one measurement under its own time limit; its result or error goes into ``record``."""
        entry = dict(label)
        record["items"].append(entry)
        limit = min(cap, deadline - time.perf_counter())
        if limit < minimum:
            entry["skipped"] = "budget"
            say(f"   {fmt_label(label)}: skipped (budget)")
            return None
        started = time.perf_counter()
        try:
            with time_limit(limit, fmt_label(label)):
                entry.update(fn())
            say(f"   {fmt_label(label)}: {fmt_result(entry)}")
            return entry
        except SectionTimeout as exc:
            entry["error"] = str(exc)
        except Exception as exc:  # one configuration failed (out of memory, a CUDA error, ...)
            entry["error"] = one_line(exc)
            if os.environ.get("GENKIT_DEBUG") == "1":
                entry["traceback"] = traceback.format_exc()[-3000:]
        finally:
            entry["wall_s"] = round(time.perf_counter() - started, 2)
            free_memory(self.plan.device)
        say(f"   {fmt_label(label)}: ERROR {entry['error']}")
        return None

    # -- one training run through the public API -----------------------------------------------
    def train(self, *, size: int, options: dict, batch: int, precision: str = "fp32", compile: bool = False,
              data_in: str | None = None, mode: str = "fused", workers: int = 0, limit: int | None = -1,
              log_every: int | None = None, observer: StepClock | None = None, keep: bool = False) -> dict:
        plan = self.plan
        limit = batch * plan.steps if limit == -1 else limit
        config = genkit.plan_run(data=_synthetic.NAME, data_options=options, image_size=size, limit=limit,
                                 batch_size=batch, epochs=1, log_every=log_every or plan.log_every,
                                 precision=precision, compile=compile, data_in=data_in or plan.data_in,
                                 device=str(plan.device), workers=workers, seed=0,
                                 conditioner_options={"mode": mode})
        self.runs += 1
        out = plan.work / "runs" / f"run-{self.runs:03d}"
        clock = observer or StepClock()
        started = time.perf_counter()
        genkit.train(config, out_dir=out, observer=clock, cache_dir=plan.cache)
        wall = time.perf_counter() - started
        if not clock.windows:
            raise RuntimeError("no measured window: the run was shorter than two logging windows")
        seconds = sum(w["seconds"] for w in clock.windows)
        steps = sum(w["steps"] for w in clock.windows)
        waits = [w["data_wait_s"] for w in clock.windows]
        result = {
            "images_per_s": round(statistics.median(w["steps"] * batch / w["seconds"] for w in clock.windows), 1),
            "step_ms": round(1000 * seconds / steps, 3),
            "data_wait_share": round(sum(waits) / seconds, 4) if all(w == w for w in waits) else None,
            "warmup_s": round(clock.warmup_s or 0.0, 2), "measured_steps": steps, "train_wall_s": round(wall, 2),
            "precision_used": "fp32" if any("bf16 is not supported" in m for m in clock.messages) else precision,
        }
        if compile:
            result["compiled"] = not any("torch.compile" in m for m in clock.messages)
        warnings = [m for m in clock.messages if m.startswith("warning")]
        if warnings:
            result["warnings"] = warnings
        if clock.records:
            result["epoch_s"] = clock.records[-1].get("seconds")
            result["epoch_images_per_s"] = round(clock.records[-1].get("images_per_s", 0.0), 1)
        if keep:
            result["run_dir"] = str(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
        return result

    # -- sections --------------------------------------------------------------------------------
    def data(self, record: dict, deadline: float) -> None:
        plan = self.plan
        sets = [("celeba-sized", plan.sizes[0], plan.celeba_options()),
                ("large", plan.sizes[1], plan.large_options()),
                ("wide (512 values)", plan.sizes[0], plan.wide_options())]
        for name, size, options in sets:
            def build(size=size, options=options):
                started = time.perf_counter()
                info, _ = genkit.prepare_dataset(_synthetic.NAME, image_size=size, cache_dir=plan.cache,
                                                 options=options)
                seconds = time.perf_counter() - started
                return {"images": info.count, "seconds": round(seconds, 2), "built": info.built,
                        "images_per_s": round(info.count / seconds, 1), "cache_mb": round(info.size_bytes / 2**20, 1),
                        "splits": info.split_sizes}
            self.item(record, {"dataset": name, "size": f"{size}x{size}"}, build, deadline, cap=float("inf"))

    def throughput(self, record: dict, deadline: float) -> None:
        plan = self.plan
        for size in plan.sizes:
            options = plan.celeba_options() if size == plan.sizes[0] else plan.large_options()
            for precision in ("fp32", "bf16"):
                for batch in plan.batches:
                    keep = self.sample_run is None and size == plan.sizes[0]
                    result = self.item(record, {"size": size, "precision": precision, "mode": "eager", "batch": batch},
                                       lambda: self.train(size=size, options=options, batch=batch,
                                                          precision=precision, keep=keep), deadline, cap=90)
                    if keep and result is not None:
                        self.sample_run = Path(result["run_dir"])

    def compile_matrix(self, record: dict, deadline: float) -> None:
        plan = self.plan
        small, large = plan.sizes
        b = plan.batches
        order = [(small, "bf16", b[2]), (small, "bf16", b[1]), (small, "fp32", b[2]), (small, "bf16", b[0]),
                 (small, "fp32", b[1]), (small, "fp32", b[0]), (large, "bf16", b[2]), (large, "bf16", b[1]),
                 (large, "fp32", b[2]), (large, "bf16", b[0]), (large, "fp32", b[1]), (large, "fp32", b[0])]
        record["notes"].append("each configuration compiled from scratch (torch.compiler.reset()), as one "
                               "`genkit train --compile` run would; the compile time is its warm-up_s, left out "
                               "of images/s")
        for k, (size, precision, batch) in enumerate(order):
            label = {"size": size, "precision": precision, "mode": "compile", "batch": batch}
            if k >= plan.compile_limit:
                record["items"].append({**label, "skipped": "--tiny runs only the first compiled configuration"})
                continue
            options = plan.celeba_options() if size == small else plan.large_options()

            def measure(size=size, options=options, precision=precision, batch=batch):
                torch.compiler.reset()
                return self.train(size=size, options=options, batch=batch, precision=precision, compile=True)
            self.item(record, label, measure, deadline, cap=240 if plan.tiny else 150, minimum=20)

    def data_wait(self, record: dict, deadline: float) -> None:
        plan = self.plan
        placements = (["gpu"] if plan.device.type == "cuda" else []) + ["ram", "disk"]
        if plan.device.type != "cuda":
            record["notes"].append("no CUDA device: --data-in gpu is not available; ram and disk only")
        record["notes"].append(f"{plan.sizes[0]}x{plan.sizes[0]}, bf16, eager, batch {plan.wait_batch}; disk with "
                               f"{plan.disk_workers} DataLoader workers. data wait: the loop's data_wait_s (GPU time "
                               "between CUDA events around each batch fetch; host time on a CPU) / step time")
        for placement in placements:
            workers = plan.disk_workers if placement == "disk" else 0
            self.item(record, {"data_in": placement, "workers": workers},
                      lambda: self.train(size=plan.sizes[0], options=plan.celeba_options(), batch=plan.wait_batch,
                                         precision="bf16", data_in=placement, workers=workers), deadline, cap=90)
        done = {i["data_in"]: i for i in record["items"] if "images_per_s" in i}
        base = done.get("gpu") or done.get("ram")
        for entry in done.values():
            entry["time_vs_fastest_placement"] = round(base["images_per_s"] / entry["images_per_s"], 3) if base else None

    def conditioning(self, record: dict, deadline: float) -> None:
        plan = self.plan
        precision = "bf16"
        record["notes"].append(f"{plan.sizes[0]}x{plan.sizes[0]}, {precision}, eager, batch {plan.cond_batch}; one "
                               "training step through genkit.train")
        for values, options in ((40, plan.celeba_options()), (512, plan.wide_options())):
            for mode in ("fused", "naive"):
                self.item(record, {"condition_values": values, "conditioning": mode},
                          lambda: self.train(size=plan.sizes[0], options=options, batch=plan.cond_batch,
                                             precision=precision, mode=mode), deadline, cap=90)
        step = {(i["condition_values"], i["conditioning"]): i["step_ms"] for i in record["items"] if "step_ms" in i}
        ratios = {}
        if (40, "fused") in step and (512, "fused") in step:
            ratios["fused_512_over_40"] = round(step[(512, "fused")] / step[(40, "fused")], 3)
        if (512, "fused") in step and (512, "naive") in step:
            ratios["naive_over_fused_512"] = round(step[(512, "naive")] / step[(512, "fused")], 3)
        if (40, "fused") in step and (40, "naive") in step:
            ratios["naive_over_fused_40"] = round(step[(40, "naive")] / step[(40, "fused")], 3)
        record["ratios"] = ratios

    def sampling(self, record: dict, deadline: float) -> None:
        plan = self.plan
        device = plan.device
        if self.sample_run is None:
            result = self.item(record, {"what": "a short training run to sample from"},
                               lambda: self.train(size=plan.sizes[0], options=plan.celeba_options(),
                                                  batch=plan.batches[0], keep=True), deadline, cap=60)
            if result is None:
                raise RuntimeError("no trained run to sample from")
            self.sample_run = Path(result["run_dir"])
        run = genkit.load_run(self.sample_run, device=str(device))
        n, attrs = plan.sample_batch, "a0,a3"
        condition, z = run.condition(attrs, n), run.latents(n, seed=0)
        repeats = 5 if plan.tiny else 20
        record["notes"].append(f"batch {n}, {plan.sizes[0]}x{plan.sizes[0]}, median of {repeats}; Run.sample returns "
                               "float images on the host (the copy included), model.sample leaves them on the device")

        def timed(fn):
            seconds = median_seconds(fn, device, repeats)
            return {"batch_ms": round(seconds * 1000, 3), "images_per_s": round(n / seconds, 1)}

        self.item(record, {"path": "Run.sample", "precision": "fp32"},
                  lambda: timed(lambda: run.sample(attrs, n=n, seed=0)), deadline, cap=60)
        self.item(record, {"path": "model.sample", "precision": "fp32"},
                  lambda: timed(lambda: run.model.sample(condition, z)), deadline, cap=60)

        def bf16():
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise RuntimeError("this GPU does not support bf16")
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                images = run.model.sample(condition, z)
                if not bool(torch.isfinite(images).all()):
                    raise RuntimeError("bf16 samples are not finite")
                return timed(lambda: run.model.sample(condition, z))
        self.item(record, {"path": "model.sample", "precision": "bf16 autocast"}, bf16, deadline, cap=60)

    def celeba_epoch(self, record: dict, deadline: float) -> None:
        plan = self.plan
        throughput = self.report["sections"].get("throughput", {}).get("items", [])
        candidates = [i for i in throughput if i.get("size") == plan.sizes[0] and i.get("precision") == "bf16"
                      and "images_per_s" in i]
        batch = max(candidates, key=lambda i: i["images_per_s"])["batch"] if candidates else plan.batches[-1]
        built = self.report["sections"].get("data", {}).get("items", [])
        if built and "seconds" in built[0]:
            record["cache"] = {k: built[0][k] for k in ("images", "seconds", "built", "images_per_s", "cache_mb")}
        train = plan.celeba_splits[0]
        record["notes"].append(f"the training split of the CelebA-sized set ({train} images of "
                               f"{sum(plan.celeba_splits)}), {plan.sizes[0]}x{plan.sizes[0]}, bf16, eager, batch "
                               f"{batch} (the best bf16 batch measured), data in {plan.data_in}, --log-every 25; "
                               "epoch_s is the loop's own epoch time (metrics.jsonl 'seconds')")
        self.item(record, {"images": train, "batch": batch},
                  lambda: self.train(size=plan.sizes[0], options=plan.celeba_options(), batch=batch, precision="bf16",
                                     limit=None, log_every=25), deadline, cap=float("inf"))

    def ddp(self, record: dict, deadline: float) -> None:
        plan = self.plan
        cuda = plan.device.type == "cuda"
        device = "cuda" if cuda else "cpu"
        worker = Path(__file__).resolve().parent / "_ddp_worker.py"
        runs = [("plain process", "none", device)]
        if cuda:
            runs.append(("torchrun, 1 process, NCCL", "nccl", device))
        else:
            record["notes"].append("no CUDA device: NCCL not run; gloo only (the NCCL run needs the GPU machine)")
        runs.append(("torchrun, 1 process, gloo", "gloo", device))
        record["notes"].append(f"{plan.ddp_limit} images {plan.sizes[0]}x{plan.sizes[0]}, batch {plan.ddp_batch}, "
                               "2 epochs, fp32, deterministic algorithms (warn-only), CUBLAS_WORKSPACE_CONFIG=:4096:8")
        env = {**os.environ, "GENKIT_CACHE": str(plan.cache), "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
               "PYTHONUNBUFFERED": "1"}
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for label, backend, run_device in runs:
            out = plan.work / "ddp" / backend

            def launch(label=label, backend=backend, run_device=run_device, out=out):
                shutil.rmtree(out, ignore_errors=True)
                args = [str(worker), "--backend", backend, "--device", run_device, "--out", str(out),
                        "--cache-dir", str(plan.cache), "--data-options", json.dumps(plan.celeba_options()),
                        "--size", str(plan.sizes[0]), "--limit", str(plan.ddp_limit), "--batch", str(plan.ddp_batch)]
                command = [sys.executable, *args] if backend == "none" else [
                    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]
                result = run_subprocess(command, env, timeout=max(5.0, min(180.0, deadline - time.perf_counter() - 2)))
                from safetensors.torch import load_file

                weights[label] = load_file(str(out / "model.safetensors"))
                loaded = genkit.load_run(out, device="cpu")  # the run folder loads back through the public API
                result["load_run"] = f"ok ({sum(p.numel() for p in loaded.model.parameters())} parameters)"
                return result
            entry = self.item(record, {"run": label}, launch, deadline, cap=float("inf"), minimum=10)
            if entry is None and backend == "gloo" and run_device == "cuda":
                # gloo's CUDA support is narrower than NCCL's: say so, and still check gloo on the CPU.
                out = plan.work / "ddp" / "gloo-cpu"
                record["notes"].append("gloo with CUDA tensors failed (see its row); gloo run again on the CPU, "
                                       "its weights compared within float tolerance")
                self.item(record, {"run": "torchrun, 1 process, gloo, CPU"},
                          lambda: launch("torchrun, 1 process, gloo, CPU", "gloo", "cpu", out), deadline,
                          cap=float("inf"), minimum=10)
        reference = weights.get("plain process")
        for entry in record["items"]:
            mine = weights.get(entry["run"])
            if reference is None or mine is None or entry["run"] == "plain process":
                continue
            diffs = [float((mine[k].float() - reference[k].float()).abs().max()) for k in reference]
            entry["max_abs_weight_diff_vs_plain"] = max(diffs)
            entry["identical_to_plain"] = all(torch.equal(mine[k], reference[k]) for k in reference)
        for entry in record["items"]:
            if "backend" in entry and entry["run"] != "plain process" and not entry.get("genkit_ddp"):
                entry["error"] = "genkit did not take its DDP path under torchrun (no process group, no all-reduce)"

    def profile(self, record: dict, deadline: float) -> None:
        plan = self.plan
        best = self.best_small()
        record["best_images_per_s"] = best["images_per_s"] if best else None
        if self.args.profile == "never" or (self.args.profile == "auto" and best is not None
                                            and best["images_per_s"] >= TARGET_IMAGES_PER_S):
            record["notes"].append("not run: " + ("--profile never" if self.args.profile == "never"
                                                  else "the 50,000 images/s target was met"))
            return
        eager = [i for i in self.report["sections"].get("throughput", {}).get("items", [])
                 if i.get("size") == plan.sizes[0] and "images_per_s" in i]
        pick = max(eager, key=lambda i: (i["precision_used"] == "bf16", i["images_per_s"])) if eager else \
            {"precision": "bf16", "batch": plan.batches[-1]}
        cuda = plan.device.type == "cuda"
        record["notes"].append(f"{plan.log_every} steps of {plan.sizes[0]}x{plan.sizes[0]}, {pick['precision']}, eager, "
                               f"batch {pick['batch']} (the best eager configuration), after a warm-up window")

        def measure():
            clock = ProfileClock(plan.device, start_step=plan.log_every, steps=plan.log_every)
            result = self.train(size=plan.sizes[0], options=plan.celeba_options(), batch=pick["batch"],
                                precision=pick["precision"], observer=clock)
            if clock.profiler is None or not clock.profiled_s:
                raise RuntimeError("the profiler did not cover the planned steps")
            averages = clock.profiler.key_averages()
            kernels = [e for e in averages if cuda and e.device_type == torch.autograd.DeviceType.CUDA]
            attr = "self_device_time_total" if kernels else "self_cpu_time_total"
            rows = kernels or list(averages)
            total = sum(getattr(e, attr) for e in rows) or 1.0
            top = sorted(rows, key=lambda e: getattr(e, attr), reverse=True)[:15]
            result.update({
                "batch": pick["batch"], "precision": pick["precision"], "profiled_steps": plan.log_every,
                "profiled_wall_ms": round(clock.profiled_s * 1000, 2), "timed": "GPU kernels" if kernels else "CPU ops",
                "busy_share": round(total / 1e6 / clock.profiled_s, 3) if kernels else None,
                "top": [{"name": e.key[:90], "calls": e.count, "self_ms": round(getattr(e, attr) / 1000, 3),
                         "share": round(getattr(e, attr) / total, 4)} for e in top],
                "table": averages.table(sort_by=attr, row_limit=15),
            })
            return result
        self.item(record, {"what": "torch.profiler"}, measure, deadline, cap=float("inf"))

    # -- results ---------------------------------------------------------------------------------
    def best_small(self) -> dict | None:
        items = [i for name in ("throughput", "compile") for i in self.report["sections"].get(name, {}).get("items", [])
                 if i.get("size") == self.plan.sizes[0] and i.get("precision_used") == "bf16" and "images_per_s" in i]
        return max(items, key=lambda i: i["images_per_s"]) if items else None

    def targets(self) -> None:
        sections = self.report["sections"]
        rows = []
        best = self.best_small()
        rows.append(target_row(f"training images/s, {self.plan.sizes[0]}x{self.plan.sizes[0]} bf16, best batch",
                               ">= 50,000", best["images_per_s"] if best else None,
                               lambda v: v >= TARGET_IMAGES_PER_S, lambda v: f"{v / TARGET_IMAGES_PER_S:.2f}x of target",
                               f"batch {best['batch']}, {best['mode']}" if best else "no bf16 measurement"))
        gpu = [i for i in sections.get("data_wait", {}).get("items", []) if i.get("data_in") == "gpu"]
        wait = gpu[0].get("data_wait_share") if gpu and "data_wait_share" in gpu[0] else None
        rows.append(target_row("GPU data wait share of step time (--data-in gpu)", "< 5%", wait,
                               lambda v: v < TARGET_DATA_WAIT, lambda v: f"{100 * v:.1f}%",
                               None if gpu else "no --data-in gpu measurement"))
        ratio = sections.get("conditioning", {}).get("ratios", {}).get("fused_512_over_40")
        rows.append(target_row("fused conditioning, 512 / 40 values step time", "<= 1.2x", ratio,
                               lambda v: v <= TARGET_CONDITION_RATIO, lambda v: f"{v:.2f}x", None))
        epoch = [i for i in sections.get("celeba_epoch", {}).get("items", []) if "epoch_s" in i]
        seconds = epoch[0]["epoch_s"] if epoch else None
        rows.append(target_row(f"CelebA-sized epoch ({self.plan.celeba_splits[0]:,} training images), training time",
                               "< 10 s", seconds,
                               lambda v: v < TARGET_EPOCH_S, lambda v: f"{v:.1f} s",
                               None if not self.plan.tiny else "--tiny: a 1,600-image set, not CelebA-sized"))
        self.report["targets"] = rows


def target_row(name: str, target: str, value, ok: Callable, show: Callable, note: str | None) -> dict:
    row = {"target": name, "wanted": target, "measured": value, "met": None if value is None else bool(ok(value)),
           "shown": show(value) if value is not None else "not measured"}
    if note:
        row["note"] = note
    return row


def run_subprocess(command: list[str], env: dict, timeout: float) -> dict:
    """Run ``command`` in its own process group; on timeout the whole group is killed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise RuntimeError(f"timed out after {timeout:.0f} s; last output: {tail(output)}") from None
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    lines = [line for line in output.splitlines() if line.startswith("GENKIT_DDP_RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"exit code {process.returncode}; last output: {tail(output)}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in (text or "").strip().splitlines()[-lines:])[-1200:]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:600]


def say(text: str) -> None:
    print(text, flush=True)


def fmt_label(label: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in label.items())


def fmt_result(entry: dict) -> str:
    parts = []
    for key, unit in (("images_per_s", "img/s"), ("step_ms", "ms/step"), ("batch_ms", "ms/batch"),
                      ("seconds", "s"), ("epoch_s", "s epoch")):
        if key in entry:
            parts.append(f"{entry[key]:,.1f} {unit}" if isinstance(entry[key], float) else f"{entry[key]} {unit}")
    if entry.get("data_wait_share") is not None:
        parts.append(f"data wait {100 * entry['data_wait_share']:.1f}%")
    if "backend" in entry:
        parts.append(f"backend {entry['backend']}")
    return ", ".join(parts) or "ok"


def environment(device: torch.device) -> dict:
    env = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
           "genkit": genkit.__version__, "device": str(device), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": torch.cuda.get_device_name(device), "capability": f"{props.major}.{props.minor}",
                    "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported(),
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32})
    return env


# -- the printed tables -------------------------------------------------------------------------

def cell(entry: dict, key: str, fmt: str = "{:,.0f}") -> str:
    if "error" in entry:
        return "ERROR" if key in ("images_per_s", "step_ms", "seconds", "batch_ms") else ""
    if "skipped" in entry:
        return "skipped" if key in ("images_per_s", "seconds", "batch_ms") else ""
    value = entry.get(key)
    if value is None:
        return ""
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def note(entry: dict) -> str:
    parts = []
    if "error" in entry:
        parts.append(entry["error"][:160])
    if "skipped" in entry:
        parts.append(str(entry["skipped"]))
    if entry.get("precision_used") and entry.get("precision") and entry["precision_used"] != entry["precision"]:
        parts.append(f"ran {entry['precision_used']}")
    if entry.get("compiled") is False:
        parts.append("compile fell back to eager")
    return "; ".join(parts)


def tables(report: dict) -> list[tuple[str, tuple, list[tuple]]]:
    s = report["sections"]
    out = []
    pct = "{:.1%}"
    if "data" in s:
        out.append(("Synthetic datasets through genkit's HDF5 cache", ("dataset", "size", "images", "build s", "images/s",
                                                                        "MiB", "note"),
                    [(i["dataset"], i["size"], cell(i, "images"), cell(i, "seconds", "{:.1f}"), cell(i, "images_per_s"),
                      cell(i, "cache_mb"), note(i) or ("" if i.get("built", True) else "cache reused"))
                     for i in s["data"]["items"]]))
    rows = [i for name in ("throughput", "compile") for i in s.get(name, {}).get("items", [])]
    if rows:
        out.append(("Training images/s (default cvae, genkit.train, data on the device)",
                    ("size", "precision", "mode", "batch", "images/s", "ms/step", "warm-up s", "note"),
                    [(f"{i['size']}x{i['size']}", i["precision"], i["mode"], i["batch"], cell(i, "images_per_s"),
                      cell(i, "step_ms", "{:.2f}"), cell(i, "warmup_s", "{:.1f}"), note(i)) for i in rows]))
    if "data_wait" in s:
        out.append(("Data wait (share of step time the device waits for batches)",
                    ("--data-in", "workers", "images/s", "ms/step", "data wait", "time vs fastest", "note"),
                    [(i["data_in"], i["workers"], cell(i, "images_per_s"), cell(i, "step_ms", "{:.2f}"),
                      cell(i, "data_wait_share", pct), cell(i, "time_vs_fastest_placement", "{:.2f}x"), note(i))
                     for i in s["data_wait"]["items"]]))
    if "conditioning" in s:
        ratios = s["conditioning"].get("ratios", {})
        out.append(("Conditioning: fused vs naive " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
                    ("condition values", "conditioning", "ms/step", "images/s", "note"),
                    [(i["condition_values"], i["conditioning"], cell(i, "step_ms", "{:.2f}"), cell(i, "images_per_s"),
                      note(i)) for i in s["conditioning"]["items"]]))
    if "sampling" in s:
        out.append(("Sampling", ("path", "precision", "ms/batch", "images/s", "note"),
                    [(i.get("path", i.get("what", "")), i.get("precision", ""), cell(i, "batch_ms", "{:.2f}"),
                      cell(i, "images_per_s"), note(i)) for i in s["sampling"]["items"]]))
    if "celeba_epoch" in s:
        out.append(("CelebA-sized epoch, trained from the cache",
                    ("images", "batch", "epoch s", "epoch images/s", "steady images/s", "genkit.train wall s", "note"),
                    [(i["images"], i["batch"], cell(i, "epoch_s", "{:.2f}"), cell(i, "epoch_images_per_s"),
                      cell(i, "images_per_s"), cell(i, "train_wall_s", "{:.1f}"), note(i))
                     for i in s["celeba_epoch"]["items"]]))
    if "ddp" in s:
        out.append(("Distributed: torchrun, one process", ("run", "backend", "genkit DDP", "device", "wall s",
                                                          "train loss", "max |w - plain|", "identical", "note"),
                    [(i["run"], i.get("backend", ""), cell(i, "genkit_ddp"), i.get("device", ""), cell(i, "process_wall_s", "{:.1f}"),
                      cell(i, "train_loss", "{:.2f}"), cell(i, "max_abs_weight_diff_vs_plain", "{:.2e}"),
                      cell(i, "identical_to_plain"), note(i)) for i in s["ddp"]["items"]]))
    for entry in s.get("profile", {}).get("items", []):
        if "top" in entry:
            busy = f", device busy {entry['busy_share']:.0%} of the profiled wall time" if entry.get("busy_share") else ""
            out.append((f"Profile: top {entry['timed']} over {entry['profiled_steps']} steps "
                        f"({entry['profiled_wall_ms']:.1f} ms{busy})", ("name", "calls", "self ms", "share"),
                        [(t["name"], t["calls"], f"{t['self_ms']:.3f}", f"{t['share']:.1%}") for t in entry["top"]]))
    if report.get("targets"):
        out.append(("Targets", ("target", "wanted", "measured", "met", "note"),
                    [(t["target"], t["wanted"], t["shown"], {True: "yes", False: "NO", None: "-"}[t["met"]],
                      t.get("note", "")) for t in report["targets"]]))
    return out


def print_tables(report: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a genkit dependency
        Console = None
    console = Console(width=160) if Console else None
    for title, header, rows in tables(report):
        if console is None:
            print(f"\n{title}\n{table(rows, header)}")
            continue
        t = Table(title=title, title_justify="left")
        for h in header:
            t.add_column(str(h), overflow="fold")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        console.print(t)
    for name, record in report["sections"].items():
        if record.get("status") not in ("ok", None):
            print(f"section {name}: {record['status']}" + (f" ({record['error']})" if "error" in record else ""))
        for text in record.get("notes", []):
            print(f"  {name}: {text}")


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and few steps: a dry run of every part")
    parser.add_argument("--json-out", default="gpu-benchmark.json", help="where the JSON results go")
    parser.add_argument("--budget-s", type=float, default=460.0, help="time limit of the whole run in seconds")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of: "
                        + ", ".join(SECTIONS))
    parser.add_argument("--work-dir", default=None, help="caches and run folders (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="auto: profile only when the 50,000 images/s target is missed")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if args.budget_s <= 0:
        parser.error(f"--budget-s {args.budget_s} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
            else torch.device(args.device)
    except RuntimeError:
        print(f"error: --device {args.device!r} is not valid; use auto, cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} asked for, but no CUDA GPU is available; use --device cpu --tiny",
              file=sys.stderr)
        return 2
    if device.type not in ("cpu", "cuda"):
        print(f"error: --device {args.device!r} is not supported; use auto, cpu, cuda or cuda:N", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    elif not args.tiny:
        say("note: no --tiny on a CPU: the full sizes will take far longer than the budget allows")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="genkit-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    plan = Plan(device=device, tiny=args.tiny, work=work)
    _synthetic.register()
    bench = Bench(args, plan)
    say(f"genkit GPU benchmark: {bench.report['environment']['machine']}")
    say(f"device {device}, budget {args.budget_s:.0f} s, work folder {work}, JSON to {args.json_out}")
    try:
        bench.section("data", bench.data)
        bench.section("throughput", bench.throughput)
        bench.section("data_wait", bench.data_wait)
        bench.section("conditioning", bench.conditioning)
        bench.section("sampling", bench.sampling)
        bench.section("celeba_epoch", bench.celeba_epoch)
        bench.section("ddp", bench.ddp)
        bench.section("compile", bench.compile_matrix, reserve=PROFILE_RESERVE * args.budget_s)
        bench.section("profile", bench.profile)
    finally:
        bench.targets()
        bench.write_json()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_tables(bench.report)
    for entry in bench.report["sections"].get("profile", {}).get("items", []):
        if "table" in entry:
            print("\ntorch.profiler, sorted by self time:\n" + entry["table"])
    say(f"\nwall time {bench.report['wall_s']:.0f} s; results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

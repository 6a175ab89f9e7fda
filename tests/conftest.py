"""Shared fixtures and helpers. Every test session gets its own cache directory, never the user's.

The helpers run genkit as a user does: :func:`cli` and :func:`invoke` in this process (a fresh
application each time, so plugins a test registers are seen), :func:`run_genkit` as
``python -m genkit`` in a subprocess; :func:`error_line` checks the one-line, exit-2 form of bad
input. Tests import them with ``from conftest import ...``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner, Result


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("genkit-cache")
    os.environ["GENKIT_CACHE"] = str(path)
    os.environ.pop("GENKIT_DATA_ROOT", None)
    return path


@pytest.fixture(scope="session")
def tiny_shapes_options() -> dict:
    """A small shapes set: enough for every split, fast to build."""
    return {"count": 160, "seed": 3}


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


def invoke(args: list[str]) -> Result:
    """``genkit ARGS`` in this process, on a freshly built application."""
    from genkit.cli.app import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def cli(*args: str) -> tuple[int, str]:
    """``genkit ARGS`` in this process: the exit code and the output with white space collapsed."""
    result = invoke(list(args))
    return result.exit_code, " ".join(result.output.split())


def error_line(result: Result) -> str:
    """The one line a bad input prints; fails unless the exit code is 2 and the line is alone."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return " ".join(lines[0].split())


def env_with_path(folder: Path, disable: str | None = None) -> dict[str, str]:
    """This environment with ``folder`` first on ``PYTHONPATH`` (where a test installed plugins).

    ``GENKIT_DISABLE_PLUGINS`` is cleared, or set to ``disable`` when given.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    env.pop("GENKIT_DISABLE_PLUGINS", None)
    if disable is not None:
        env["GENKIT_DISABLE_PLUGINS"] = disable
    return env


@contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path | None]:
    """A small tmpfs mounted at ``mount`` for the block (``options`` such as ``"size=1M"``), unmounted after;
    None where this machine does not let the tests mount one."""
    mount.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True).returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)])


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C a server started with ``subprocess.Popen(..., text=True)``: its exit code and its stderr."""
    import signal

    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def run_genkit(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m genkit ARGS`` in a subprocess, output captured as text."""
    return subprocess.run([sys.executable, "-m", "genkit", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


#: a tiny flow on 160 shapes images at 16x16, trained in seconds (``genkit train --model flow`` flags)
FLOW_E2E = ["--data-opt", "count=160", "--data-opt", "seed=5", "--image-size", "16", "--model-opt", "channels=[8,16]",
            "--model-opt", "blocks=1", "--model-opt", "embedding=16", "--device", "cpu"]


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory, _isolated_cache) -> Path:
    """A flow run trained for one epoch with the defaults of a new run (attribute dropout: ``--rest model``)."""
    out = tmp_path_factory.mktemp("flow") / "run"
    result = invoke(["train", "--model", "flow", *FLOW_E2E, "--epochs", "1", "--out", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _isolated_cache) -> Path:
    """A run trained for one epoch on 320 shapes images at 16x16: enough to sample from, in seconds."""
    import genkit

    out = tmp_path_factory.mktemp("tiny-run") / "shapes16"
    config = genkit.plan_run("cvae", "shapes", data_options={"count": 320, "seed": 5}, image_size=16,
                             model_options={"latent_dim": 4}, epochs=1, batch_size=32, device="cpu")
    genkit.train(config, out_dir=out)
    return out


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height, with a few bytes of data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))

"""The ``genkit`` command line: train, sample, plugins, data; plugins may add commands.

Every :class:`genkit.GenkitError` raised by a command becomes one line on stderr and its exit
code (2 for bad input, 1 for runtime failures); an ``OSError`` that escaped is a runtime
failure too (1), and so is running out of memory anywhere: Python's ``MemoryError``, PyTorch's
``torch.OutOfMemoryError`` (a GPU) or the ``RuntimeError`` its CPU allocator raises ("can't
allocate memory"). Ctrl-C exits 130 and SIGTERM 143, after the work in progress has
cleaned up after itself. No traceback is shown; set ``GENKIT_DEBUG=1`` to see one.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Iterator

import typer
from typer.core import TyperGroup

from genkit.cli import console
from genkit.errors import GenkitError


class SignalInterrupt(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs; exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def debugging() -> bool:
    return os.environ.get("GENKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds like Ctrl-C (``finally`` blocks remove partial files)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SignalInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class GenkitGroup(TyperGroup):
    """Turns genkit's errors into one-line messages and exit codes instead of tracebacks."""

    def invoke(self, ctx):
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except GenkitError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            _fail(ctx, f"interrupted by {signal.Signals(signum).name}; unfinished files were removed", 128 + signum)
        except MemoryError:
            _fail(ctx, OUT_OF_MEMORY, 1)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one; so is the CPU allocator's failure
            if not out_of_memory(exc):
                raise
            _fail(ctx, f"{OUT_OF_MEMORY} ({out_of_memory(exc)})", 1)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(ctx, f"{exc.strerror or exc}{where}", 1)


OUT_OF_MEMORY = "out of memory; ask for less (a smaller --batch-size, --image-size, --n or --samples)"
#: how PyTorch's allocators say they ran out: CUDA/MPS "out of memory", the CPU allocator "can't allocate memory"
_OOM = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.I)
_TRIED = re.compile(r"allocate\s+(?:(\d+) bytes|([\d.]+\s*[KMGT]i?B))", re.I)


def out_of_memory(exc: BaseException) -> str:
    """What an exception says about running out of memory, in a few words ('' when it is not that)."""
    text = " ".join(str(exc).split())
    if not (type(exc).__name__ == "OutOfMemoryError" or _OOM.search(text)):
        return ""
    tried = _TRIED.search(text)
    if tried is None:
        return "an allocation failed"
    from genkit.runtime.memory import format_bytes

    return f"it tried to allocate {format_bytes(int(tried.group(1))) if tried.group(1) else tried.group(2)}"


def _fail(ctx, message: str, code: int) -> None:
    if debugging():
        traceback.print_exc()
    console.error(message)
    ctx.exit(code)


#: commands that read only files: ``genkit runs ...`` is dispatched to an application holding just them
LIGHT_COMMANDS = ("runs",)


def build_app(light: bool = False) -> typer.Typer:
    """A fresh application with the built-in commands and every plugin's ``register_commands``;
    ``light``: only :data:`LIGHT_COMMANDS`, without the plugins (and so without torch)."""
    from genkit.cli import runs_cmd

    app = typer.Typer(cls=GenkitGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Attribute-conditioned generative image models, built from plugins.")
    app.add_typer(runs_cmd.app, name="runs")
    _add_root_options(app)
    if light:
        return app
    from genkit.cli import (classifier_cmd, data_cmd, edit_cmd, evaluate_cmd, plugins_cmd, reconstruct_cmd, sample_cmd,
                            serve_cmd, sweep_cmd, train_cmd)
    from genkit.cli.component_flags import CONTEXT_SETTINGS, ComponentCommand
    from genkit.cli.sampling_flags import CONTEXT_SETTINGS as SAMPLING_CONTEXT, SamplingCommand
    from genkit.components.loading import load_plugins, pm
    from genkit.errors import PluginError

    app.command("train", cls=ComponentCommand, context_settings=CONTEXT_SETTINGS)(train_cmd.train)
    app.command("sample", cls=SamplingCommand, context_settings=SAMPLING_CONTEXT)(sample_cmd.sample)
    app.command("serve", cls=SamplingCommand, context_settings=SAMPLING_CONTEXT)(serve_cmd.serve)
    app.command("plugins")(plugins_cmd.plugins)
    app.add_typer(data_cmd.app, name="data")
    app.command("evaluate", cls=SamplingCommand, context_settings=SAMPLING_CONTEXT)(evaluate_cmd.evaluate)
    app.command("reconstruct", cls=SamplingCommand, context_settings=SAMPLING_CONTEXT)(reconstruct_cmd.reconstruct)
    app.command("edit", cls=SamplingCommand, context_settings=SAMPLING_CONTEXT)(edit_cmd.edit)
    app.command("sweep", cls=ComponentCommand, context_settings=CONTEXT_SETTINGS)(sweep_cmd.sweep)
    app.add_typer(classifier_cmd.app, name="classifier")
    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(**{arg: app for arg in impl.argnames})
        except Exception as exc:
            console.error(str(PluginError(impl.plugin_name, f"raised while adding commands ({type(exc).__name__}: {exc})")))
    return app


def _add_root_options(app: typer.Typer) -> None:
    def _print_version(value: bool) -> None:
        if value:
            from genkit import __version__

            console.out.print(f"genkit {__version__}", highlight=False)
            raise typer.Exit()

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", help="Print genkit's version and exit.",
                                           is_eager=True, callback=_print_version)) -> None:
        """Attribute-conditioned generative image models, built from plugins."""


def main() -> None:
    # `genkit runs` reads JSON files: it needs neither torch nor the plugins, so it starts in a blink.
    app = build_app(light=sys.argv[1:2] == ["runs"])
    try:
        app()
    except GenkitError as exc:  # raised outside a command, e.g. while parsing
        if debugging():
            traceback.print_exc()
        console.error(str(exc))
        sys.exit(exc.exit_code)

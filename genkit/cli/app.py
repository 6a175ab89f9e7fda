"""The ``genkit`` command line: train, sample, plugins, data; plugins may add commands.

Every :class:`genkit.GenkitError` raised by a command becomes one line on stderr and its exit
code (2 for bad input, 1 for runtime failures); an ``OSError`` or ``MemoryError`` that escaped
is a runtime failure too (1). Ctrl-C exits 130 and SIGTERM 143, after the work in progress has
cleaned up after itself. No traceback is shown; set ``GENKIT_DEBUG=1`` to see one.
"""

from __future__ import annotations

import os
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
            _fail(ctx, "out of memory; ask for less (a smaller --batch-size, --image-size or --n)", 1)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(ctx, f"{exc.strerror or exc}{where}", 1)


def _fail(ctx, message: str, code: int) -> None:
    if debugging():
        traceback.print_exc()
    console.error(message)
    ctx.exit(code)


def build_app() -> typer.Typer:
    """A fresh application with the built-in commands and every plugin's ``register_commands``."""
    from genkit.cli import (classifier_cmd, data_cmd, edit_cmd, evaluate_cmd, plugins_cmd, reconstruct_cmd,
                            sample_cmd, serve_cmd, sweep_cmd, train_cmd)
    from genkit.cli.component_flags import CONTEXT_SETTINGS, ComponentCommand
    from genkit.cli.sampling_flags import CONTEXT_SETTINGS as SAMPLING_CONTEXT, SamplingCommand
    from genkit.errors import PluginError
    from genkit.plugins import load_plugins, pm

    app = typer.Typer(cls=GenkitGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Attribute-conditioned generative image models, built from plugins.")
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

    def _print_version(value: bool) -> None:
        if value:
            from genkit import __version__

            console.out.print(f"genkit {__version__}", highlight=False)
            raise typer.Exit()

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", help="Print genkit's version and exit.",
                                           is_eager=True, callback=_print_version)) -> None:
        """Attribute-conditioned generative image models, built from plugins."""

    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(**{arg: app for arg in impl.argnames})
        except Exception as exc:
            console.error(str(PluginError(impl.plugin_name, f"raised while adding commands ({type(exc).__name__}: {exc})")))
    return app


def main() -> None:
    app = build_app()
    try:
        app()
    except GenkitError as exc:  # raised outside a command, e.g. while parsing
        if debugging():
            traceback.print_exc()
        console.error(str(exc))
        sys.exit(exc.exit_code)

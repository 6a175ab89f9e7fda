"""The ``genkit`` command line: train, sample, plugins, data; plugins may add commands.

Every :class:`genkit.GenkitError` raised by a command becomes one line on stderr and its exit
code (2 for bad input, 1 for runtime failures); Ctrl-C exits 130.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from genkit.cli import console
from genkit.errors import GenkitError


class GenkitGroup(TyperGroup):
    """Turns genkit's errors into one-line messages and exit codes instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GenkitError as exc:
            console.error(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.error("interrupted")
            ctx.exit(130)


def build_app() -> typer.Typer:
    """A fresh application with the built-in commands and every plugin's ``register_commands``."""
    from genkit.cli import (classifier_cmd, data_cmd, evaluate_cmd, plugins_cmd, reconstruct_cmd, sample_cmd,
                            serve_cmd, sweep_cmd, train_cmd)
    from genkit.cli.component_flags import CONTEXT_SETTINGS, ComponentCommand
    from genkit.errors import PluginError
    from genkit.plugins import load_plugins, pm

    app = typer.Typer(cls=GenkitGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Attribute-conditioned generative image models, built from plugins.")
    app.command("train", cls=ComponentCommand, context_settings=CONTEXT_SETTINGS)(train_cmd.train)
    app.command("sample")(sample_cmd.sample)
    app.command("serve")(serve_cmd.serve)
    app.command("plugins")(plugins_cmd.plugins)
    app.add_typer(data_cmd.app, name="data")
    app.command("evaluate")(evaluate_cmd.evaluate)
    app.command("reconstruct")(reconstruct_cmd.reconstruct)
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
        console.error(str(exc))
        sys.exit(exc.exit_code)

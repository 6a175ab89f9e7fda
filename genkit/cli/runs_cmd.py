"""``genkit runs [PATH...]`` lists run folders; ``genkit runs diff A B`` compares two.

Both read JSON files only (:mod:`genkit.store.run_index`); ``genkit runs`` is dispatched without loading
torch or the plugins (see :func:`genkit.cli.app.main`), so it answers at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from genkit.cli import console

DEFAULT_PATH = Path("runs")


class RunsGroup(TyperGroup):
    """``genkit runs ARGS`` is ``genkit runs list ARGS`` unless ARGS starts with a subcommand (or --help)."""

    default_command = "list"

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=RunsGroup, no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False,
                  help="Find and compare run folders: `genkit runs [PATH...]` lists them (the same as `genkit runs "
                       "list`), `genkit runs diff A B` sets two side by side. Reads JSON files only.")


@app.command("list")
def list_runs(
    paths: Optional[list[Path]] = typer.Argument(
        None, help="Run folders, or folders searched for them (sweeps included); default: runs."),
    sort: str = typer.Option("name", "--sort", "-s",
                             help="Column to sort by, best first: name, model, loss, data, epochs, val_loss (or any "
                                  "val_<term>), attribute_ratio, weakest, diversity_ratio, fd."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout."),
) -> None:
    """A table of the runs under PATHS: model, loss, data, epochs, last validation terms, evaluation figures.

    Folders that are not genkit runs, cannot be read or are damaged get a line marked `!` after the
    table (in --json, a row whose status says which).
    """
    from genkit.store.run_index import find_runs, sort_rows

    rows = sort_rows(find_runs(paths or [DEFAULT_PATH]), sort)
    if as_json:
        _print_json([row.to_json() for row in rows])
        return
    runs = [row for row in rows if row.config is not None]
    if runs:
        console.out.print(runs_table(runs), highlight=False, markup=False)
    else:
        where = ", ".join(str(p) for p in (paths or [DEFAULT_PATH]))
        console.err.print(f"no runs under {where}", highlight=False, markup=False)
    for row in rows:
        if row.problem:
            console.out.print(f"! {row.name}: {row.problem}", highlight=False, markup=False)


@app.command("diff")
def diff(
    a: Path = typer.Argument(..., help="A run folder."),
    b: Path = typer.Argument(..., help="Another run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
) -> None:
    """The settings in which two runs differ (config.json paths) and both runs' figures, side by side."""
    from genkit.store.run_index import diff_runs, load_for_diff

    first, second = load_for_diff(a), load_for_diff(b)
    result = diff_runs(first, second)
    if as_json:
        _print_json(result)
        return
    from rich.table import Table

    if result["settings"]:
        settings = Table("setting", *_headers(first.name, second.name), title="settings that differ")
        for key, x, y in result["settings"]:
            settings.add_row(*_texts(key, _cell(x), _cell(y)))
        _print_table(settings)
    else:
        console.out.print("the two configs are the same", highlight=False, markup=False)
    split = f", evaluation on {result['split']}" if result["split"] else ", no evaluation both have"
    metrics = Table("metric", *_headers(first.name, second.name), title=f"figures (last epoch{split})")
    for key, x, y in result["metrics"]:
        metrics.add_row(*_texts(key, _cell(x), _cell(y)))
    _print_table(metrics)
    for row in (first, second):
        if row.problem:
            console.out.print(f"! {row.name}: {row.problem}", highlight=False, markup=False)


#: the columns of `genkit runs`
COLUMNS = ("run", "model", "loss", "data", "epochs", "val loss", "val terms", "attr ratio", "weakest", "div ratio",
           "fd")


def runs_table(rows) -> str:
    """The runs as plain aligned columns: nothing cut short (names are pasted into other commands),
    easy to grep, and quick for hundreds of runs."""
    table = [list(COLUMNS)]
    for row in rows:
        c = row.config
        terms = row.validation
        figures = row.figures()
        weakest = "-" if figures["weakest_accuracy"] is None else \
            f"{figures['weakest_attribute']} {_cell(figures['weakest_accuracy'])}"
        epochs = f"{'?' if row.epochs_done is None else row.epochs_done}/{c.train.epochs}"
        table.append([("! " if row.problem else "") + row.name, c.model.name, c.loss.name,
                      f"{c.data.name} {c.data.image_size[0]}x{c.data.image_size[1]}", epochs,
                      _headline(row.headline, terms.pop(row.headline, None)),
                      " ".join(f"{k[4:]} {_cell(v)}" for k, v in terms.items()) or "-",
                      _cell(figures["attribute_ratio"]), weakest, _cell(figures["diversity_ratio"]),
                      _cell(figures["fd"])])
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)


def _headline(term: str, value: float | None) -> str:
    """The run's validation figure: the loss, or the term its model or loss declared, named."""
    return _cell(value) if term == "val_loss" else f"{term[4:]} {_cell(value)}"


def _print_json(document: Any) -> None:
    """Plain indented JSON (rich's highlighting costs more than reading hundreds of runs)."""
    console.out.print(json.dumps(document, indent=2), highlight=False, markup=False)


def _print_table(table) -> None:
    """A table at the terminal's width; into a pipe or a file, as wide as it needs (nothing cut)."""
    from rich.console import Console
    from rich.measure import Measurement

    if console.out.is_terminal:
        console.out.print(table)
        return
    unbounded = console.out.options.update_width(10_000)
    width = max(console.out.width, Measurement.get(console.out, unbounded, table).maximum)
    Console(width=width, no_color=console.out.no_color).print(table)


def _headers(*names: str) -> list[Any]:
    from rich.table import Column
    from rich.text import Text

    return [Column(header=Text(name), overflow="fold") for name in names]


def _texts(*cells: str) -> list[Any]:
    """Cells shown as they are (a folder name may hold brackets, which rich would take for markup)."""
    from rich.text import Text

    return [Text(cell) for cell in cells]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)

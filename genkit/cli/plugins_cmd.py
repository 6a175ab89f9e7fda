"""``genkit plugins``."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from genkit.cli import console


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List installed plugins, their versions, and the components each registers."""
    from genkit.plugins import list_plugins, plugin_errors

    infos = list_plugins()
    errors = plugin_errors()
    if as_json:
        payload = {
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                         "components": p.components, "hooks": p.hooks} for p in infos],
            "errors": [{"plugin": e.plugin, "message": e.message} for e in errors],
        }
        console.out.print_json(json.dumps(payload))
        return
    table = Table("plugin", "version", "components", "hooks", title="genkit plugins")
    for p in infos:
        components = "\n".join(f"{kind[:-1] if kind != 'losses' else 'loss'}: {', '.join(names)}"
                               for kind, names in sorted(p.components.items()))
        version = f"{p.distribution} {p.version}" if p.distribution else (p.version or "-")
        table.add_row(p.name, version, components or "-", ", ".join(p.hooks))
    console.out.print(table)
    for e in errors:
        console.err.print(f"[yellow]plugin problem:[/] {e}", highlight=False)

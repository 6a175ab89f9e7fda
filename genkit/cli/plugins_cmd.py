"""``genkit plugins``."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from genkit.cli import console


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List installed plugins, their versions, and the components each registers (--json: with their descriptions)."""
    from genkit.components.loading import list_plugins, plugin_errors, registry

    infos = list_plugins()
    errors = plugin_errors()
    if as_json:
        def descriptions(components: dict[str, list[str]]) -> dict[str, dict[str, str]]:
            return {kind: {name: registry(kind).get(name).description for name in names if name in registry(kind)}
                    for kind, names in components.items()}

        payload = {
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                         "components": p.components, "descriptions": descriptions(p.components), "hooks": p.hooks}
                        for p in infos],
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

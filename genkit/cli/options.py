"""Parsing of repeated ``KEY=VALUE`` component options."""

from __future__ import annotations

import json
from typing import Any

from genkit.errors import UsageError


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["latent_dim=16", "channels=[16,32]"]`` to ``{"latent_dim": 16, "channels": [16, 32]}``.

    Values are read as JSON when they parse (numbers, lists, true/false), else kept as strings.
    Dashes in keys become underscores, so ``latent-dim=16`` works too.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"{flag} {pair!r} is not KEY=VALUE; for example {flag} latent_dim=16")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options

"""Exceptions that the CLI turns into one-line messages.

`UsageError` is bad input the user can fix (exit code 2); `GenkitRuntimeError` is a failure
while doing valid work (exit code 1). Library code raises these instead of printing. The three
base classes live in :mod:`genkit_datasets.errors`, the lowest layer, and are re-exported here
unchanged, so one ``except genkit.UsageError`` catches errors from either package.
"""

from __future__ import annotations

from genkit_datasets.errors import GenkitError, GenkitRuntimeError, UsageError, shown

__all__ = ["GenkitError", "GenkitRuntimeError", "PluginError", "UsageError", "shown"]


class PluginError(GenkitError):
    """A plugin that failed to load or register; carries the plugin's name."""

    def __init__(self, plugin: str, message: str):
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin
        self.message = message

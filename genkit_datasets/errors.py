"""The errors every genkit layer raises, defined here at the bottom so the data layer needs nothing above it.

`UsageError` is bad input the user can fix (exit code 2); `GenkitRuntimeError` is a failure
while doing valid work (exit code 1). ``genkit`` re-exports these very classes
(``genkit.UsageError is genkit_datasets.errors.UsageError``), so ``except genkit.UsageError``
catches an error raised by a dataset reader.
"""

from __future__ import annotations

#: longest value echoed back in a message; longer ones are cut, saying how long they were
SHOWN_CHARS = 60


def shown(value: object, limit: int = SHOWN_CHARS, quote: bool = True) -> str:
    """A value for a message: ``repr`` of text (plain ``str`` of anything else, or with
    ``quote=False``), cut to ``limit`` characters.

    A megabyte of ``--attrs`` must not come back whole: ``'aaaa…' (1048576 characters)``.
    """
    quote = quote and isinstance(value, str)
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text) if quote else text
    cut = text[:limit] + "…"
    return f"{cut!r} ({len(text)} characters)" if quote else f"{cut} ({len(text)} characters)"


class GenkitError(Exception):
    """Base class of every error genkit reports to users."""

    exit_code = 1


class UsageError(GenkitError, ValueError):
    """Bad input: an unknown name, a value out of range, a missing file. Exit code 2."""

    exit_code = 2


class GenkitRuntimeError(GenkitError, RuntimeError):
    """A valid request that failed while running (diverging loss, I/O failure). Exit code 1."""

    exit_code = 1

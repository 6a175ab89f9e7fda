"""Bounding work before allocating it: how much memory there is, and refusing what cannot fit.

genkit sizes every large allocation (a model built from an image size, a split held in RAM, a
sample grid) against the memory the kernel reports as *available* (``MemAvailable`` in
``/proc/meminfo``: free pages plus the page cache and other memory it can reclaim), not the
free pages alone, which are small right after a cache build fills the page cache. Work that
cannot fit is refused with one line naming what was asked, what it needs and what there is,
before anything is allocated.
"""

from __future__ import annotations

import os
from pathlib import Path

from genkit.errors import UsageError

MEMINFO = Path("/proc/meminfo")
#: used when the platform reports nothing (a guess that keeps small work possible)
UNKNOWN_AVAILABLE = 4 << 30
#: share of available memory one allocation may take: the rest is left to the process and the system
ALLOCATION_SHARE = 0.5


def available_bytes() -> int:
    """Memory the kernel can give this process now: MemAvailable, else free pages (sysconf)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_AVAILABLE


def format_bytes(n: float) -> str:
    """``2.0 GB``, ``512 MB``, ``3.1 TB``: decimal units, two significant figures or more."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def require_memory(needed: int, what: str, advice: str, share: float = ALLOCATION_SHARE,
                   available: int | None = None) -> None:
    """Refuse ``what`` (a :class:`UsageError`, exit 2) unless ``needed`` bytes fit in ``share`` of
    the available memory; ``advice`` says what to ask for instead."""
    available = available_bytes() if available is None else available
    if needed > share * available:
        raise UsageError(f"{what} needs about {format_bytes(needed)}, more than the {format_bytes(share * available)} "
                         f"genkit allows itself ({share:.0%} of the {format_bytes(available)} of memory available); "
                         f"{advice}")


def items_that_fit(bytes_per_item: int, share: float = ALLOCATION_SHARE, available: int | None = None) -> int:
    """How many items of ``bytes_per_item`` fit in ``share`` of the available memory."""
    available = available_bytes() if available is None else available
    return max(0, int(share * available) // max(1, bytes_per_item))

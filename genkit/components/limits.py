"""Numeric ranges checked where a value is parsed, so no value reaches PyTorch or NumPy that they cannot hold.

* Seeds are whole numbers from 0 to :data:`MAX_SEED` (2**63 - 1), the range every generator
  genkit seeds (torch's, NumPy's) accepts; seeds derived from one (``seed + 1`` for a second
  stream) wrap around within it (:func:`derived_seed`).
* Whole-number component options fit a signed 64-bit integer (what a tensor size or a count can
  be in PyTorch).
* A number a plugin uses in float32 arithmetic (a loss's weight, a scale, a floor) must be
  representable in float32 without overflowing to infinity or rounding to zero:
  :func:`float32_option`, offered to plugins as ``genkit.plugin_api.float32_option``.
"""

from __future__ import annotations

import math
from typing import Any

from genkit.errors import UsageError, shown

#: the largest seed: torch's and NumPy's generators take 0 ... 2**63 - 1
MAX_SEED = 2**63 - 1
#: a whole-number option must fit a signed 64-bit integer
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: float32's largest finite value and its smallest positive normal one
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


def check_seed(value: Any, what: str = "--seed") -> int:
    """``value`` as a seed: a whole number from 0 to 2**63 - 1; a one-line :class:`UsageError` otherwise."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value, whole = int(value), True
    if not whole or not 0 <= value <= MAX_SEED:
        raise UsageError(f"{what} {shown(value, quote=False)} must be a whole number from 0 to {MAX_SEED} (2**63 - 1), "
                         f"for example {what} 0")
    return value


def derived_seed(seed: int, offset: int) -> int:
    """The seed of a second random stream derived from ``seed`` (``seed + offset``), kept within 0 ... 2**63 - 1."""
    return (seed + offset) % (MAX_SEED + 1)


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def float32_option(name: str, value: Any, example: Any, flag: str = "--loss-opt") -> float:
    """``value`` as a float a plugin may use in float32 arithmetic; a one-line :class:`UsageError` otherwise.

    Refused: anything not a number, NaN and infinities, magnitudes above float32's largest value
    (about 3.4e38: it would overflow to infinity) and non-zero magnitudes below its smallest
    normal value (about 1.2e-38: it would round towards zero). ``example`` is a good value, shown
    as ``FLAG name=EXAMPLE`` in the message.
    """
    advice = f"for example {flag} {name}={example}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} {shown(value)} must be a number, {advice}")
    try:
        number = float(value)
    except OverflowError:  # a whole number beyond every float
        number = math.inf
    if not math.isfinite(number):
        raise UsageError(f"{name} {shown(value, quote=False)} must be a finite number, {advice}")
    if abs(number) > FLOAT32_MAX or 0 < abs(number) < FLOAT32_TINY:
        raise UsageError(f"{name} {number:g} is outside the float32 range the loss computes in (magnitudes from "
                         f"{FLOAT32_TINY:.2g} to {FLOAT32_MAX:.2g}, or 0); {advice}")
    return number

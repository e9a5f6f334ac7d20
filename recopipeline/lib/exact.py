"""DuckDB's DECIMAL and rounding arithmetic, exactly, for the compiled loops (numba, nopython, GIL released).

A DOUBLE cast to DECIMAL(38, 12) rounds the scaled double half away from zero; DECIMAL sums are exact, so a loop
sums integers of 1e-12; DECIMAL to DOUBLE and round(x, digits) are correctly rounded from the exact decimal value.
The few values within a hair of a rounding boundary are decided in exact (Python) arithmetic.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numba
import numpy as np

UNITS = 10**12  # DECIMAL(38, 12): sums are exact in units of 1e-12
_TWO_53 = 1 << 53

# The exact fallbacks below take the GIL for the few values that need them; the loops still run in parallel.
warnings.filterwarnings("ignore", "Code running in object mode won't allow parallel execution", numba.NumbaWarning)


def _exact_double(units: int) -> float:
    return int(units) / UNITS  # Python's int / int is correctly rounded


def _exact_rounds_up(x: float, scale: int, rounded: float) -> bool:
    return Fraction(float(x)) * scale >= int(rounded) + Fraction(1, 2)


@numba.njit(cache=True, nogil=True)
def half_away(x: float) -> float:
    """C's round(): to the nearest integer, halves away from zero (DuckDB's round(DOUBLE) and DOUBLE to DECIMAL)."""
    magnitude = abs(x)
    rounded = np.floor(magnitude)
    if magnitude - rounded >= 0.5:
        rounded += 1.0
    return rounded if x >= 0 else -rounded


@numba.njit(cache=True, nogil=True)
def to_units(x: float) -> np.int64:
    """x::DECIMAL(38, 12) as an integer of 1e-12."""
    return np.int64(half_away(x * 1e12))


@numba.njit(cache=True, nogil=True)
def units_to_double(units: np.int64) -> float:
    """A DECIMAL(38, 12) given in integers of 1e-12 as DOUBLE: the double nearest to its exact value."""
    if abs(units) < _TWO_53:
        return units / 1e12  # both exact doubles: the division is correctly rounded
    # whole part (exact, |x| >= 2**13) plus the fraction rounded once: the sum rounds to the nearest double
    # unless it is within the fraction's error (2**-54) of a midpoint between doubles; those are divided exactly
    whole = units // UNITS
    fraction = (units - whole * UNITS) / 1e12
    total = float(whole) + fraction
    error = abs((float(whole) - total) + fraction)  # exact: Fast2Sum, |whole| >= fraction
    magnitude = abs(total)
    spacing = np.nextafter(magnitude, np.inf) - magnitude
    if min(abs(spacing / 2 - error), abs(spacing / 4 - error)) <= 2.0**-52:
        with numba.objmode(total="float64"):
            total = _exact_double(units)
    return total


@numba.njit(cache=True, nogil=True)
def round_to_units(x: float, scale: int) -> np.int64:
    """DuckDB's round(x, digits) for x >= 0 as an integer of 1/scale: the exact decimal value, halves up."""
    scaled = x * float(scale)
    rounded = np.floor(scaled)
    fraction = scaled - rounded
    up = fraction > 0.5
    if fraction == 0.5:  # the product was rounded onto a half: decide on the exact value
        with numba.objmode(up="boolean"):
            up = _exact_rounds_up(x, scale, rounded)
    return np.int64(rounded) + np.int64(up)

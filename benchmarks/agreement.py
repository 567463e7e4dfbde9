"""The equality check of the benchmarks: two ways of computing the same quantity must agree before a ratio
of their costs means anything.

Each benchmark prints its figures first, then calls `require_close` (or `require`) for every pair of sides
that compute the same thing. A disagreement beyond the stated tolerance raises `Disagreement`, which ends
the script with exit status 1 and a one-paragraph message on stderr (no traceback).
"""
from __future__ import annotations

import numpy as np


class Disagreement(SystemExit):
    """Two sides of a benchmark disagree: ends the script with exit status 1 and this message on stderr."""

    def __init__(self, message: str):
        super().__init__(f"benchmark FAILED, the two sides disagree: {message}")


def relative_difference(candidate, reference) -> float:
    """max |candidate - reference| over the full scale, the larger of the two sides' max |value|.

    Using both sides for the scale means a side that is broken to all zeros reads as 1.0, not as 0 or NaN.
    Returns inf when the shapes differ or any value is NaN/inf, and 0.0 when both sides are all zero.
    """
    a, b = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    if a.size == 0:
        return 0.0
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def require_close(what: str, candidate, reference, tolerance: float) -> float:
    """The relative difference of two sides (see `relative_difference`); `Disagreement` if above `tolerance`."""
    worst = relative_difference(candidate, reference)
    if not worst <= tolerance:
        shapes = f" (shapes {np.shape(candidate)} vs {np.shape(reference)})" if np.shape(candidate) != np.shape(
            reference) else ""
        raise Disagreement(f"{what}: max |difference| = {worst:.2e} of full scale{shapes}, allowed {tolerance:.0e}")
    return worst


def require(what: str, holds: bool, detail: str) -> None:
    """`Disagreement` naming `what` and `detail` unless `holds` (for checks that are not one relative bound)."""
    if not holds:
        raise Disagreement(f"{what}: {detail}")

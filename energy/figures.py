"""Cited figures the energy model uses where this project has no SPICE figure of its own.

Every entry is a `Cited` value with its unit, its source and, where it is derived rather than stated, how
it was derived (marked "inferred"). Nothing here is fitted or tuned: change a figure by citing another.

Sources
- [paper] the paper's figures: `gaincell.paper` (one cited table for every stage).
- [horowitz] M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
  doi 10.1109/ISSCC.2014.6757323, energy table for a 45 nm process at 0.9 V: 8-bit integer add 0.03 pJ.
  Used as published (45 nm, not scaled to another node); the energy model's `digital_scale` applies a
  node-scaling factor of the user's choice, which the report then states.
"""
from __future__ import annotations

from gaincell.paper import PAPER_HEAD_DIM, PAPER_TILE, PAPER_WINDOW, Cited

HOROWITZ = "Horowitz, ISSCC 2014, 45 nm / 0.9 V table"
HOROWITZ_ADD8_J = Cited(0.03e-12, "J", f"{HOROWITZ}: 8-bit integer add")


def paper_cells_read_per_head() -> int:
    """Cells one head reads per token per stage in the paper's design: window x head dim (all 16 tiles)."""
    return PAPER_WINDOW * PAPER_HEAD_DIM


def paper_cells_written_per_head() -> int:
    """Cells one head writes per token in the paper's design: one K and one V column of head-dim cells."""
    return 2 * PAPER_HEAD_DIM


def paper_conversions_per_head() -> tuple[int, int]:
    """C2P conversions per head per token in the paper's design: stage 1 one per stored token (column),
    stage 2 one per output dimension per sub-tile."""
    return PAPER_WINDOW, (PAPER_WINDOW // PAPER_TILE) * PAPER_HEAD_DIM

"""Cited figures the energy model uses where this project has no SPICE figure of its own.

Every entry is a `Cited` value with its unit, its source and, where it is derived rather than stated, how
it was derived (marked "inferred"). Nothing here is fitted or tuned: change a figure by citing another.

Sources
- [paper] Leroux, Manea, Sudarshan, Finkbeiner, Siegel, Strachan, Neftci, "Analog in-memory computing
  attention mechanism for fast and energy-efficient large language models", Nature Computational Science
  5, 813-824 (2025), doi 10.1038/s43588-025-00854-1 (arXiv 2409.19315): 65 ns per token for the whole
  attention (all heads in parallel); 6.1 nJ per token per head = QK stage 1120 pJ + AV stage 700 pJ +
  digital control and routing 4000 pJ (113.7 mW) + DACs 330 pJ; 0.5 mm^2 per head with control, KV arrays
  of one head 15.7e-3 mm^2; a 6T cell of about 1 um^2; T_max = 15 ns; 64 x 64 arrays, window 1024, head
  dimension 64 (so 16 sub-tiles and 2 arrays, K and V, per sub-tile and head).
- [horowitz] M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
  doi 10.1109/ISSCC.2014.6757323, energy table for a 45 nm process at 0.9 V: 8-bit integer add 0.03 pJ.
  Used as published (45 nm, not scaled to another node); the energy model's `digital_scale` applies a
  node-scaling factor of the user's choice, which the report then states.
"""
from __future__ import annotations

from dataclasses import dataclass

from gaincell.hardware import PAPER_LATENCY_PER_LAYER_S


@dataclass(frozen=True)
class Cited:
    """A figure with its unit and where it comes from."""

    value: float
    unit: str
    source: str


PAPER = "Leroux et al. 2025 (Nat. Comput. Sci. 5, 813)"
HOROWITZ = "Horowitz, ISSCC 2014, 45 nm / 0.9 V table"

# The paper's design point: what its per-head figures were computed for.
PAPER_HEAD_DIM = 64
PAPER_WINDOW = 1024
PAPER_TILE = 64

# Per token, for the whole attention of one layer (all heads in parallel; the token clock's figure).
PAPER_LATENCY_S = Cited(PAPER_LATENCY_PER_LAYER_S, "s", f"{PAPER}: latency per token")

# Per token per head.
PAPER_E_QK_HEAD_J = Cited(1120e-12, "J", f"{PAPER}: QK stage (arrays + charge-to-pulse), per token per head")
PAPER_E_AV_HEAD_J = Cited(700e-12, "J", f"{PAPER}: AV stage (arrays + signed C2P and counters), per token per head")
PAPER_E_DIGITAL_HEAD_J = Cited(4000e-12, "J", f"{PAPER}: digital control and routing, per token per head")
PAPER_E_DAC_HEAD_J = Cited(330e-12, "J", f"{PAPER}: DACs, per token per head")

PAPER_AREA_HEAD_MM2 = Cited(0.5, "mm^2", f"{PAPER}: area of one head with its control")
PAPER_AREA_KV_HEAD_MM2 = Cited(15.7e-3, "mm^2", f"{PAPER}: KV arrays of one head")
PAPER_CELL_AREA_UM2 = Cited(1.0, "um^2", f"{PAPER}: gain cell (6T) 'about 1 um^2'")

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

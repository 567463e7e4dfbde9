"""The paper's published figures, each in one place with its unit and source (every stage reads them here).

[paper] Leroux, Manea, Sudarshan, Finkbeiner, Siegel, Strachan, Neftci, "Analog in-memory computing attention
mechanism for fast and energy-efficient large language models", Nature Computational Science 5, 813-824
(2025), doi 10.1038/s43588-025-00854-1 (arXiv 2409.19315): 65 ns per token for the whole attention (all heads
in parallel); 6.1 nJ per token per head = QK stage 1120 pJ + AV stage 700 pJ + digital control and routing
4000 pJ (113.7 mW) + DACs 330 pJ; 0.5 mm^2 per head with control, KV arrays of one head 15.7e-3 mm^2; a 6T
cell of about 1 um^2; T_max = 15 ns; 64 x 64 arrays, window 1024, head dimension 64 (so 16 sub-tiles and 2
arrays, K and V, per sub-tile and head); the cell's multiply at V_in = 0.9 V, a cubic in the stored offset
y = V_store - 0.45 V (its public code's fit of the SPICE IV curve).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cited:
    """A figure with its unit and where it comes from."""

    value: float
    unit: str
    source: str


PAPER = "Leroux et al. 2025 (Nat. Comput. Sci. 5, 813)"

# The paper's design point: what its per-head figures were computed for.
PAPER_HEAD_DIM = 64
PAPER_WINDOW = 1024
PAPER_TILE = 64
PAPER_T_MAX_S = 15e-9  # the longest read pulse
PAPER_LATENCY_PER_LAYER_S = 65e-9  # one token through one layer's attention, all heads in parallel
PAPER_S_SAT_CURRENT_A = 80e-6  # stage-1 saturation charge = this x T_max (its code: S_sat = 80)
PAPER_READOUT_CURRENT_A = 40e-6  # stage-2 full scale = this x T_max (its readout clamps A / 40 to [-1, 1])
PAPER_CUBIC_UA = (0.52136, 13.61226, -2.62045, 46.05484)  # f(y) = c0 + c1 y + c2 y^2 + c3 y^3, uA, at V_in 0.9 V

PAPER_LATENCY_S = Cited(PAPER_LATENCY_PER_LAYER_S, "s", f"{PAPER}: latency per token")
# Per token per head.
PAPER_E_QK_HEAD_J = Cited(1120e-12, "J", f"{PAPER}: QK stage (arrays + charge-to-pulse), per token per head")
PAPER_E_AV_HEAD_J = Cited(700e-12, "J", f"{PAPER}: AV stage (arrays + signed C2P and counters), per token per head")
PAPER_E_DIGITAL_HEAD_J = Cited(4000e-12, "J", f"{PAPER}: digital control and routing, per token per head")
PAPER_E_DAC_HEAD_J = Cited(330e-12, "J", f"{PAPER}: DACs, per token per head")

PAPER_AREA_HEAD_MM2 = Cited(0.5, "mm^2", f"{PAPER}: area of one head with its control")
PAPER_AREA_KV_HEAD_MM2 = Cited(15.7e-3, "mm^2", f"{PAPER}: KV arrays of one head")
PAPER_CELL_AREA_UM2 = Cited(1.0, "um^2", f"{PAPER}: gain cell (6T) 'about 1 um^2'")

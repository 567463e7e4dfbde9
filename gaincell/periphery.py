"""Designs of what surrounds the cell array, and the characterization grid: frozen dataclasses whose fields
carry unit, range and description (`gaincell.fields`), loadable from a design file's [c2p], [dac] and [grid]
tables (`gaincell.design.load_setup`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .fields import check_quantities, described, is_number, quantity, shown
from .paper import PAPER_READOUT_CURRENT_A, PAPER_S_SAT_CURRENT_A


@dataclass(frozen=True)
class C2PDesign:
    """The charge-to-pulse converters' sizes: integration capacitor, reference currents (they set the
    saturation charges)."""

    cint_f: float = quantity("integration capacitor", "F", 1e-18, 1e-6, default=4e-12)
    iref_a: float = quantity("stage-1 reference current; saturation charge iref x T_max (the paper's S_sat = "
                             "80 uA x T_max)", "A", 1e-12, 1.0, default=PAPER_S_SAT_CURRENT_A)
    iref_signed_a: float = quantity("readout reference current; full scale iref x T_max (the paper's clamp A / 40)",
                                    "A", 1e-12, 1.0, default=PAPER_READOUT_CURRENT_A)
    gain: float = quantity("integrator op-amp gain", "", 1.0, 1e12, default=1e4)
    counter_levels: int = quantity("counter levels of the signed readout (magnitude)", low=2, high=1024,
                                   default=16, integer=True)
    gap_s: float = quantity("time from the end of the read to the window opening", "s", 1e-15, 1e-3, default=0.5e-9)

    def __post_init__(self):
        check_quantities(self)


@dataclass(frozen=True)
class DacDesign:
    """The write DAC: resistor string, selector gates, and the write bit line it drives."""

    r_string_ohm: float = quantity("whole resistor string, ground to VDD, shared by `dacs_per_string` DACs", "ohm",
                                   1e-3, 1e12, default=4e3)
    dacs_per_string: int = quantity("DACs served by one string (one per array row)", low=1, high=4096, default=64,
                                    integer=True)
    wn_m: float = quantity("selector NMOS width (its length: the cell design's logic_n.l_m)", "m", 1e-9, 1e-3,
                           default=200e-9)
    wp_m: float = quantity("selector PMOS width (its length: the cell design's logic_p.l_m)", "m", 1e-9, 1e-3,
                           default=300e-9)
    load_cells: int = quantity("write transistors on one write bit line (tokens)", low=1, high=4096, default=64,
                               integer=True)
    wire_c_per_cell_f: float = quantity("write-bit-line wire capacitance per cell", "F", 0.0, 1e-12, default=0.05e-15)

    def __post_init__(self):
        check_quantities(self)


@dataclass(frozen=True)
class Grid:
    """Sizes of the characterization sweeps."""

    stored_levels: int = quantity("stored voltages of the read sweep (0 .. VDD)", low=2, high=1000, default=16,
                                  integer=True)
    pulse_levels: int = quantity("pulse widths of the read sweep (T_max / n .. T_max)", low=1, high=1000, default=8,
                                 integer=True)
    vin_levels: int = quantity("input amplitudes of the read sweep (VDD/2 .. v_in_v; one level: v_in_v)", low=1,
                               high=100, default=6, integer=True)
    retention_levels: tuple[float, ...] = described("stored levels of the retention sweep, as fractions of VDD "
                                                    "(each in (0, 1])", default=(0.25, 0.5, 0.75, 1.0))
    retention_stop_s: float = quantity("how long the retention sweep holds", "s", 1e-9, 1e3, default=100e-3)

    def __post_init__(self):
        check_quantities(self)
        levels = self.retention_levels
        if not (isinstance(levels, (list, tuple)) and levels
                and all(is_number(x) and 0 < x <= 1 for x in levels)):
            raise ConfigError("retention_levels", f"must be a list of fractions of VDD in (0, 1], got {shown(levels)}")
        object.__setattr__(self, "retention_levels", tuple(float(x) for x in levels))

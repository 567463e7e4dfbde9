"""Silicon area from the design: transistors drawn with a PDK's layout rules, capacitors from their density.

    cell_area(cell)                      # Area(items=[...], um2=...): the five transistors and Cs of one cell
    head_area(cell, c2p, dac, shape)     # the cell arrays and their periphery for one KV head, itemized

A transistor is drawn on its own (no diffusion shared with a neighbour): its channel (W x L), a contacted
source and drain on each side (contact-to-gate spacing, contact, diffusion enclosure), the gate's end caps
beyond the diffusion, and half the spacing to the next device on each side. That is the usual upper bound of
a hand estimate; a layout that shares diffusions and stacks devices gets below it.

Capacitors: a MIM or MOM capacitor lies in the metal stack above the transistors, so a cell takes the larger
of its transistors' area and its capacitor's; a MOS capacitor (a transistor gate) takes silicon beside them.
The densities are the PDK models' own figures (sky130) or the model card's oxide (cmos-generic).

Rule sets (`RULES`): `sky130` (SkyWater SKY130 periphery rules, absolute microns) and `scmos` (MOSIS-style
scalable rules in lambda, lambda = half the design's shortest drawn channel length), each with its sources.
The C2P converters' op-amp, comparator and reference current are behavioural in the netlists (no transistor
sizes): they are counted as `C2P_ANALOG_TRANSISTORS` logic-size transistors, an assumption said in the report.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import ConfigError
from .fields import described, shown

EPS_OX_F_PER_M = 3.9 * 8.8541878128e-12  # SiO2 permittivity: a gate oxide's capacitance per area is this / tox
CAPACITOR_KINDS = ("mim", "mom", "mos")
C2P_ANALOG_TRANSISTORS = 16  # two-stage op-amp with bias (8), latched comparator (6), reference mirror (2)


@dataclass(frozen=True)
class Rules:
    """Layout rules and device densities of one PDK, in microns (or lambdas when `scalable`)."""

    name: str
    source: str
    scalable: bool  # values in lambda (x half the shortest drawn L) instead of microns
    contact: float  # contact (licon) size
    contact_to_gate: float  # contact to gate spacing
    diffusion_enclosure: float  # diffusion beyond the contact
    gate_end_cap: float  # gate poly beyond the diffusion
    diffusion_spacing: float  # diffusion to diffusion
    poly_spacing: float  # poly to poly
    densities_f_per_um2: dict  # capacitor kind -> F per um^2 (None: from the gate oxide)
    density_sources: dict
    flip_flop_um2: float  # one D flip-flop (the counters), at this rule set's scale
    flip_flop_source: str


SKY130 = Rules(
    "sky130", "SkyWater SKY130 periphery rules: licon.1 0.17 (contact), licon.11 0.055 (contact to gate), licon.5a "
    "0.04 (diffusion enclosure), poly.8 0.13 (end cap), difftap.3 0.27 (diffusion spacing), poly.2 0.21 (poly "
    "spacing), in um", False, 0.17, 0.055, 0.04, 0.13, 0.27, 0.21,
    {"mim": 2.00e-15, "mom": 137.45e-15 / (11.5 * 11.7), "mos": None},
    {"mim": "sky130 cap_mim_m3_1 typical camimc = 2.00 fF/um^2 (models/r+c/res_typical__cap_typical__lin.spice)",
     "mom": "sky130 cap_vpp_11p5x11p7_l1m1m2m3m4_shieldm5: 137.45 fF on 11.5 x 11.7 um = 1.02 fF/um^2",
     "mos": "gate oxide of the sky130 nfet_01v8 (toxe 4.148 nm): 8.3 fF/um^2"},
    7.36 * 2.72, "sky130_fd_sc_hd__dfxtp_1 standard cell, 7.36 x 2.72 um (its LEF)")

SCMOS = Rules(
    "scmos", "MOSIS-style scalable CMOS rules (deep-submicron set) in lambda = half the shortest drawn channel "
    "length: contact 2, contact to gate 2, diffusion enclosure 1.5, end cap 2.5, diffusion spacing 3, poly "
    "spacing 3", True, 2.0, 2.0, 1.5, 2.5, 3.0, 3.0,
    {"mim": SKY130.densities_f_per_um2["mim"], "mom": SKY130.densities_f_per_um2["mom"], "mos": None},
    {"mim": "sky130's MIM density 2.00 fF/um^2 (no generic figure; advanced nodes' MIM is denser)",
     "mom": "sky130's MOM density 1.02 fF/um^2 (no generic figure)",
     "mos": "gate oxide of the design's model card (toxe): eps_ox / toxe"},
    SKY130.flip_flop_um2, "sky130's dfxtp_1 (20.0 um^2) scaled by (lambda / 0.075 um)^2")
SKY130_LAMBDA_UM = 0.075  # half of sky130's shortest gate (poly.1a 0.15 um): how the scalable rules scale sky130's cells
RULES = {"sky130": SKY130, "scmos": SCMOS}
MOS_TOX_M = {"sky130": 4.148e-9, "scmos": 1.25e-9}  # sky130 nfet_01v8 toxe; cmos_generic.lib nmos toxe


@dataclass(frozen=True)
class Layout:
    """How the design is drawn, for its area estimate (`gaincell.layout`)."""

    rules: str = described("layout rules of the area estimate: 'scmos' (scalable lambda rules, lambda = half the "
                           "shortest drawn channel length) or 'sky130' (SkyWater SKY130 rules)", default="scmos")
    storage_cap: str = described("how Cs is built: 'mim' or 'mom' (in the metal stack above the transistors) or "
                                 "'mos' (a transistor gate beside them)", default="mim")

    def __post_init__(self):
        if self.rules not in RULES:
            raise ConfigError("rules", f"must be one of {', '.join(RULES)}, got {shown(self.rules)}")
        if self.storage_cap not in CAPACITOR_KINDS:
            raise ConfigError("storage_cap", f"must be one of {', '.join(CAPACITOR_KINDS)}, got "
                                             f"{shown(self.storage_cap)}")


@dataclass(frozen=True)
class Item:
    """One part of an area estimate: `count` units of `um2_each`."""

    label: str
    count: float
    um2_each: float
    how: str

    @property
    def um2(self) -> float:
        return self.count * self.um2_each


@dataclass(frozen=True)
class Area:
    items: tuple[Item, ...]
    um2: float  # the total (below the items' sum when a capacitor lies above the transistors)
    note: str = ""


@dataclass(frozen=True)
class ArrayShape:
    """One KV head's arrays: `window` tokens of `head_dim` values in K and in V, cut into tile x tile arrays."""

    window: int
    head_dim: int
    tile: int

    @property
    def token_tiles(self) -> int:
        return math.ceil(self.window / self.tile)

    @property
    def dim_tiles(self) -> int:
        return math.ceil(self.head_dim / self.tile)


def lambda_um(cell) -> float:
    """Half the design's shortest drawn channel length, in um (the scalable rules' unit)."""
    lengths = [getattr(cell, name).l_m for name in ("write", "read_n", "read_p", "switch_n", "switch_p", "logic_n",
                                                    "logic_p")]
    return min(lengths) * 1e6 / 2


def _scale_um(cell) -> float:
    rules = RULES[cell.layout.rules]
    return lambda_um(cell) if rules.scalable else 1.0


def transistor_um2(cell, w_m: float, l_m: float) -> float:
    """Footprint of one transistor of W x L drawn with the design's rules (see the module docstring)."""
    r, unit = RULES[cell.layout.rules], _scale_um(cell)
    w, l = w_m * 1e6, l_m * 1e6
    along = l + 2 * (r.contact_to_gate + r.contact + r.diffusion_enclosure) * unit + r.diffusion_spacing * unit
    across = max(w, (r.contact + 2 * r.diffusion_enclosure) * unit) + (2 * r.gate_end_cap + r.poly_spacing) * unit
    return along * across


def capacitor(cell, kind: str, farads: float) -> tuple[float, str]:
    """(um^2, source) of a capacitor of `farads` built as `kind`."""
    r = RULES[cell.layout.rules]
    density = r.densities_f_per_um2[kind]
    if density is None:  # a MOS capacitor: the gate oxide
        density = EPS_OX_F_PER_M / MOS_TOX_M[r.name] * 1e-12
    return farads / density, f"{kind.upper()} at {density * 1e15:.3g} fF/um^2 ({r.density_sources[kind]})"


def cell_area(cell) -> Area:
    """One gain cell: its five transistors, then Cs (the last item)."""
    devices = [("write transistor", cell.write), ("NMOS read transistor", cell.read_n),
               ("PMOS read transistor", cell.read_p), ("NMOS switch", cell.switch_n), ("PMOS switch", cell.switch_p)]
    items = [Item(label, 1, transistor_um2(cell, d.w_m, d.l_m), f"W/L {d.w_m * 1e6:.3g}/{d.l_m * 1e6:.3g} um")
             for label, d in devices]
    cap_um2, cap_how = capacitor(cell, cell.layout.storage_cap, cell.cs_f)
    transistors = sum(i.um2 for i in items)
    items.append(Item(f"Cs {cell.cs_f * 1e15:.3g} fF", 1, cap_um2, cap_how))
    if cell.layout.storage_cap == "mos":
        return Area(tuple(items), transistors + cap_um2, "MOS Cs beside the transistors: the sum")
    above = "Cs above the transistors: the larger of the two"
    return Area(tuple(items), max(transistors, cap_um2),
                above + (" (Cs sets it)" if cap_um2 > transistors else " (the transistors set it)"))


def _logic_um2(cell, count: float) -> float:
    """`count` logic transistors, half NMOS and half PMOS of the design's logic sizes."""
    n, p = cell.logic_n, cell.logic_p
    return count / 2 * (transistor_um2(cell, n.w_m, n.l_m) + transistor_um2(cell, p.w_m, p.l_m))


def periphery_units(cell, c2p, dac) -> dict[str, Item]:
    """The area of one of each periphery circuit, by key (count 1)."""
    r = RULES[cell.layout.rules]
    gate = transistor_um2(cell, dac.wn_m, cell.logic_n.l_m) + transistor_um2(cell, dac.wp_m, cell.logic_p.l_m)
    cint_um2, cint_how = capacitor(cell, "mim", c2p.cint_f)
    analog = _logic_um2(cell, C2P_ANALOG_TRANSISTORS)
    flip_flop = r.flip_flop_um2 * ((_scale_um(cell) / SKY130_LAMBDA_UM) ** 2 if r.scalable else 1.0)
    bits = math.ceil(math.log2(c2p.counter_levels)) + 1  # magnitude and sign
    return {
        "dac": Item("write DAC", 1, cell.dac_levels * gate,
                    f"{cell.dac_levels} transmission gates of {dac.wn_m * 1e6:.3g}/{dac.wp_m * 1e6:.3g} um (its "
                    "share of the resistor string, shared by many DACs, is not counted)"),
        "c2p": Item("stage-1 C2P", 1, cint_um2 + analog + _logic_um2(cell, 4),
                    f"C_int {c2p.cint_f * 1e12:.3g} pF as {cint_how}; op-amp, comparator and reference as "
                    f"{C2P_ANALOG_TRANSISTORS} logic transistors (behavioural in the netlist: assumed); 2 buffers"),
        "c2p_signed": Item("stage-2 signed C2P", 1, cint_um2 + analog + _logic_um2(cell, 10),
                           "as stage 1, with 4 buffers and a sign latch (2 more transistors)"),
        "counter": Item("readout counter", 1, bits * flip_flop,
                        f"{bits} flip-flops ({c2p.counter_levels} levels and a sign) of {flip_flop:.3g} um^2 "
                        f"({r.flip_flop_source})"),
        "driver": Item("read-line inverter", 1, _logic_um2(cell, 2), "one inverter per array row (rwl -> rwlb)"),
    }


def head_area(cell, c2p, dac, shape: ArrayShape) -> Area:
    """The K and V arrays of one KV head with their periphery: one DAC per row (a token's values are written
    as one column), a stage-1 C2P per K column and dim tile, a signed C2P and counter per V output and token
    tile, an inverter per row of every array."""
    one_cell = cell_area(cell)
    units = periphery_units(cell, c2p, dac)
    arrays = 2 * shape.token_tiles * shape.dim_tiles
    counts = {"dac": 2 * shape.head_dim, "c2p": shape.window * shape.dim_tiles,
              "c2p_signed": shape.head_dim * shape.token_tiles, "counter": shape.head_dim * shape.token_tiles,
              "driver": arrays * shape.tile}
    transistors = sum(i.um2 for i in one_cell.items[:-1])
    cells = Item("cells", 2 * shape.window * shape.head_dim, one_cell.um2,
                 f"transistors {transistors:.3g} um^2, Cs {one_cell.items[-1].how}: {one_cell.items[-1].um2:.3g} "
                 f"um^2; {one_cell.note}")
    items = (cells,) + tuple(dataclasses.replace(unit, count=counts[key]) for key, unit in units.items())
    rules = RULES[cell.layout.rules]
    scale = f", lambda {lambda_um(cell) * 1e3:.3g} nm" if rules.scalable else ""
    return Area(items, sum(i.um2 for i in items), f"{rules.name} rules{scale}; {arrays} arrays of {shape.tile} rows")

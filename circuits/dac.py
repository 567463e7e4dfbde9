"""The write DAC (netlists/dac.sub): its design, the conversion testbench and its sweep.

    gaincell characterize --design cmos-generic --dac --out char.h5     # adds the sweep `dac`

A write puts a DAC level on a write bit line: the decoded level closes one transmission gate between a tap of
the resistor string and the line, the line settles, and the chosen cell's write word line is high for the
design's `write_time_s`. `DacConversion` simulates one DAC switching from level `from_level` to `to_level`
while a cell is written (the sweep: every pair of levels, i.e. uniformly random data), its line loaded by
`load_cells` write transistors (one per stored token of the tile) and the wire. The string serves
`dacs_per_string` DACs (one per row of the array) that convert at the same time: the simulated DAC gets its
share, a string with that many times the resistance (exact when they all make the same transition).

Results per conversion: `e_conversion_j` (energy drawn during the write pulse, its falling edge included,
from the string's reference and the level-select drivers: the string's static current, charging the line
(and the written cell: ~1 fJ also in the cell's own write energy) and the gates; the string is assumed
switched off between writes), `settle_s` (from the switch until the line stays within
`SETTLE_TOLERANCE_V` of its level; the write time if it never does), `stored_v` / `error_v` (the written
cell, after its word line fell, against the DAC level).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaincell.design import CellDesign
from gaincell.devices import PdkDevice
from gaincell.periphery import DacDesign
from gaincell.errors import ConfigError

from .cells import CellTestbench, drawn_energy, shipped_subcircuits
from .instances import shipped_subcircuit
from .spice.analysis import Transient
from .spice.elements import (GROUND, Pulse, Pwl, capacitor, expression, initial_condition, param, resistor, transistor,
                             voltage)
from .sweep import Sweep

DAC_FILE = "dac.sub"
SWITCH_AT_S = 0.5e-9  # the level selects switch and the write word line rises
EDGE_S = 50e-12
SETTLE_TOLERANCE_V = 0.01  # half the documented write error (circuits.characterize.WRITE_ERROR_BOUND_V)
MAX_LEVELS = 64  # the testbench builds one gate and two select sources per level
SWEPT_LEVELS = 16  # at most this many levels (evenly spread) as start and end of the swept conversions


def write_transistor(design: CellDesign) -> PdkDevice:
    """The PDK device of the cell's write transistor (the shipped model is chosen by the cell subcircuit's name)."""
    return design.device("nmos_igzo" if design.cell_subckt.endswith("_igzo") else "nmos_gen_hvt")


@dataclass(frozen=True)
class DacConversion(CellTestbench):
    """One DAC conversion while a cell is written: sweep parameters `from_level`, `to_level` (level indices)."""

    dac: DacDesign = DacDesign()

    name = "dac-conversion"
    subckt_name = "dacpoint"
    max_pack = 16

    @property
    def levels(self) -> int:
        return self.design.dac_levels

    @property
    def probes(self) -> tuple[str, ...]:
        selects = tuple(f"i(v.v{kind}{k})" for k in range(self.levels) for kind in ("s", "sb"))
        return ("v(wbl)", "v(xc.sn)", "i(v.vref)") + selects

    @property
    def write_ends_s(self) -> float:
        return SWITCH_AT_S + self.design.write_time_s

    def preamble(self) -> str:
        return super().preamble() + "\n" + shipped_subcircuits(self.design, DAC_FILE)

    def describe(self) -> dict:
        return {"design": self.design.to_dict(), "dac": self.dac.__dict__}

    def __post_init__(self):
        if self.levels > MAX_LEVELS:
            raise ConfigError("dac_levels", f"the DAC testbench builds one gate per level: at most {MAX_LEVELS} "
                                            f"levels, got {self.levels}")

    def _select(self, level: int, point) -> tuple[float, float]:
        """Select line of `level` before and after the switch (VDD when closed)."""
        vdd = self.design.vdd_v
        return (vdd if level == int(point["from_level"]) else 0.0), (vdd if level == int(point["to_level"]) else 0.0)

    def instance_params(self, point):
        for name in ("from_level", "to_level"):
            value = point[name]
            if not (float(value).is_integer() and 0 <= value < self.levels):
                raise ConfigError(name, f"must be a level index, an integer in [0, {self.levels - 1}], got {value!r}")
        params = {"level": self.design.dac_voltages[int(point["to_level"])]}
        for k in range(self.levels):
            params[f"a{k}"], params[f"b{k}"] = self._select(k, point)
        return params

    def subcircuit(self) -> str:
        d, n, dac = self.design, self.levels, self.dac
        rseg = dac.r_string_ohm / (n - 1) * dac.dacs_per_string  # this DAC's share of the shared string
        taps = ["0"] + [f"t{k}" for k in range(1, n - 1)] + ["ref"]
        on, off = SWITCH_AT_S, SWITCH_AT_S + EDGE_S
        params = {name: 0 for k in range(n) for name in (f"a{k}", f"b{k}")} | {"level": 0}
        lines = [voltage("dd", "vdd", GROUND, d.vdd_v), voltage("ref", "ref", GROUND, d.vdd_v)]
        lines += [resistor(f"s{k}", taps[k], taps[k + 1], rseg) for k in range(n - 1)]
        gate = shipped_subcircuit(DAC_FILE, "dac_tg")
        for k in range(n):
            a, b = f"a{k}", f"b{k}"
            lines += [voltage(f"s{k}", f"s{k}", GROUND, Pwl(((0, param(a)), (on, param(a)), (off, param(b))))),
                      voltage(f"sb{k}", f"sb{k}", GROUND, Pwl(((0, expression(d.vdd_v, "-", a)),
                                                               (on, expression(d.vdd_v, "-", a)),
                                                               (off, expression(d.vdd_v, "-", b))))),
                      gate.instance(f"g{k}", {"a": taps[k], "b": "wbl", "s": f"s{k}", "sb": f"sb{k}", "vdd": "vdd"},
                                    {"wn": dac.wn_m, "wp": dac.wp_m})]
        others = dac.load_cells - 1
        lines += [voltage("wwl", "wwl", GROUND, Pulse(0, d.write_wl_v, on, EDGE_S, EDGE_S, d.write_time_s)),
                  voltage("rwl", "rwl", GROUND, 0), voltage("rwlb", "rwlb", GROUND, d.vdd_v),
                  voltage("rbl", "rbl", GROUND, d.zero_v), self.cell_line(),
                  initial_condition("xc.sn", expression(d.vdd_v, "-", "level")),  # the worst case: the opposite level
                  capacitor("wire", "wbl", GROUND, dac.load_cells * dac.wire_c_per_cell_f)]
        if others:  # the other cells' write transistors on this line, held off, as one device of m = others
            lines += [transistor(write_transistor(d), "load", ["wbl", "0", "snl", "0"], d.write.w_m, d.write.l_m,
                                 {"m": others}),
                      capacitor("load", "snl", GROUND, others * d.cs_f), initial_condition("snl", d.zero_v)]
        return self.point_subcircuit(params, lines)

    def analysis(self, points) -> Transient:
        return Transient(step_s=20e-12, stop_s=self.write_ends_s + 2e-9, max_step_s=0.1e-9)

    def options(self) -> dict:
        return {"method": "gear"}

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        target = d.dac_voltages[int(point["to_level"])]
        during = (t >= SWITCH_AT_S - 1e-12) & (t <= self.write_ends_s + 2 * EDGE_S)  # word line down at the end
        ramp = np.clip((t - SWITCH_AT_S) / EDGE_S, 0.0, 1.0)
        energy = drawn_energy(t[during], d.vdd_v, vectors["i(v.vref)"][during])
        for k in range(self.levels):
            before, after = self._select(k, point)
            select = before + (after - before) * ramp
            energy += drawn_energy(t[during], select[during], vectors[f"i(v.vs{k})"][during])
            energy += drawn_energy(t[during], (d.vdd_v - select)[during], vectors[f"i(v.vsb{k})"][during])
        line = vectors["v(wbl)"]
        window = (t >= SWITCH_AT_S) & (t <= self.write_ends_s)
        away = window & (np.abs(line - target) > SETTLE_TOLERANCE_V)
        settle = float(t[away].max() - SWITCH_AT_S) if away.any() else 0.0
        if away[np.nonzero(window)[0][-1]]:  # still off its level when the write ends: never settled
            settle = d.write_time_s
        stored = float(vectors["v(xc.sn)"][-1])
        return {"time": t, "v(wbl)": line, "v(sn)": vectors["v(xc.sn)"], "e_conversion_j": np.asarray(energy),
                "settle_s": np.asarray(settle), "stored_v": np.asarray(stored), "error_v": np.asarray(stored - target)}


def dac_sweep(design: CellDesign, dac: DacDesign = DacDesign()) -> Sweep:
    """Every transition between two DAC levels (the mean over them is the energy of random data); with more
    than `SWEPT_LEVELS` levels, the transitions between that many evenly spread ones."""
    bench = DacConversion(design, dac=dac)
    levels = sorted({int(k) for k in np.round(np.linspace(0, bench.levels - 1, min(bench.levels, SWEPT_LEVELS)))})
    return Sweep("dac", bench, {"from_level": levels, "to_level": levels})

"""Gain-cell circuits built from a `CellDesign`: the cell subcircuit text, single-cell transients and
the packed testbenches the characterization sweeps use.

Sign convention: the cell current `i_cell` flows from the read bit line into the cell (positive for
stored voltages above the zero crossing). The bit line is held at VDD/2 by the source `vrbl`, whose
ngspice current is the negative of that, so `i_cell = -i(vrbl)`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gaincell.design import CellDesign
from gaincell.devices import SHIPPED_MODEL_NAMES
from gaincell.errors import ConfigError, NetlistError

from .instances import shipped_subcircuit, shipped_text
from .spice.analysis import Transient
from .spice.elements import (GROUND, Pulse, Pwl, expression, fill_shipped, include, initial_condition, library, options,
                             param, temperature, title, transistor, voltage)
from .sweep import Testbench

CELL_FILE = "gaincell_signed.sub"


def library_lines(design: CellDesign) -> list[str]:
    """`.include` (or `.lib FILE CORNER`) lines for the design's model libraries, absolute paths."""
    lines = []
    for name in design.model_libraries:
        path = design.library_path(name)
        lines.append(library(path, design.corner) if design.corner else include(path))
    return lines


def geometry_placeholders(design: CellDesign) -> dict[str, float]:
    """The numbers the shipped .sub files leave to the design: periphery logic sizes, VDD/2."""
    return {"logic_wn": design.logic_n.w_m, "logic_wp": design.logic_p.w_m, "logic_ln": design.logic_n.l_m,
            "logic_lp": design.logic_p.l_m, "zero_v": design.zero_v}


def device_line(design: CellDesign, line: str) -> str:
    """A shipped `m` line (`mNAME d g s b MODEL w=.. l=.. [more=..]`, W/L in metres) as the design's device line."""
    words = line.split()
    if len(words) < 6 or words[5] not in SHIPPED_MODEL_NAMES:
        raise NetlistError(f"shipped transistor line {line.strip()!r} does not name one of "
                           f"{', '.join(SHIPPED_MODEL_NAMES)} after its four nodes")
    values = dict(word.split("=", 1) for word in words[6:])
    if not {"w", "l"} <= set(values):
        raise NetlistError(f"shipped transistor line {line.strip()!r} lacks w= or l=")
    extra = {key: value for key, value in values.items() if key not in ("w", "l")}
    return transistor(design.device(words[5]), words[0][1:], words[1:5], values["w"], values["l"], extra)


def shipped_subcircuits(design: CellDesign, name: str) -> str:
    """A shipped .sub file (netlists/NAME) for the design: every transistor (`m`) line becomes the design's
    device line (model or PDK subcircuit, in its geometry unit), the placeholders its numbers."""
    return fill_shipped(shipped_text(name), geometry_placeholders(design), lambda line: device_line(design, line))


def cell_subcircuits(design: CellDesign) -> str:
    """The shipped signed-cell subcircuits, with model names mapped onto the design's PDK names."""
    return shipped_subcircuits(design, CELL_FILE)


def cell_instance(design: CellDesign, name: str, shifts: Mapping[str, float | str] | None = None, **nodes: str) -> str:
    """The design's signed cell as instance `x{name}`, sized by the design; `nodes` connects each of its ports
    (wwl wbl rwl rwlb rbl vdd) by name. `shifts` overrides threshold shifts of this instance (dvw dvrn dvrp
    dvsn dvsp: volts, or `{param}` of the enclosing subcircuit, e.g. a Monte Carlo point's own)."""
    params = design.cell_params() | dict(shifts or {})
    return shipped_subcircuit(CELL_FILE, design.cell_subckt).instance(name, nodes, params)


def temperature_line(design: CellDesign) -> str:
    """The `.temp` card of every netlist built from the design."""
    return temperature(design.temp_c)


def row_inverter(name: str, rwl: str, rwlb: str, vdd: str) -> str:
    """The row inverter (`rwl_inv`) as instance `x{name}`: it makes `rwlb` from `rwl`."""
    return shipped_subcircuit(CELL_FILE, "rwl_inv").instance(name, {"in": rwl, "out": rwlb, "vdd": vdd})


def cell_transient(design: CellDesign, stored_v: float, pulse_s: float, v_in_v: float | None = None):
    """One write of `stored_v` through the write transistor, then one read pulse of `pulse_s`.

    Returns (netlist text, Transient, save list). Timeline: the write word line is high for
    `design.write_time_s` from 1 ns; the read pulse starts 10 ns after it falls; the run ends 5 ns
    after `design.t_max_s` would have ended.
    """
    v_in = design.v_in_v if v_in_v is None else v_in_v
    if not 0 <= stored_v <= design.vdd_v:
        raise ConfigError("stored", f"must be within 0..VDD = {design.vdd_v} V, got {stored_v!r}")
    if not 0 < pulse_s <= design.t_max_s:
        raise ConfigError("pulse", f"must be in (0, T_max = {design.t_max_s:g} s], got {pulse_s!r}")
    edge = 50e-12
    t_write_end = 1e-9 + design.write_time_s
    t_read = t_write_end + 10e-9
    stop = t_read + design.t_max_s + 5e-9
    lines = [title(f"gaincell {design.name}: write {stored_v:.4g} V, read {pulse_s:.4g} s"), *library_lines(design),
             temperature_line(design), cell_subcircuits(design),
             voltage("dd", "vdd", GROUND, design.vdd_v),
             voltage("wwl", "wwl", GROUND, Pulse(0, design.write_wl_v, 1e-9, edge, edge, design.write_time_s)),
             voltage("wbl", "wbl", GROUND, Pwl(((0, stored_v), (t_write_end + 1e-9, stored_v),
                                                (t_write_end + 1e-9 + edge, design.zero_v)))),
             voltage("rwl", "rwl", GROUND, Pulse(0, v_in, t_read, edge, edge, pulse_s)),
             voltage("rbl", "rbl", GROUND, design.zero_v),
             row_inverter("inv", "rwl", "rwlb", "vdd"),
             cell_instance(design, "cell", wwl="wwl", wbl="wbl", rwl="rwl", rwlb="rwlb", rbl="rbl", vdd="vdd"),
             options({"method": "gear"})]  # trapezoidal integration rings on the ideal sources
    save = ["v(xcell.sn)", "v(wwl)", "v(wbl)", "v(rwl)", "v(rwlb)", "i(vrbl)", "i(vdd)"]
    return "\n".join(lines), Transient(step_s=20e-12, stop_s=stop, max_step_s=20e-12), save


def read_drive_lines(design: CellDesign, pulse_s: float, vin_v: float, delay_s: float, suffix: str = "") -> list[str]:
    """An ideal complementary pair of read pulses: rwl 0 -> vin_v, rwlb VDD -> 0, 50 ps edges (sources
    `vrwl{suffix}`, `vrwlb{suffix}` on nodes `rwl{suffix}`, `rwlb{suffix}`); a zero width holds both idle."""
    rwl, rwlb = f"rwl{suffix}", f"rwlb{suffix}"
    if pulse_s <= 0:
        return [voltage(rwl, rwl, GROUND, 0), voltage(rwlb, rwlb, GROUND, design.vdd_v)]
    return [voltage(rwl, rwl, GROUND, Pulse(0, vin_v, delay_s, width=pulse_s)),
            voltage(rwlb, rwlb, GROUND, Pulse(design.vdd_v, 0, delay_s, width=pulse_s))]


def drawn_energy(t: np.ndarray, v: np.ndarray | float, i_source: np.ndarray) -> float:
    """Energy drawn from a source: the integral of its delivered power where positive (ngspice's source
    current flows into the + terminal, so delivered power is -v*i). Energy flowing back into an ideal
    source is not credited: a real driver burns that charge to ground."""
    power = -np.asarray(v) * i_source
    return float(np.trapezoid(np.maximum(power, 0.0), t))


@dataclass(frozen=True)
class CellTestbench(Testbench):
    """Shared parts of the cell testbenches: model libraries and cell subcircuits, design provenance."""

    design: CellDesign

    def preamble(self) -> str:
        return "\n".join(library_lines(self.design) + [temperature_line(self.design), cell_subcircuits(self.design)])

    def describe(self) -> dict:
        fields = {k: v for k, v in self.__dict__.items() if k != "design"}
        return {"design": self.design.to_dict(), **fields}

    def cell_line(self) -> str:
        """The testbench's cell `xc`, each port on the node of the same name."""
        return cell_instance(self.design, "c", self.cell_shifts_params(), wwl="wwl", wbl="wbl", rwl="rwl", rwlb="rwlb",
                             rbl="rbl", vdd="vdd")

    def cell_shifts_params(self) -> dict[str, str]:
        """Threshold shifts of the cell `xc` taken from the point's own parameters (none: the design's)."""
        return {}


@dataclass(frozen=True)
class CellRead(CellTestbench):
    """Read surface: charge per read vs stored voltage x pulse width x input amplitude, and read energy.

    Sweep parameters: `stored_v` (set on the storage node by `.ic`), `pulse_s`, `vin_v`; the read pulse and
    its complement are ideal sources shared by the netlist's cells (the row inverter is periphery).
    Results per point: waveforms `i_cell_a`, `v(sn)`; scalars `charge_c` (integral of i_cell), `i_mid_a`
    (current at mid-pulse), `sn_disturb_v` (largest storage-node excursion), energies drawn per cell and
    read (see `drawn_energy`): `e_vdd_j` (supply), `e_bitline_j` (the bit-line hold source, i.e. the
    integrator), `e_drive_j` (this cell's share of the pulse drivers), `e_read_j` (their sum).
    """

    max_step_s: float = 1e-9

    name = "cell-read"
    subckt_name = "readpoint"
    ports = ("rwl", "rwlb")
    probes = ("i(v.vrbl)", "i(v.vdd)", "v(xc.sn)")
    shared_probes = ("i(vrwl)", "i(vrwlb)", "v(rwl)", "v(rwlb)")
    max_pack = 40  # BSIM4 evaluation dominates; past ~50 instances a netlist gets slower per point
    delay_s = 1e-9

    def shared_lines(self, points) -> str:
        """One ideal read-pulse driver pair per netlist: its points share pulse width and amplitude."""
        return "\n".join(read_drive_lines(self.design, points[0]["pulse_s"], points[0]["vin_v"], self.delay_s))

    def subcircuit(self) -> str:
        d = self.design
        return self.point_subcircuit({"stored_v": d.zero_v, "pulse_s": d.t_max_s, "vin_v": d.v_in_v}, [
            voltage("dd", "vdd", GROUND, d.vdd_v), voltage("wwl", "wwl", GROUND, 0),
            voltage("wbl", "wbl", GROUND, d.zero_v), voltage("rbl", "rbl", GROUND, d.zero_v), self.cell_line(),
            initial_condition("xc.sn", param("stored_v"))])

    def pack_key(self, point):
        return (point["pulse_s"], point["vin_v"])  # instances of a netlist then share their pulse edges

    def analysis(self, points) -> Transient:
        # the pulse edges are breakpoints, so a 1 ns TMAX gives the same charge as 20 ps to 6e-4 of full scale
        longest = max(p.get("pulse_s", self.design.t_max_s) for p in points)
        return Transient(step_s=100e-12, stop_s=self.delay_s + longest + 3e-9, max_step_s=self.max_step_s)

    def options(self) -> dict:
        return {"method": "gear"}  # trapezoidal integration rings on the ideal sources

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        i_cell = -vectors["i(v.vrbl)"]
        sn = vectors["v(xc.sn)"]
        mid = self.delay_s + point["pulse_s"] / 2
        n = int(vectors["n_instances"])
        e_vdd = drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"])
        e_bitline = drawn_energy(t, d.zero_v, vectors["i(v.vrbl)"])
        e_drive = (drawn_energy(t, vectors["v(rwl)"], vectors["i(vrwl)"])
                   + drawn_energy(t, vectors["v(rwlb)"], vectors["i(vrwlb)"])) / n
        return {"time": t, "i_cell_a": i_cell, "v(sn)": sn,
                "charge_c": np.asarray(np.trapezoid(i_cell, t)),
                "i_mid_a": np.asarray(np.interp(mid, t, i_cell)),
                "sn_disturb_v": np.asarray(np.max(np.abs(sn - point["stored_v"]))),
                "e_vdd_j": np.asarray(e_vdd), "e_bitline_j": np.asarray(e_bitline), "e_drive_j": np.asarray(e_drive),
                "e_read_j": np.asarray(e_vdd + e_bitline + e_drive)}


@dataclass(frozen=True)
class CellWrite(CellTestbench):
    """Write: DAC level -> stored voltage after the write word line falls (feedthrough included).

    Sweep parameter: `level_v` (the value on the write bit line). The storage node starts at the opposite
    value (VDD - level, the worst case) by `.ic`; the word line is high for `design.write_time_s`, then
    falls; 1 ns later the bit line parks at VDD/2. Results: `stored_v` (storage node `settle_s` after the
    word line fell), `error_v` (stored - level), `e_write_j` (energy drawn from the word-line and bit-line
    drivers for this cell), waveforms `v(sn)`, `v(wwl)`.
    """

    settle_s: float = 5e-9

    name = "cell-write"
    subckt_name = "writepoint"
    probes = ("v(xc.sn)", "v(wwl)", "v(wbl)", "i(v.vwwl)", "i(v.vwbl)")
    max_pack = 40

    def _times(self) -> tuple[float, float]:
        fall = 1e-9 + self.design.write_time_s
        return fall, fall + self.settle_s

    def subcircuit(self) -> str:
        d = self.design
        fall, _ = self._times()
        park = fall + 1e-9
        return self.point_subcircuit({"level_v": d.zero_v}, [
            voltage("dd", "vdd", GROUND, d.vdd_v),
            voltage("wwl", "wwl", GROUND, Pulse(0, d.write_wl_v, 1e-9, width=d.write_time_s)),
            voltage("wbl", "wbl", GROUND, Pwl(((0, param("level_v")), (park, param("level_v")),
                                               (park + 50e-12, d.zero_v)))),
            voltage("rwl", "rwl", GROUND, 0), voltage("rwlb", "rwlb", GROUND, d.vdd_v),
            voltage("rbl", "rbl", GROUND, d.zero_v), self.cell_line(),
            initial_condition("xc.sn", expression(d.vdd_v, "-", "level_v"))])

    def analysis(self, points) -> Transient:
        _, end = self._times()
        return Transient(step_s=50e-12, stop_s=end, max_step_s=100e-12)

    def options(self) -> dict:
        return {"method": "gear"}

    def extract(self, vectors, point):
        t, sn = vectors["time"], vectors["v(xc.sn)"]
        _, end = self._times()
        stored = float(np.interp(end, t, sn))
        energy = (drawn_energy(t, vectors["v(wwl)"], vectors["i(v.vwwl)"])
                  + drawn_energy(t, vectors["v(wbl)"], vectors["i(v.vwbl)"]))
        return {"time": t, "v(sn)": sn, "v(wwl)": vectors["v(wwl)"], "stored_v": np.asarray(stored),
                "error_v": np.asarray(stored - point["level_v"]), "e_write_j": np.asarray(energy)}


@dataclass(frozen=True)
class CellRetention(CellTestbench):
    """Retention: storage-node voltage from 0 to `stop_s` while holding (word line at 0 V, write bit line at
    `design.hold_wbl_v`, read lines idle), simulated with `design.retention_gmin_s`.

    Sweep parameter: `stored_v` (initial value by `.ic`). Results: waveform `v(sn)`; scalars `v_end_v`,
    `t_loss10_s` (time to lose 10 % of the initial excess over the hold level) and `tau_1e_s` (to 1/e of it),
    each linearly extrapolated from the mean decay rate when the run ends first (`extrapolated` = 1).
    """

    stop_s: float = 100e-3
    max_step_s: float = 100e-6

    name = "cell-retention"
    subckt_name = "holdpoint"
    probes = ("v(xc.sn)",)
    max_pack = 40

    def subcircuit(self) -> str:
        d = self.design
        return self.point_subcircuit({"stored_v": d.zero_v}, [
            voltage("dd", "vdd", GROUND, d.vdd_v), voltage("wwl", "wwl", GROUND, 0),
            voltage("wbl", "wbl", GROUND, d.hold_wbl_v), voltage("rwl", "rwl", GROUND, 0),
            voltage("rwlb", "rwlb", GROUND, d.vdd_v), voltage("rbl", "rbl", GROUND, d.zero_v), self.cell_line(),
            initial_condition("xc.sn", param("stored_v"))])

    def analysis(self, points) -> Transient:
        return Transient(step_s=1e-6, stop_s=self.stop_s, max_step_s=self.max_step_s)

    def options(self) -> dict:
        return {"gmin": self.design.retention_gmin_s}

    def extract(self, vectors, point):
        t, sn = vectors["time"], vectors["v(xc.sn)"]
        excess = sn - self.design.hold_wbl_v
        start = excess[0]
        out = {"time": t, "v(sn)": sn, "v_end_v": np.asarray(sn[-1])}
        extrapolated = 0.0
        for name, fraction in (("t_loss10_s", 0.9), ("tau_1e_s", np.exp(-1))):
            below = np.nonzero(excess <= fraction * start)[0] if start > 0 else np.array([0])
            if below.size:
                k = below[0]
                out[name] = np.asarray(np.interp(fraction * start, excess[k - 1:k + 1][::-1], t[k - 1:k + 1][::-1])
                                       if k > 0 else t[0])
            else:
                rate = (start - excess[-1]) / t[-1]
                out[name] = np.asarray((1 - fraction) * start / rate if rate > 0 else np.inf)
                extrapolated = 1.0
        out["extrapolated"] = np.asarray(extrapolated)
        return out

"""Gain-cell circuits built from a `CellDesign`: the cell subcircuit text, single-cell transients and
the packed testbenches the characterization sweeps use.

Sign convention: the cell current `i_cell` flows from the read bit line into the cell (positive for
stored voltages above the zero crossing). The bit line is held at VDD/2 by the source `vrbl`, whose
ngspice current is the negative of that, so `i_cell = -i(vrbl)`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PySpice.Spice.Netlist import Circuit

from gaincell.design import CellDesign
from gaincell.errors import ConfigError
from gaincell.resources import netlist_path

from .analysis import Transient
from .sweep import Testbench

CELL_FILE = "gaincell_signed.sub"


@lru_cache(maxsize=None)
def _shipped_text(name: str) -> str:
    return netlist_path(name).read_text()


def library_lines(design: CellDesign) -> list[str]:
    """`.include` (or `.lib FILE CORNER`) lines for the design's model libraries, absolute paths."""
    lines = []
    for library in design.model_libraries:
        path = design.library_path(library)
        lines.append(f".lib {path} {design.corner}" if design.corner else f".include {path}")
    return lines


def cell_subcircuits(design: CellDesign) -> str:
    """The shipped signed-cell subcircuits, with model names mapped onto the design's PDK names."""
    text = _shipped_text(CELL_FILE)
    for shipped, own in design.model_names:
        text = re.sub(rf"(?<=\s){re.escape(shipped)}(?=\s)", own, text)
    return text


def cell_instance_params(design: CellDesign) -> str:
    return " ".join(f"{k}={v:.6g}" for k, v in design.cell_params().items())


def cell_transient(design: CellDesign, stored_v: float, pulse_s: float, v_in_v: float | None = None):
    """One write of `stored_v` through the write transistor, then one read pulse of `pulse_s`.

    Returns (PySpice Circuit, Transient, save list). Timeline: the write word line is high for
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
    circuit = Circuit(f"gaincell {design.name}: write {stored_v:.4g} V, read {pulse_s:.4g} s")
    for line in library_lines(design):
        circuit.raw_spice += line + "\n"
    circuit.raw_spice += cell_subcircuits(design) + "\n"
    circuit.V("dd", "vdd", circuit.gnd, design.vdd_v)
    circuit.PulseVoltageSource("wwl", "wwl", circuit.gnd, initial_value=0, pulsed_value=design.write_wl_v,
                               delay_time=1e-9, rise_time=edge, fall_time=edge,
                               pulse_width=design.write_time_s, period=1.0)
    circuit.PieceWiseLinearVoltageSource("wbl", "wbl", circuit.gnd, values=[
        (0, stored_v), (t_write_end + 1e-9, stored_v), (t_write_end + 1e-9 + edge, design.zero_v)])
    circuit.PulseVoltageSource("rwl", "rwl", circuit.gnd, initial_value=0, pulsed_value=v_in, delay_time=t_read,
                               rise_time=edge, fall_time=edge, pulse_width=pulse_s, period=1.0)
    circuit.V("rbl", "rbl", circuit.gnd, design.zero_v)
    circuit.X("inv", "rwl_inv", "rwl", "rwlb", "vdd")
    circuit.raw_spice += f"xcell wwl wbl rwl rwlb rbl vdd {design.cell_subckt} params: {cell_instance_params(design)}\n"
    circuit.raw_spice += ".options method=gear\n"  # trapezoidal integration rings on the ideal sources
    save = ["v(xcell.sn)", "v(wwl)", "v(wbl)", "v(rwl)", "v(rwlb)", "i(vrbl)", "i(vdd)"]
    return circuit, Transient(step_s=20e-12, stop_s=stop, max_step_s=20e-12), save


def read_drive_lines(design: CellDesign, pulse_s: float, vin_v: float, delay_s: float) -> list[str]:
    """Supply and an ideal complementary pair of read pulses: rwl 0 -> vin_v, rwlb VDD -> 0, 50 ps edges."""
    timing = f"{delay_s:.12g} 50p 50p {pulse_s:.12g} 1"
    return [f"vdd vdd 0 {design.vdd_v}", f"vrwl rwl 0 PULSE(0 {vin_v:.12g} {timing})",
            f"vrwlb rwlb 0 PULSE({design.vdd_v} 0 {timing})"]


@dataclass(frozen=True)
class CellRead(Testbench):
    """Read surface: charge per read vs stored voltage x pulse width x input amplitude.

    Sweep parameters: `stored_v` (set on the storage node by `.ic`), `pulse_s`, `vin_v`; the read pulse and
    its complement are ideal sources (the row inverter is periphery, characterized elsewhere). Results per
    point: waveforms `i_cell_a` and `v(sn)`; scalars `charge_c` (integral of i_cell), `i_mid_a` (cell
    current at mid-pulse), `sn_disturb_v` (largest storage-node excursion during the read).
    """

    design: CellDesign
    max_step_s: float = 1e-9

    name = "cell-read"
    subckt_name = "readpoint"
    probes = ("i(v.vrbl)", "v(xc.sn)")
    max_pack = 40  # BSIM4 evaluation dominates; past ~50 instances a netlist gets slower per point
    delay_s = 1e-9

    ports = ("rwl", "rwlb", "vdd")

    def preamble(self) -> str:
        return "\n".join(library_lines(self.design) + [cell_subcircuits(self.design)])

    def shared_lines(self, points) -> str:
        """One ideal complementary read-pulse driver per netlist (its points share pulse width and amplitude);
        ideal sources, so sharing them changes nothing for the cells."""
        return "\n".join(read_drive_lines(self.design, points[0]["pulse_s"], points[0]["vin_v"], self.delay_s))

    def subcircuit(self) -> str:
        d = self.design
        return "\n".join([
            f".subckt readpoint rwl rwlb vdd params: stored_v={d.zero_v} pulse_s={d.t_max_s} vin_v={d.v_in_v}",
            "vwwl wwl 0 0",
            f"vwbl wbl 0 {d.zero_v}",
            f"vrbl rbl 0 {d.zero_v}",
            f"xc wwl wbl rwl rwlb rbl vdd {d.cell_subckt} params: {cell_instance_params(d)}",
            ".ic v(xc.sn)={stored_v}",
            ".ends readpoint",
        ])

    def pack_key(self, point):
        return (point["pulse_s"], point["vin_v"])  # instances of a netlist then share their pulse edges

    def analysis(self, points) -> Transient:
        # the pulse edges are breakpoints, so a 1 ns TMAX gives the same charge as 20 ps to 6e-4 of full scale
        longest = max(p.get("pulse_s", self.design.t_max_s) for p in points)
        return Transient(step_s=100e-12, stop_s=self.delay_s + longest + 3e-9, max_step_s=self.max_step_s)

    def options(self) -> dict:
        return {"method": "gear"}  # trapezoidal integration rings on the ideal sources

    def describe(self) -> dict:
        return {"design": self.design.to_dict(), "delay_s": self.delay_s, "max_step_s": self.max_step_s}

    def extract(self, vectors, point):
        t = vectors["time"]
        i_cell = -vectors["i(v.vrbl)"]
        sn = vectors["v(xc.sn)"]
        mid = self.delay_s + point["pulse_s"] / 2
        return {"time": t, "i_cell_a": i_cell, "v(sn)": sn,
                "charge_c": np.asarray(np.trapezoid(i_cell, t)),
                "i_mid_a": np.asarray(np.interp(mid, t, i_cell)),
                "sn_disturb_v": np.asarray(np.max(np.abs(sn - point["stored_v"])))}

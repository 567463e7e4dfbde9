"""Charge-to-pulse converters (netlists/c2p.sub): the design, the transfer-curve testbench and its sweeps.

    gaincell characterize --design cmos-generic --c2p --out char.h5     # adds the sweeps `c2p`, `c2p_signed`

`C2PTransfer` feeds a known charge into a converter (an ideal current for the integration time, as a column
would) and measures the output pulse width (integral of the output / VDD, which also works for zero-width
pulses), the energy drawn per conversion and, for the signed converter, the sign and the 5-bit counter value.
A charge that never fires the converter (at or below its threshold) gives width 0 and `fired` = 0: it is
reported (see `never_fired`), not hidden.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from gaincell.design import CellDesign
from gaincell.periphery import C2PDesign

from .cells import CellTestbench, drawn_energy, shipped_subcircuits
from .instances import shipped_subcircuit
from .spice.analysis import Transient
from .spice.elements import GROUND, Pulse, comment, current, expression, voltage
from .sweep import Sweep

C2P_FILE = "c2p.sub"
EDGE_S = 50e-12


def converter_lines(name: str, column_node: str, out: str, design: C2PDesign, signed: bool) -> list[str]:
    """One converter instance on `column_node`; signed converters drive `{out}p` / `{out}n`."""
    params = {"cint": design.cint_f, "iref": design.iref_signed_a if signed else design.iref_a, "gain": design.gain}
    if signed:
        nodes = {"in": column_node, "outp": f"{out}p", "outn": f"{out}n", "vdd": "vdd", "win": "win", "trk": "trk",
                 "rst": "rst"}
        return [shipped_subcircuit(C2P_FILE, "c2p_signed").instance(name, nodes, params)]
    nodes = {"in": column_node, "out": out, "vdd": "vdd", "win": "win", "rst": "rst"}
    return [shipped_subcircuit(C2P_FILE, "c2p").instance(name, nodes, params)]


def window_lines(design: CellDesign, opens_s: float, read_starts_s: float) -> list[str]:
    """The integrators' reset (released when the read starts), the conversion window (T_max from `opens_s`)
    and the signed converters' sign-tracking line."""
    vdd = design.vdd_v
    return [voltage("rst", "rst", GROUND, Pulse(vdd, 0, read_starts_s - 0.1e-9, width=1, period=2)),
            voltage("win", "win", GROUND, Pulse(0, vdd, opens_s, width=design.t_max_s)),
            voltage("trk", "trk", GROUND, Pulse(vdd, 0, opens_s - 0.1e-9, width=1, period=2))]


def pulse_width(t: np.ndarray, v: np.ndarray, vdd: float) -> float:
    """Width of an output pulse as the integral of the output over VDD (0 for a pulse that never rose)."""
    return float(np.trapezoid(v, t) / vdd)


def counter_value(width_s: float, t_max_s: float, levels: int) -> int:
    """The counter: clock periods T_max / (levels - 1) the pulse covers, sampled mid-period (= rounding)."""
    return int(min(levels - 1, max(0, round(width_s / (t_max_s / (levels - 1))))))


@dataclass(frozen=True)
class C2PTransfer(CellTestbench):
    """Transfer curve of a converter: output pulse vs input charge (sweep parameter `charge_c`).

    The charge is drawn from the converter's input by an ideal current over `design.t_max_s` (as a column
    read would); the window opens `c2p.gap_s` later. Results: `width_s`, `fired` (1 if a pulse came out),
    `e_conversion_j` (energy drawn from VDD per conversion: reference current and output buffers), the
    signed converter's `sign` and `count` (counter value), waveforms `v(vo)` and the output(s).
    """

    c2p: C2PDesign = C2PDesign()
    signed: bool = False

    name = "c2p-transfer"
    subckt_name = "c2ppoint"
    max_pack = 40

    @property
    def probes(self):
        outs = ("v(outp)", "v(outn)") if self.signed else ("v(out)",)
        return ("v(xc.vo)", "i(v.vdd)") + outs

    @property
    def window_opens_s(self) -> float:
        return 0.2e-9 + self.design.t_max_s + self.c2p.gap_s

    def preamble(self) -> str:
        return super().preamble() + "\n" + shipped_subcircuits(self.design, C2P_FILE)

    def describe(self) -> dict:
        return {"design": self.design.to_dict(), "c2p": dataclasses.asdict(self.c2p), "signed": self.signed}

    def subcircuit(self) -> str:
        d = self.design
        start, width = 0.2e-9, d.t_max_s
        outs = "outp outn" if self.signed else "out"
        drawn = expression("charge_c", "/", width + EDGE_S)  # the charge over the pulse's width, edges included
        return self.point_subcircuit({"charge_c": 0}, [
            voltage("dd", "vdd", GROUND, d.vdd_v),
            current("in", "in", GROUND, Pulse(0, drawn, start, EDGE_S, EDGE_S, width)),
            *converter_lines("c", "in", "out", self.c2p, self.signed),
            comment(f"outputs: {outs}")])

    ports = ("win", "trk", "rst")

    def shared_lines(self, points) -> str:
        return "\n".join(window_lines(self.design, self.window_opens_s, 0.2e-9))

    def analysis(self, points) -> Transient:
        stop = self.window_opens_s + self.design.t_max_s + 1e-9
        return Transient(step_s=100e-12, stop_s=stop, max_step_s=0.5e-9)

    def options(self) -> dict:
        return {"method": "gear"}

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        out = {"time": t, "v(vo)": vectors["v(xc.vo)"],
               "e_conversion_j": np.asarray(drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"]))}
        out |= pulse_readout(vectors, d, self.c2p.counter_levels, self.signed)
        out["fired"] = np.asarray(float(out["width_s"] > FIRED_MIN_FRACTION * d.t_max_s))
        return out


def pulse_readout(vectors: dict, design, counter_levels: int, signed: bool) -> dict:
    """A converter's output pulses from a transient: the width (s), and for the signed converter the sign
    and the counter value, with the output waveforms."""
    t = vectors["time"]
    if not signed:
        return {"v(out)": vectors["v(out)"], "width_s": np.asarray(pulse_width(t, vectors["v(out)"], design.vdd_v))}
    positive, negative = (pulse_width(t, vectors[n], design.vdd_v) for n in ("v(outp)", "v(outn)"))
    width, sign = (positive, 1.0) if positive >= negative else (negative, -1.0)
    return {"v(outp)": vectors["v(outp)"], "v(outn)": vectors["v(outn)"], "sign": np.asarray(sign),
            "count": np.asarray(float(counter_value(width, design.t_max_s, counter_levels))),
            "width_s": np.asarray(width)}


FIRED_MIN_FRACTION = 1e-3  # a pulse shorter than this fraction of T_max counts as "never fired"


def c2p_sweeps(design: CellDesign, c2p: C2PDesign = C2PDesign(), points: int = 41) -> list[Sweep]:
    """The unsigned transfer from -0.5 to 1.5 saturation charges and the signed one over +-1.5 full scales."""
    q_sat = c2p.iref_a * design.t_max_s
    full_scale = c2p.iref_signed_a * design.t_max_s
    return [Sweep("c2p", C2PTransfer(design, c2p=c2p), {"charge_c": np.linspace(-0.5, 1.5, points) * q_sat}),
            Sweep("c2p_signed", C2PTransfer(design, c2p=c2p, signed=True),
                  {"charge_c": np.linspace(-1.5, 1.5, points) * full_scale})]


def never_fired(charges_c: np.ndarray, fired: np.ndarray, where: str = "conversions") -> str:
    """A sentence naming the conversions whose charge produced no pulse (empty if every one fired)."""
    charges_c, fired = np.asarray(charges_c, dtype=float), np.asarray(fired)
    silent = np.nonzero(fired < 0.5)[0]
    if not silent.size:
        return ""
    return (f"{silent.size} of {fired.size} {where} never fired (charge at or below the threshold, "
            f"{charges_c[silent].min():.4g} .. {charges_c[silent].max():.4g} C; at {[int(i) for i in silent[:10]]}"
            f"{' ...' if silent.size > 10 else ''}): their output is 0")

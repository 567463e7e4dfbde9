"""Small reference testbenches with analytic answers, used by tests, benchmarks and as examples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaincell.errors import ConfigError

from .spice.analysis import Transient
from .spice.elements import GROUND, Pulse, behavioral_current, capacitor, param, resistor, voltage
from .sweep import Testbench


@dataclass(frozen=True)
class RCStep(Testbench):
    """A resistor charging a capacitor from a `v_step` step at t = 0 (sweep params: `r`, `c`).

    Analytic answer: v(out) = v_step (1 - exp(-t / (r c))). Results per point: the waveforms `v(out)`
    and `i(v.vdrive)` and the scalar `v_final` (at `stop_s`).
    """

    stop_s: float = 5e-6
    step_s: float = 10e-9
    v_step: float = 1.0
    runaway_gain: float = 0.0

    name = "rc-step"
    subckt_name = "rcstep"
    probes = ("v(out)", "i(v.vdrive)")

    def __post_init__(self):
        if not self.stop_s > 0:
            raise ConfigError("stop_s", f"must be > 0 s, got {self.stop_s}")
        if not self.step_s > 0:
            raise ConfigError("step_s", f"must be > 0 s, got {self.step_s}")

    def subcircuit(self) -> str:
        # `runaway` (0 or 1 per point) adds a current source with exploding positive feedback: ngspice
        # then stops with "timestep too small", the canonical non-converging point for tests.
        return self.point_subcircuit({"r": 1e3, "c": 1e-9, "runaway": 0}, [
            voltage("drive", "drive", GROUND, Pulse(0, self.v_step, 0, 1e-12, 1e-12, 1, 2)),
            resistor("1", "drive", "out", param("r")),
            capacitor("1", "out", GROUND, param("c")),
            behavioral_current("fb", GROUND, "out", "{runaway} * exp(400 * v(out)) * v(drive)")])

    def analysis(self, points) -> Transient:
        return Transient(step_s=self.step_s, stop_s=self.stop_s, max_step_s=self.step_s)

    def extract(self, vectors, point):
        out = dict(vectors)
        out["v_final"] = np.asarray(vectors["v(out)"][-1])
        return out

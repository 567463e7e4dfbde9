"""Testbenches for the sweep tests; a module of its own so worker processes can import them."""
import os
import signal
from dataclasses import dataclass

from gaincell.circuits.testbenches import RCStep

R_OHM, C_F = 1e3, 1e-6
RC_AC = f"""* RC low-pass, AC sweep
V1 in 0 dc 0 ac 1
R1 in out {R_OHM:g}
C1 out 0 {C_F:g}
.ac dec 10 1 1e6
.end
"""


@dataclass(frozen=True)
class FaultyRC(RCStep):
    """RCStep where one point never converges and another kills its worker while `crash_flag` exists."""

    runaway_r: float = 3e3
    crash_r: float = 5e3
    crash_flag: str = ""

    def instance_params(self, point):
        return {**point, "runaway": 1.0 if point["r"] == self.runaway_r and point["c"] == 1e-9 else 0.0}

    def extract(self, vectors, point):
        if point["r"] == self.crash_r and point["c"] == 2e-9 and os.path.exists(self.crash_flag):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().extract(vectors, point)

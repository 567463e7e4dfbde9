"""Stage 2: circuits and simulation.

The circuit generators (`cells`, `arrays`, `c2p`, `dac`, `tile`, the reference `testbenches`) build
testbenches from a design; `Sweep` + `run_sweep` simulate grids of points packed into few netlists on a
process pool or Dask, into the HDF5 store. Below them, the `spice` subpackage runs one netlist (`spice.run`:
PySpice shared mode or `ngspice -b`).
"""
from .sweep import Sweep, SweepReport, Testbench, run_sweep

__all__ = ["Sweep", "SweepReport", "Testbench", "run_sweep"]

"""Stage 2: circuits and simulation.

`run` simulates one circuit or netlist (PySpice shared mode or `ngspice -b`); `Sweep` + `run_sweep`
simulate grids of points packed into few netlists on a process pool or Dask, into the HDF5 store.
"""
from .analysis import AC, DCSweep, OperatingPoint, Transient
from .netlist import Netlist, prepare
from .simulator import SimResult, run
from .sweep import Sweep, SweepReport, Testbench, run_sweep

__all__ = ["AC", "DCSweep", "OperatingPoint", "Transient", "Netlist", "prepare", "SimResult", "run", "Sweep",
           "SweepReport", "Testbench", "run_sweep"]

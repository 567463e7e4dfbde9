"""The simulator infrastructure under the circuit generators: from netlist text to named numpy vectors.

`analysis` (control cards), `netlist` (`prepare`: the deck a simulator runs) with its `trust` policy and
`params` arithmetic, `engines` (ngspice shared and batch), `workers` (a process pool that survives ngspice
crashes, started through `worker_entry.py`), `rawfile` (ngspice raw files), `simulator` (`run`: one
circuit or netlist with either backend), and for sweeps `chunks` (a packed chunk simulated in a worker, chunks
dispatched to the pool or Dask) and `parts` (finished chunks saved beside the HDF5 file until merged).
"""
from .analysis import AC, DCSweep, OperatingPoint, Transient
from .netlist import Netlist, prepare
from .simulator import SimResult, run

__all__ = ["AC", "DCSweep", "OperatingPoint", "Transient", "Netlist", "prepare", "SimResult", "run"]

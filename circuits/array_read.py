"""Running an array read (`arrays.py`): the cost model (predicted wall time and ngspice memory), the budget
check that refuses an array before anything runs, `read_array` and its `ArrayResult`, and random inputs.

The cost is BSIM4 device evaluations (5 per cell, ~1-3 us each per Newton iteration on this machine) times
the time points, and the time points are set by the pulse edges (ngspice restarts small steps at every edge
breakpoint: ~14 points per edge). Each array layout (`arrays.py`) says how its read splits into netlists
(`ReadPlan`); the rest is the same for both.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gaincell.design import CellDesign
from gaincell.errors import ConfigError

from .sweep import SweepReport, run_sweep

# Measured on this project's 2-core machine (benchmarks/RESULTS.md, "Array read"): the cost model's constants.
DEVICE_EVAL_S = 2.5e-6  # one BSIM4 device evaluation per Newton iteration, in a netlist of <= CACHE_CELLS cells
CACHE_CELLS = 64  # bigger netlists cost more per device (cache misses): x sqrt(cells / CACHE_CELLS), measured
#                   2.1 us at 64 cells, 3.5-5 us at 256, ~6 us at 512; 2 rows of 64 cells cost 2.4x one row
ITERATIONS_PER_TIMEPOINT = 3.5
TIMEPOINTS_PER_EDGE = 14  # ngspice cuts the step to 1/10 at each pulse-edge breakpoint, then doubles it back
NETLIST_SETUP_S = 0.02  # parsing, subcircuit expansion and the operating point of one netlist
WORKERS_START_S = 0.5  # starting the simulator processes
POINT_RECORD_S = 3.5e-4  # the main process's share per sweep point (task pickles, parts, HDF5): 64 x 64 cells
INPUT_CELL_S = 3e-6  # per array cell, simulated or not (inputs, states, the sweep's identity): 512 x 512 merged
BYTES_PER_CELL = 65e3  # ngspice's memory per signed cell: a 16 x 16 deck peaked at 30 MB, an empty one 13.5 MB
DEVICES_PER_CELL = 5


class ReadPlan(NamedTuple):
    """How a read splits into netlists: how many, the pulse edges in each, the cells in the largest, how many
    run at once, and the sweep points recorded."""

    netlists: int
    edges: int
    cells_per_netlist: int
    parallel: int
    points: int


def estimate_read(bench, workers: int = 1) -> tuple[float, float]:
    """Predicted wall time (s) and ngspice memory (bytes) of an array read `bench` (an `arrays.ArrayRead`)."""
    plan = bench.read_plan(workers)
    cells, timepoints = bench.simulated_cells, 10 + TIMEPOINTS_PER_EDGE * plan.edges
    evaluations = cells * DEVICES_PER_CELL * timepoints * ITERATIONS_PER_TIMEPOINT
    per_evaluation = DEVICE_EVAL_S * math.sqrt(max(1.0, plan.cells_per_netlist / CACHE_CELLS))
    simulating = (evaluations * per_evaluation + plan.netlists * NETLIST_SETUP_S) / plan.parallel
    seconds = WORKERS_START_S + plan.points * POINT_RECORD_S + bench.rows * bench.cols * INPUT_CELL_S + simulating
    return seconds, BYTES_PER_CELL * min(cells, plan.cells_per_netlist * plan.parallel)


def available_memory_bytes() -> float:
    """Free physical memory (infinite where the system does not say)."""
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_budget(bench, workers: int, max_seconds: float) -> tuple[float, float]:
    """Refuse, before anything runs, an array whose predicted time exceeds `max_seconds` or whose memory
    exceeds half the free memory; returns the estimate (seconds, bytes)."""
    seconds, memory = estimate_read(bench, workers)
    simulated = bench.simulated_cells
    allowed_memory = 0.5 * available_memory_bytes()
    size = (f"a {bench.rows} x {bench.cols} array ({bench.rows * bench.cols} cells, {simulated} to simulate, "
            f"{bench.distinct_widths} distinct pulse widths)")
    if seconds > max_seconds:
        per_cell = seconds / simulated
        raise ConfigError("rows x cols", f"{size} would take about {seconds:.0f} s on {workers} worker(s), over the "
                                         f"budget max_seconds = {max_seconds:g} s; allowed: about "
                                         f"{int(max_seconds / per_cell)} simulated cells at these settings "
                                         "(or raise max_seconds)")
    if memory > allowed_memory:
        raise ConfigError("rows x cols", f"{size} needs about {memory / 2**30:.1f} GiB in ngspice; allowed: half the "
                                         f"free memory, {allowed_memory / 2**30:.1f} GiB")
    return seconds, memory


@dataclass
class ArrayResult:
    """Column charges of one array read (and, for `CellStatesRead`, every cell's charge), the sweep report
    behind them and the up-front estimate."""

    charges_c: np.ndarray
    report: SweepReport
    estimate_s: float
    estimate_bytes: float
    cell_charges_c: np.ndarray | None = None  # (rows, cols), `CellStatesRead` only

    @property
    def failed_points(self) -> dict[str, list[int]]:
        """Cell states or columns that failed, by the sweep's parameter name."""
        data = self.report.data
        [name] = data.coords
        return {name: [int(i) for i in np.nonzero(data.status != 1)[0]]}


def read_array(bench, out, name: str = "array", workers: int | None = None, max_seconds: float = 300.0,
               progress: bool = True, restart: bool = False, backend: str = "shared") -> ArrayResult:
    """Simulate the read of `bench` (an `arrays.ArrayRead`) into `out` (HDF5 group `name`; resumes) after the
    budget check."""
    workers = workers or os.cpu_count() or 1
    seconds, memory = check_budget(bench, workers, max_seconds)
    report = run_sweep(bench.sweep(name, workers), out, workers=workers, progress=progress, restart=restart,
                       backend=backend)
    return bench.array_result(report, seconds, memory)


def random_array_inputs(design: CellDesign, rows: int, cols: int, seed: int = 0, pulse_levels: int = 16,
                        stored_levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stored values on the DAC levels (rows, cols) and pulse widths on `pulse_levels` levels of T_max (rows,)."""
    for name, value in (("rows", rows), ("cols", cols), ("pulse_levels", pulse_levels)):
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    levels = np.asarray(design.dac_voltages if stored_levels is None
                        else np.linspace(0, design.vdd_v, stored_levels))
    stored = levels[rng.integers(0, len(levels), (rows, cols))]
    pulses = rng.integers(0, pulse_levels, rows) / max(1, pulse_levels - 1) * design.t_max_s
    return stored, pulses

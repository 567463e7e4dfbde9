"""Gain-cell arrays: `rows` x `cols` signed cells read in one step, one column per stored token.

Rows are word lines (the head dimension for the K array: row r carries the read pulse of query element
r), columns are bit lines (one stored token each), held at VDD/2 by a source that stands for the column's
integrator; the charge it delivers is the column's dot product. Stored values are set by `.ic` on the storage
nodes, or written row by row through the write path (`write=True`). Wires are optional: a series resistance
and a capacitance to ground per cell along every bit line and word line, and a row-driver resistance.

Speed: the cost is BSIM4 device evaluations (5 per cell, ~1-3 us each per Newton iteration on this machine)
times the time points, and the time points are set by the pulse edges (ngspice restarts small steps at every
edge breakpoint: ~14 points per edge). Two layouts:
- `cells` (no wires, stored values by `.ic`): every cell is independent (its bit line is held by an ideal
  source and its row driver is ideal), so a cell's charge depends only on its stored value and its row's
  pulse width. A sweep point is one *cell state* (pulse width, stored value); cells of equal pulse width share
  a netlist and its driver (two edges per netlist) up to `CACHE_CELLS` cells (small netlists keep BSIM4 in
  cache). With `merge_identical` (default) each distinct state is simulated once and its charge counted for
  every cell in that state: exact for this layout, and what makes a read of quantized inputs cheap (stored
  values on the DAC levels x pulse widths on the input levels: a 64 x 64 array of 8 levels x 16 widths holds
  128 distinct cells). `merge_identical=False` simulates every cell (the baseline, and continuous inputs
  behave like it). Column charges are the sums over rows of the cells' charges.
- `columns` (bit-line wires, or the write path): a sweep point is one column; columns are packed a few per
  netlist. Word-line wires or a driver resistance couple the columns: the whole array is then one netlist.
`bypass` (ngspice skips re-evaluating a device whose terminal voltages did not move) is on by default:
measured effect on a column charge 5e-4 relative (benchmarks/RESULTS.md). `estimate_read` predicts time and
memory from the cells to simulate, the netlists and the pulse edges, and `check_budget` refuses an array that
would not fit before anything runs.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from gaincell.design import CellDesign
from gaincell.errors import ConfigError

from .analysis import Transient
from .cells import CellTestbench, cell_instance_params, drawn_energy, read_drive_lines
from .sweep import Sweep, SweepReport, run_sweep

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
READ_DELAY_S = 0.2e-9


@dataclass(frozen=True)
class Wires:
    """Distributed wire parasitics per cell and the row-driver resistance (all >= 0; 0 = ideal)."""

    bitline_r_ohm: float = field(default=0.0, metadata={"doc": "bit-line resistance per cell segment (ohm)"})
    bitline_c_f: float = field(default=0.0, metadata={"doc": "bit-line capacitance per cell (F)"})
    wordline_r_ohm: float = field(default=0.0, metadata={"doc": "word-line resistance per cell segment (ohm)"})
    wordline_c_f: float = field(default=0.0, metadata={"doc": "word-line capacitance per cell (F)"})
    driver_r_ohm: float = field(default=0.0, metadata={"doc": "row-driver output resistance (ohm)"})

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(name, f"must be a finite value >= 0, got {value!r}")

    @property
    def couples_columns(self) -> bool:
        """Word-line wires or driver resistance make every column load every other one."""
        return self.wordline_r_ohm > 0 or self.wordline_c_f > 0 or self.driver_r_ohm > 0

    @property
    def ideal(self) -> bool:
        return not any(self.__dict__.values())


def _ladder(prefix: str, start: str, nodes: list[str], r_ohm: float, c_f: float) -> list[str]:
    """A wire from `start` through `nodes` in order: a resistor before each node and a capacitor at it."""
    lines, previous = [], start
    for k, node in enumerate(nodes):
        if r_ohm > 0:
            lines.append(f"r{prefix}{k} {previous} {node} {r_ohm:.12g}")
        if c_f > 0:
            lines.append(f"c{prefix}{k} {node} 0 {c_f:.12g}")
        previous = node
    return lines


@dataclass(frozen=True)
class ArrayRead(CellTestbench):
    """A read of a whole array; a sweep point is one cell state (layout `cells`, `cell` = the state's index in
    `state_pulse_s` / `state_stored_v`) or one column (layout `columns`, `column` = its index).

    Results per point: waveform `i_cell_a` / `i_col_a` (current from the held bit line into the cell or the
    column), scalars `charge_c` (its integral over the read: the column's dot product, or one cell's share of
    it), `e_cells_j` (energy drawn from the supply and the bit-line hold source); layout `cells` also records
    each state's `pulse_s` and `stored_v`.
    """

    stored_v: tuple[tuple[float, ...], ...] = ()  # (rows, cols)
    pulse_s: tuple[float, ...] = ()  # (rows,) read pulse width per row, 0 = row not read
    wires: Wires = Wires()
    write: bool = False
    row_inverters: bool = False
    max_step_s: float = 1e-9
    bypass: bool = True
    layout_choice: str = "auto"  # "auto", or "columns" to force one point per column (a baseline)
    merge_identical: bool = True  # layout `cells`: simulate each distinct (pulse width, stored value) once

    name = "array-read"
    max_pack = 2

    @property
    def layout(self) -> str:
        """`cells` (independent cells, grouped by pulse width) or `columns` (see the module docstring)."""
        independent = self.wires.ideal and not self.write and not self.row_inverters
        return "cells" if independent and self.layout_choice == "auto" else "columns"

    @property
    def subckt_name(self) -> str:
        return "acell" if self.layout == "cells" else "column"

    probes = ("i(v.vbl)", "i(v.vdd)")

    @property
    def ports(self) -> tuple[str, ...]:
        return ("rwl", "rwlb") if self.layout == "cells" else ()

    def pack_key(self, point):
        return self.state_pulse_s[int(point["cell"])] if self.layout == "cells" else ()

    def __post_init__(self):
        d = self.design
        stored = np.asarray(self.stored_v, dtype=float)
        if stored.ndim != 2 or min(stored.shape) < 1:
            raise ConfigError("stored_v", f"must be a (rows, cols) matrix of volts, got shape {stored.shape}")
        if not (np.all(np.isfinite(stored)) and stored.min() >= 0 and stored.max() <= d.vdd_v):
            raise ConfigError("stored_v", f"values must be within 0..VDD = {d.vdd_v} V")
        pulses = np.asarray(self.pulse_s, dtype=float)
        if pulses.shape != (stored.shape[0],):
            raise ConfigError("pulse_s", f"needs one width per row ({stored.shape[0]}), got shape {pulses.shape}")
        if not (np.all(np.isfinite(pulses)) and pulses.min() >= 0 and pulses.max() <= d.t_max_s * (1 + 1e-9)):
            raise ConfigError("pulse_s", f"widths must be within 0..T_max = {d.t_max_s:g} s")
        if self.layout_choice not in ("auto", "columns"):
            raise ConfigError("layout_choice", f"must be 'auto' or 'columns', got {self.layout_choice!r}")
        if not self.max_step_s > 0:
            raise ConfigError("max_step_s", f"must be > 0 s, got {self.max_step_s}")
        if not isinstance(self.merge_identical, bool):
            raise ConfigError("merge_identical", f"must be True or False, got {self.merge_identical!r}")
        if not self.merge_identical and self.layout != "cells":
            raise ConfigError("merge_identical", "False (simulate every cell) applies to arrays without wires, "
                                                 "without the write path and without row inverters only: the others "
                                                 "are simulated column by column anyway")
        pairs = np.stack([np.broadcast_to(pulses[:, None], stored.shape).ravel(), stored.ravel()], axis=1)
        if self.merge_identical:
            pairs, state_of_cell = np.unique(pairs, axis=0, return_inverse=True)
        else:
            state_of_cell = np.arange(stored.size)
        # derived, not fields: set once here (the dataclass is frozen)
        object.__setattr__(self, "_states", (pairs[:, 0], pairs[:, 1], state_of_cell.reshape(stored.shape)))

    @property
    def state_pulse_s(self) -> np.ndarray:
        """Layout `cells`: the pulse width of each simulated cell state."""
        return self._states[0]

    @property
    def state_stored_v(self) -> np.ndarray:
        """Layout `cells`: the stored value of each simulated cell state."""
        return self._states[1]

    @property
    def state_of_cell(self) -> np.ndarray:
        """Layout `cells`: (rows, cols) index of each cell's state."""
        return self._states[2]

    @property
    def simulated_cells(self) -> int:
        """Cells ngspice simulates: one per state (layout `cells`), every cell (layout `columns`)."""
        return len(self.state_pulse_s) if self.layout == "cells" else self.rows * self.cols

    @property
    def distinct_widths(self) -> int:
        """Distinct non-zero pulse widths of the rows."""
        return len({round(p, 15) for p in self.pulse_s if p > 0})

    def describe(self) -> dict:
        return {k: v for k, v in super().describe().items() if k != "_states"}

    @classmethod
    def from_arrays(cls, design: CellDesign, stored_v, pulse_s, **options) -> "ArrayRead":
        """From a (rows, cols) matrix of stored volts and a (rows,) vector of pulse widths."""
        stored = np.atleast_2d(np.asarray(stored_v, dtype=float))
        return cls(design, tuple(tuple(float(x) for x in row) for row in stored),
                   tuple(float(p) for p in np.atleast_1d(np.asarray(pulse_s, dtype=float))), **options)

    @property
    def rows(self) -> int:
        return len(self.stored_v)

    @property
    def cols(self) -> int:
        return len(self.stored_v[0])

    @property
    def splittable(self) -> bool:  # a failed coupled array must not be bisected into a different circuit
        return not self.wires.couples_columns

    def _write_slot(self, row: int) -> float:
        """Time the write word line of `row` rises (rows are written one after another)."""
        return 1e-9 + row * (self.design.write_time_s + 1e-9)

    @property
    def read_start_s(self) -> float:
        return self._write_slot(self.rows) + 1e-9 if self.write else READ_DELAY_S

    def subcircuit(self) -> str:
        if self.layout == "cells":
            return self._cell_subcircuit()
        d, rows = self.design, self.rows
        ports = [f"rwl{r}" for r in range(rows)] + [f"rwlb{r}" for r in range(rows)]
        if self.write:
            ports += [f"wwl{r}" for r in range(rows)]
        params = " ".join(f"s{r}={d.zero_v}" for r in range(rows))
        lines = [f".subckt column {' '.join(ports)} params: {params}", f"vdd vdd 0 {d.vdd_v}",
                 f"vbl bl 0 {d.zero_v}"]
        if self.write:  # the column's write bit line carries each row's value during that row's slot
            knots = ["0 {s0}"]
            for r in range(1, rows):
                change = self._write_slot(r) - 0.5e-9
                knots += [f"{change:.12g} {{s{r - 1}}}", f"{change + 50e-12:.12g} {{s{r}}}"]
            park = self._write_slot(rows - 1) + d.write_time_s + 0.5e-9
            knots += [f"{park:.12g} {{s{rows - 1}}}", f"{park + 50e-12:.12g} {d.zero_v}"]
            lines.append(f"vwbl wbl 0 PWL({' '.join(knots)})")
        else:
            lines += [f"vwbl wbl 0 {d.zero_v}", "vwwl wwl 0 0"]
        w = self.wires
        if w.bitline_r_ohm > 0 or w.bitline_c_f > 0:
            cell_nodes = [f"b{r}" for r in range(rows)]
            lines += _ladder("bl", "bl", cell_nodes, w.bitline_r_ohm, w.bitline_c_f)
        else:
            cell_nodes = ["bl"] * rows
        params = cell_instance_params(d)
        for r in range(rows):
            wwl = f"wwl{r}" if self.write else "wwl"
            lines.append(f"x{r} {wwl} wbl rwl{r} rwlb{r} {cell_nodes[r]} vdd {d.cell_subckt} params: {params}")
            lines.append(f".ic v(x{r}.sn)=" + (f"{d.zero_v}" if self.write else f"{{s{r}}}"))
        lines.append(".ends column")
        return "\n".join(lines)

    def _cell_subcircuit(self) -> str:
        """One independent cell (stored value `s` by `.ic`) on its own held bit line `vbl` and supply `vdd`."""
        d = self.design
        return "\n".join([f".subckt acell rwl rwlb params: s={d.zero_v}", f"vdd vdd 0 {d.vdd_v}",
                          f"vwbl wbl 0 {d.zero_v}", "vwwl wwl 0 0", f"vbl bl 0 {d.zero_v}",
                          f"x1 wwl wbl rwl rwlb bl vdd {d.cell_subckt} params: {cell_instance_params(d)}",
                          ".ic v(x1.sn)={s}", ".ends acell"])

    def _line_nodes(self, kind: str, row: int) -> list[str]:
        """The node of row `row`'s line `kind` (rwl/rwlb) at each column."""
        if not self.wires.couples_columns:
            return [f"{kind}{row}"] * self.cols
        return [f"{kind}{row}_{c}" for c in range(self.cols)]

    def instance_ports(self, point):
        if self.layout == "cells":
            return self.ports
        c = int(point["column"])
        ports = [self._line_nodes("rwl", r)[c] for r in range(self.rows)]
        ports += [self._line_nodes("rwlb", r)[c] for r in range(self.rows)]
        if self.write:
            ports += [f"wwl{r}" for r in range(self.rows)]
        return tuple(ports)

    def instance_params(self, point):
        if self.layout == "cells":
            return {"s": float(self.state_stored_v[int(point["cell"])])}
        c = int(point["column"])
        return {f"s{r}": self.stored_v[r][c] for r in range(self.rows)}

    def shared_lines(self, points) -> str:
        """Row drivers (ideal complementary pulses, or a pulse and a row inverter), the word-line wires and
        the write word lines."""
        d, w = self.design, self.wires
        if self.layout == "cells":  # the chunk's cells share one pulse width, hence one driver pair
            width = float(self.state_pulse_s[int(points[0]["cell"])])
            return "\n".join(read_drive_lines(d, width, d.v_in_v, self.read_start_s))
        lines = [f"vddrow vddrow 0 {d.vdd_v}"] if self.row_inverters else []
        for r in range(self.rows):
            suffix = f"{r}_drv" if w.couples_columns else f"{r}"
            drive = read_drive_lines(d, self.pulse_s[r], d.v_in_v, self.read_start_s, suffix)
            lines.append(drive[0])
            if self.row_inverters:
                lines.append(f"xinv{r} rwl{suffix} rwlb{suffix} vddrow rwl_inv")
            else:
                lines.append(drive[1])
            if w.couples_columns:
                for kind in ("rwl", "rwlb"):
                    start = f"{kind}{r}_drv"
                    if w.driver_r_ohm > 0:
                        lines.append(f"rdrv{kind}{r} {start} {kind}{r}_out {w.driver_r_ohm:.12g}")
                        start = f"{kind}{r}_out"
                    lines += _ladder(f"{kind}{r}_", start, self._line_nodes(kind, r), w.wordline_r_ohm,
                                     w.wordline_c_f)
            if self.write:
                lines.append(f"vwwl{r} wwl{r} 0 PULSE(0 {d.write_wl_v} {self._write_slot(r):.12g} 50p 50p "
                             f"{d.write_time_s:.12g} 1)")
        return "\n".join(lines)

    def analysis(self, points) -> Transient:
        widths = [self.state_pulse_s[int(p["cell"])] for p in points] if self.layout == "cells" else self.pulse_s
        stop = self.read_start_s + max(widths) + 1e-9
        return Transient(step_s=100e-12, stop_s=stop, max_step_s=self.max_step_s)

    def options(self) -> dict:
        options = {"method": "gear"}  # trapezoidal integration rings on the ideal sources
        return options | ({"bypass": 1} if self.bypass else {})

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        current = -vectors["i(v.vbl)"]
        read = t >= self.read_start_s - 0.1e-9
        e_cells = drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"]) + drawn_energy(t, d.zero_v, vectors["i(v.vbl)"])
        out = {"time": t, "charge_c": np.asarray(np.trapezoid(current[read], t[read])),
               "e_cells_j": np.asarray(e_cells)}
        if self.layout == "columns":
            return out | {"i_col_a": current}
        state = int(point["cell"])  # recorded so the file alone maps cells to states (see `state_of_cell`)
        return out | {"i_cell_a": current, "pulse_s": np.asarray(float(self.state_pulse_s[state])),
                      "stored_v": np.asarray(float(self.state_stored_v[state]))}


def estimate_read(bench: ArrayRead, workers: int = 1) -> tuple[float, float]:
    """Predicted wall time (s) and ngspice memory (bytes) of `bench`'s read (see the module docstring)."""
    if bench.layout == "cells":  # every netlist holds cells of one width: one rising and one falling edge
        _, per_width = np.unique(bench.state_pulse_s, return_counts=True)
        netlists = int(np.sum(np.ceil(per_width / CACHE_CELLS)))
        edges, per_netlist = 2, min(CACHE_CELLS, int(per_width.max()))
        parallel = max(1, min(workers, netlists))
    else:
        coupled = bench.wires.couples_columns
        edges = 1 + bench.distinct_widths + (2 * bench.rows if bench.write else 0)
        parallel = 1 if coupled else max(1, min(workers, bench.cols))
        netlists = 1 if coupled else math.ceil(bench.cols / bench.max_pack)
        per_netlist = bench.simulated_cells if coupled else bench.max_pack * bench.rows
    cells, timepoints = bench.simulated_cells, 10 + TIMEPOINTS_PER_EDGE * edges
    evaluations = cells * DEVICES_PER_CELL * timepoints * ITERATIONS_PER_TIMEPOINT
    per_evaluation = DEVICE_EVAL_S * math.sqrt(max(1.0, per_netlist / CACHE_CELLS))
    points = cells if bench.layout == "cells" else bench.cols
    simulating = (evaluations * per_evaluation + netlists * NETLIST_SETUP_S) / parallel
    seconds = WORKERS_START_S + points * POINT_RECORD_S + bench.rows * bench.cols * INPUT_CELL_S + simulating
    return seconds, BYTES_PER_CELL * min(cells, per_netlist * parallel)


def available_memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_budget(bench: ArrayRead, workers: int, max_seconds: float) -> tuple[float, float]:
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


def array_sweep(bench: ArrayRead, name: str = "array", workers: int | None = None) -> Sweep:
    """One sweep point per cell state (layout `cells`: up to `CACHE_CELLS` states of equal pulse width a
    netlist) or per column (coupled arrays run as one netlist, independent columns `max_pack` a netlist)."""
    if bench.layout == "cells":
        return Sweep(name, bench, {"cell": list(range(bench.simulated_cells))}, chunk_size=CACHE_CELLS,
                     timeout_s=3600.0)
    chunk = bench.cols if bench.wires.couples_columns else min(bench.max_pack,
                                                               max(1, math.ceil(bench.cols / (workers or 2))))
    return Sweep(name, bench, {"column": list(range(bench.cols))}, chunk_size=chunk, timeout_s=3600.0)


@dataclass
class ArrayResult:
    """Column charges of one array read (and, layout `cells`, every cell's charge), the sweep report behind
    them and the up-front estimate."""

    charges_c: np.ndarray
    report: SweepReport
    estimate_s: float
    estimate_bytes: float
    cell_charges_c: np.ndarray | None = None  # (rows, cols), layout `cells` only

    @property
    def failed_points(self) -> dict[str, list[int]]:
        """Cell states (layout `cells`) or columns that failed, by the sweep's parameter name."""
        data = self.report.data
        [name] = data.coords
        return {name: [int(i) for i in np.nonzero(data.status != 1)[0]]}


def read_array(bench: ArrayRead, out, name: str = "array", workers: int | None = None, max_seconds: float = 300.0,
               progress: bool = True, restart: bool = False, backend: str = "shared") -> ArrayResult:
    """Simulate the read of `bench`'s array into `out` (HDF5 group `name`; resumes) after the budget check."""
    workers = workers or os.cpu_count() or 1
    seconds, memory = check_budget(bench, workers, max_seconds)
    report = run_sweep(array_sweep(bench, name, workers), out, workers=workers, progress=progress, restart=restart,
                       backend=backend)
    charges = np.asarray(report.data.scalars["charge_c"], dtype=float)
    if bench.layout == "columns":
        return ArrayResult(charges, report, seconds, memory)
    cells = charges[bench.state_of_cell]  # (rows, cols); NaN where a state failed
    return ArrayResult(cells.sum(axis=0), report, seconds, memory, cells)


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

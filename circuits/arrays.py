"""Gain-cell arrays: `rows` x `cols` signed cells read in one step, one column per stored token.

Rows are word lines (the head dimension for the K array: row r carries the read pulse of query element
r), columns are bit lines (one stored token each), held at VDD/2 by a source that stands for the column's
integrator; the charge it delivers is the column's dot product. Stored values are set by `.ic` on the storage
nodes, or written row by row through the write path (`write=True`). Wires are optional: a series resistance
and a capacitance to ground per cell along every bit line and word line, and a row-driver resistance.

Speed: the cost is BSIM4 device evaluations (5 per cell, 2-3 us each per Newton iteration on this machine)
times the time points, and the time points are set by the pulse edges (ngspice restarts small steps at every
edge breakpoint: ~14 points per edge). Two layouts:
- `rows` (no wires, stored values by `.ic`): every cell is independent (its bit line is held by an ideal
  source), so a sweep point is one row (its `cols` cells, one held bit-line source per column) with its own
  netlist and driver: two edges per netlist, and a netlist small enough for BSIM4 to stay in cache. Column
  charges are the sums over rows of the per-column charges. Netlists are spread over the worker processes.
- `columns` (bit-line wires, or the write path): a sweep point is one column; columns are packed a few per
  netlist. Word-line wires or a driver resistance couple the columns: the whole array is then one netlist.
`bypass` (ngspice skips re-evaluating a device whose terminal voltages did not move) is on by default:
measured effect on a column charge 5e-4 relative (benchmarks/RESULTS.md). `estimate_read` predicts time and memory from the number of cells and distinct pulse widths and
`check_budget` refuses an array that would not fit before anything runs.
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
#                   2.1 us at 64 cells, 3.5-5 us at 256, ~6 us at 512 (a 512-cell row took ~3 s with 2 workers)
ITERATIONS_PER_TIMEPOINT = 3.5
TIMEPOINTS_PER_EDGE = 14  # ngspice cuts the step to 1/10 at each pulse-edge breakpoint, then doubles it back
BYTES_PER_CELL = 65e3  # ngspice's memory per signed cell: a 16 x 16 deck peaked at 30 MB, an empty one 13.5 MB
DEVICES_PER_CELL = 5
ROWS_PER_NETLIST = 1  # measured: 2 rows of 64 cells in one netlist cost 2.4x one row (cache), 4 rows 6.8x
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
    """A read of a whole array; a sweep point is one column (`column` = its index).

    Results per column: waveform `i_col_a` (current from the held bit line into the cells), scalars
    `charge_c` (its integral over the read: the column's dot product), `e_cells_j` (energy drawn by the
    column's cells from the supply and the bit-line hold source).
    """

    stored_v: tuple[tuple[float, ...], ...] = ()  # (rows, cols)
    pulse_s: tuple[float, ...] = ()  # (rows,) read pulse width per row, 0 = row not read
    wires: Wires = Wires()
    write: bool = False
    row_inverters: bool = False
    max_step_s: float = 1e-9
    bypass: bool = True
    layout_choice: str = "auto"  # "auto", or "columns" to force one point per column (a baseline)

    name = "array-read"
    max_pack = 2

    @property
    def layout(self) -> str:
        """`rows` (independent cells, grouped by pulse width) or `columns` (see the module docstring)."""
        independent = self.wires.ideal and not self.write and not self.row_inverters
        return "rows" if independent and self.layout_choice == "auto" else "columns"

    @property
    def subckt_name(self) -> str:
        return "arow" if self.layout == "rows" else "column"

    @property
    def probes(self) -> tuple[str, ...]:
        if self.layout == "rows":
            return tuple(f"i(v.vbl{c})" for c in range(self.cols)) + ("i(v.vdd)",)
        return ("i(v.vbl)", "i(v.vdd)")

    @property
    def ports(self) -> tuple[str, ...]:
        return ("rwl", "rwlb") if self.layout == "rows" else ()

    def pack_key(self, point):
        return self.pulse_s[int(point["row"])] if self.layout == "rows" else ()

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
        if self.layout == "rows":
            return self._row_subcircuit()
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

    def _row_subcircuit(self) -> str:
        """One row of independent cells, each on its own held bit line (`vbl{c}`)."""
        d = self.design
        params = " ".join(f"s{c}={d.zero_v}" for c in range(self.cols))
        lines = [f".subckt arow rwl rwlb params: {params}", f"vdd vdd 0 {d.vdd_v}", f"vwbl wbl 0 {d.zero_v}",
                 "vwwl wwl 0 0"]
        cell = cell_instance_params(d)
        for c in range(self.cols):
            lines += [f"vbl{c} bl{c} 0 {d.zero_v}", f"x{c} wwl wbl rwl rwlb bl{c} vdd {d.cell_subckt} params: {cell}",
                      f".ic v(x{c}.sn)={{s{c}}}"]
        lines.append(".ends arow")
        return "\n".join(lines)

    def _line_nodes(self, kind: str, row: int) -> list[str]:
        """The node of row `row`'s line `kind` (rwl/rwlb) at each column."""
        if not self.wires.couples_columns:
            return [f"{kind}{row}"] * self.cols
        return [f"{kind}{row}_{c}" for c in range(self.cols)]

    def instance_ports(self, point):
        if self.layout == "rows":
            return self.ports
        c = int(point["column"])
        ports = [self._line_nodes("rwl", r)[c] for r in range(self.rows)]
        ports += [self._line_nodes("rwlb", r)[c] for r in range(self.rows)]
        if self.write:
            ports += [f"wwl{r}" for r in range(self.rows)]
        return tuple(ports)

    def instance_params(self, point):
        if self.layout == "rows":
            r = int(point["row"])
            return {f"s{c}": self.stored_v[r][c] for c in range(self.cols)}
        c = int(point["column"])
        return {f"s{r}": self.stored_v[r][c] for r in range(self.rows)}

    def shared_lines(self, points) -> str:
        """Row drivers (ideal complementary pulses, or a pulse and a row inverter), the word-line wires and
        the write word lines."""
        d, w = self.design, self.wires
        if self.layout == "rows":  # the chunk's rows share one pulse width, hence one driver pair
            return "\n".join(read_drive_lines(d, self.pulse_s[int(points[0]["row"])], d.v_in_v, self.read_start_s))
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
        widths = [self.pulse_s[int(p["row"])] for p in points] if self.layout == "rows" else self.pulse_s
        stop = self.read_start_s + max(widths) + 1e-9
        return Transient(step_s=100e-12, stop_s=stop, max_step_s=self.max_step_s)

    def options(self) -> dict:
        options = {"method": "gear"}  # trapezoidal integration rings on the ideal sources
        return options | ({"bypass": 1} if self.bypass else {})

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        if self.layout == "rows":
            currents = np.array([-vectors[f"i(v.vbl{c})"] for c in range(self.cols)])  # (cols, time)
            bitlines = sum(drawn_energy(t, d.zero_v, -i) for i in currents)
            return {"time": t, "i_row_a": currents.sum(axis=0), "charge_by_column_c": np.trapezoid(currents, t),
                    "e_cells_j": np.asarray(drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"]) + bitlines)}
        i_col = -vectors["i(v.vbl)"]
        read = t >= self.read_start_s - 0.1e-9
        e_cells = drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"]) + drawn_energy(t, d.zero_v, vectors["i(v.vbl)"])
        return {"time": t, "i_col_a": i_col, "charge_c": np.asarray(np.trapezoid(i_col[read], t[read])),
                "e_cells_j": np.asarray(e_cells)}


def estimate_read(rows: int, cols: int, distinct_widths: int, workers: int = 1, layout: str = "rows",
                  coupled: bool = False, write: bool = False) -> tuple[float, float]:
    """Predicted wall time (s) and ngspice memory (bytes) of an array read (see the module docstring)."""
    if layout == "rows":  # every netlist holds rows of one width: one rising and one falling edge
        edges = 2
        parallel = max(1, min(workers, math.ceil(rows / ROWS_PER_NETLIST)))
        cells_in_flight = min(rows, ROWS_PER_NETLIST * parallel) * cols
    else:
        edges = 1 + distinct_widths + (2 * rows if write else 0)
        parallel = 1 if coupled else max(1, min(workers, cols))
        cells_in_flight = rows * cols if coupled else rows * min(cols, 2 * parallel)
    timepoints = 10 + TIMEPOINTS_PER_EDGE * edges
    evaluations = rows * cols * DEVICES_PER_CELL * timepoints * ITERATIONS_PER_TIMEPOINT
    per_netlist = ROWS_PER_NETLIST * cols if layout == "rows" else (rows * cols if coupled else 2 * rows)
    per_evaluation = DEVICE_EVAL_S * math.sqrt(max(1.0, per_netlist / CACHE_CELLS))
    return evaluations * per_evaluation / parallel, BYTES_PER_CELL * cells_in_flight


def available_memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def check_budget(bench: ArrayRead, workers: int, max_seconds: float) -> tuple[float, float]:
    """Refuse, before anything runs, an array whose predicted time exceeds `max_seconds` or whose memory
    exceeds half the free memory; returns the estimate (seconds, bytes)."""
    widths = len({round(p, 15) for p in bench.pulse_s if p > 0})
    seconds, memory = estimate_read(bench.rows, bench.cols, widths, workers, bench.layout,
                                    bench.wires.couples_columns, bench.write)
    allowed_memory = 0.5 * available_memory_bytes()
    size = f"a {bench.rows} x {bench.cols} array ({bench.rows * bench.cols} cells, {widths} distinct pulse widths)"
    if seconds > max_seconds:
        per_cell = seconds / (bench.rows * bench.cols)
        raise ConfigError("rows x cols", f"{size} would take about {seconds:.0f} s on {workers} worker(s), over the "
                                         f"budget max_seconds = {max_seconds:g} s; allowed: about "
                                         f"{int(max_seconds / per_cell)} cells at these settings (or raise max_seconds)")
    if memory > allowed_memory:
        raise ConfigError("rows x cols", f"{size} needs about {memory / 2**30:.1f} GiB in ngspice; allowed: half the "
                                         f"free memory, {allowed_memory / 2**30:.1f} GiB")
    return seconds, memory


def array_sweep(bench: ArrayRead, name: str = "array", workers: int | None = None) -> Sweep:
    """One sweep point per row (layout `rows`: up to `ROWS_PER_NETLIST` rows of equal width a netlist) or per
    column (coupled arrays run as one netlist, independent columns `max_pack` a netlist)."""
    if bench.layout == "rows":
        return Sweep(name, bench, {"row": list(range(bench.rows))}, chunk_size=ROWS_PER_NETLIST, timeout_s=3600.0)
    chunk = bench.cols if bench.wires.couples_columns else min(bench.max_pack,
                                                               max(1, math.ceil(bench.cols / (workers or 2))))
    return Sweep(name, bench, {"column": list(range(bench.cols))}, chunk_size=chunk, timeout_s=3600.0)


@dataclass
class ArrayResult:
    """Column charges of one array read, the sweep report behind them and the up-front estimate."""

    charges_c: np.ndarray
    report: SweepReport
    estimate_s: float
    estimate_bytes: float

    @property
    def failed_points(self) -> dict[str, list[int]]:
        """Rows (layout `rows`) or columns that failed, by the sweep's parameter name."""
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
    if bench.layout == "rows":
        by_row = np.asarray(report.data.waveforms["charge_by_column_c"], dtype=float)[:, :bench.cols]  # (rows, cols)
        charges = by_row.sum(axis=0)  # NaN where a row failed
    else:
        charges = np.asarray(report.data.scalars["charge_c"], dtype=float)
    return ArrayResult(charges, report, seconds, memory)


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

"""Gain-cell arrays: `rows` x `cols` signed cells read in one step, one column per stored token.

Rows are word lines (the head dimension for the K array: row r carries the read pulse of query element
r), columns are bit lines (one stored token each), held at VDD/2 by a source that stands for the column's
integrator; the charge it delivers is the column's dot product. Stored values are set by `.ic` on the storage
nodes, or written row by row through the write path (`write=True`). Wires are optional (`wires.py`): a series
resistance and a capacitance to ground per cell along every bit line and word line, and a row-driver resistance.

Speed is set by the pulse edges and the cells per netlist (`array_read.py`). Two layouts, one class each;
`ArrayRead.from_arrays` picks the one an array needs:
- `CellStatesRead` (no wires, stored values by `.ic`): every cell is independent (its bit line is held by an
  ideal source and its row driver is ideal), so a cell's charge depends only on its stored value and its row's
  pulse width. A sweep point is one *cell state* (pulse width, stored value); cells of equal pulse width share
  a netlist and its driver (two edges per netlist) up to `CACHE_CELLS` cells (small netlists keep BSIM4 in
  cache). With `merge_identical` (default) each distinct state is simulated once and its charge counted for
  every cell in that state: exact for this layout, and what makes a read of quantized inputs cheap (stored
  values on the DAC levels x pulse widths on the input levels: a 64 x 64 array of 8 levels x 16 widths holds
  128 distinct cells). `merge_identical=False` simulates every cell (the baseline, and continuous inputs
  behave like it). Column charges are the sums over rows of the cells' charges.
- `ColumnsRead` (bit-line wires, the write path or row inverters): a sweep point is one column; columns are
  packed a few per netlist. Word-line wires or a driver resistance couple the columns: the whole array is then
  one netlist.
`bypass` (ngspice skips re-evaluating a device whose terminal voltages did not move) is on by default:
measured effect on a column charge 5e-4 relative (benchmarks/RESULTS.md). `array_read.read_array` checks the
budget (an array that would not fit is refused before anything runs), then simulates.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from gaincell.design import CellDesign
from gaincell.errors import ConfigError

from .array_read import CACHE_CELLS, ArrayResult, ReadPlan
from .cells import CellTestbench, cell_instance, drawn_energy, read_drive_lines, row_inverter
from .spice.analysis import Transient
from .spice.elements import GROUND, Pulse, Pwl, initial_condition, param, resistor, voltage
from .sweep import Sweep, SweepReport
from .wires import Wires, ladder

READ_DELAY_S = 0.2e-9


@dataclass(frozen=True)
class ArrayRead(CellTestbench, ABC):
    """A read of a whole array: what both layouts share (inputs, checks, timing, results).

    Results per point: waveform `i_cell_a` / `i_col_a` (current from the held bit line into the cell or the
    column), scalars `charge_c` (its integral over the read: the column's dot product, or one cell's share of
    it), `e_cells_j` (energy drawn from the supply and the bit-line hold source), and what the layout adds.
    """

    stored_v: tuple[tuple[float, ...], ...] = ()  # (rows, cols)
    pulse_s: tuple[float, ...] = ()  # (rows,) read pulse width per row, 0 = row not read
    max_step_s: float = 1e-9
    bypass: bool = True

    name = "array-read"
    layout = ""  # "cells" or "columns", as the module docstring names them
    max_pack = 2
    probes = ("i(v.vbl)", "i(v.vdd)")
    read_start_s = READ_DELAY_S

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
        if not self.max_step_s > 0:
            raise ConfigError("max_step_s", f"must be > 0 s, got {self.max_step_s}")

    @classmethod
    def from_arrays(cls, design: CellDesign, stored_v, pulse_s, **options) -> "ArrayRead":
        """From a (rows, cols) matrix of stored volts and a (rows,) vector of pulse widths. Called on `ArrayRead`
        it picks the layout: `CellStatesRead` for independent cells, `ColumnsRead` with wires, the write path or
        row inverters (where `merge_identical=False` is refused: those are read column by column anyway)."""
        layout = cls
        if cls is ArrayRead:
            coupling = {"wires": options.pop("wires", Wires()), "write": options.pop("write", False),
                        "row_inverters": options.pop("row_inverters", False)}
            independent = coupling["wires"].ideal and not coupling["write"] and not coupling["row_inverters"]
            layout = CellStatesRead if independent else ColumnsRead
            if not independent:
                options |= coupling
        if layout is ColumnsRead and options.pop("merge_identical", True) is not True:
            raise ConfigError("merge_identical", "False (simulate every cell) applies to arrays without wires, "
                                                 "without the write path and without row inverters only: the others "
                                                 "are simulated column by column anyway")
        stored = np.atleast_2d(np.asarray(stored_v, dtype=float))
        return layout(design, tuple(tuple(float(x) for x in row) for row in stored),
                      tuple(float(p) for p in np.atleast_1d(np.asarray(pulse_s, dtype=float))), **options)

    @property
    def rows(self) -> int:
        return len(self.stored_v)

    @property
    def cols(self) -> int:
        return len(self.stored_v[0])

    @property
    def distinct_widths(self) -> int:
        """Distinct non-zero pulse widths of the rows."""
        return len({round(p, 15) for p in self.pulse_s if p > 0})

    @property
    @abstractmethod
    def simulated_cells(self) -> int:
        """Cells ngspice simulates."""

    @abstractmethod
    def read_plan(self, workers: int) -> ReadPlan:
        """How the read splits into netlists on `workers` processes (`array_read.estimate_read`)."""

    @abstractmethod
    def sweep(self, name: str = "array", workers: int | None = None) -> Sweep:
        """The read as a sweep over this layout's points."""

    @abstractmethod
    def read_widths(self, points) -> list[float]:
        """The pulse widths a chunk of points reads with."""

    def analysis(self, points) -> Transient:
        stop = self.read_start_s + max(self.read_widths(points)) + 1e-9
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
        return out | self.point_results(current, point)

    @abstractmethod
    def point_results(self, current: np.ndarray, point) -> dict[str, np.ndarray]:
        """What the layout records per point besides the charge and the energy."""

    @abstractmethod
    def array_result(self, report: SweepReport, estimate_s: float, estimate_bytes: float) -> ArrayResult:
        """Column charges (and, where known, every cell's) from the sweep's results."""


@dataclass(frozen=True)
class CellStatesRead(ArrayRead):
    """Independent cells: a sweep point is one cell state (`cell` = its index in `state_pulse_s` /
    `state_stored_v`); it also records the state's `pulse_s` and `stored_v`."""

    merge_identical: bool = True  # simulate each distinct (pulse width, stored value) once

    layout = "cells"
    subckt_name = "acell"
    ports = ("rwl", "rwlb")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.merge_identical, bool):
            raise ConfigError("merge_identical", f"must be True or False, got {self.merge_identical!r}")
        stored = np.asarray(self.stored_v, dtype=float)
        pulses = np.asarray(self.pulse_s, dtype=float)
        pairs = np.stack([np.broadcast_to(pulses[:, None], stored.shape).ravel(), stored.ravel()], axis=1)
        if self.merge_identical:
            pairs, state_of_cell = np.unique(pairs, axis=0, return_inverse=True)
        else:
            state_of_cell = np.arange(stored.size)
        # derived, not fields: set once here (the dataclass is frozen)
        object.__setattr__(self, "_states", (pairs[:, 0], pairs[:, 1], state_of_cell.reshape(stored.shape)))

    @property
    def state_pulse_s(self) -> np.ndarray:
        """The pulse width of each simulated cell state."""
        return self._states[0]

    @property
    def state_stored_v(self) -> np.ndarray:
        """The stored value of each simulated cell state."""
        return self._states[1]

    @property
    def state_of_cell(self) -> np.ndarray:
        """(rows, cols) index of each cell's state."""
        return self._states[2]

    @property
    def simulated_cells(self) -> int:
        return len(self.state_pulse_s)

    def describe(self) -> dict:
        return {k: v for k, v in super().describe().items() if k != "_states"}

    def pack_key(self, point):
        return self.state_pulse_s[int(point["cell"])]

    def subcircuit(self) -> str:
        """One independent cell (stored value `s` by `.ic`) on its own held bit line `vbl` and supply `vdd`."""
        d = self.design
        return self.point_subcircuit({"s": d.zero_v}, [
            voltage("dd", "vdd", GROUND, d.vdd_v), voltage("wbl", "wbl", GROUND, d.zero_v),
            voltage("wwl", "wwl", GROUND, 0), voltage("bl", "bl", GROUND, d.zero_v),
            cell_instance(d, "1", wwl="wwl", wbl="wbl", rwl="rwl", rwlb="rwlb", rbl="bl", vdd="vdd"),
            initial_condition("x1.sn", param("s"))])

    def instance_params(self, point):
        return {"s": float(self.state_stored_v[int(point["cell"])])}

    def shared_lines(self, points) -> str:
        """One ideal complementary driver pair: the chunk's cells share one pulse width."""
        d = self.design
        width = float(self.state_pulse_s[int(points[0]["cell"])])
        return "\n".join(read_drive_lines(d, width, d.v_in_v, self.read_start_s))

    def read_widths(self, points) -> list[float]:
        return [self.state_pulse_s[int(p["cell"])] for p in points]

    def point_results(self, current, point):
        state = int(point["cell"])  # recorded so the file alone maps cells to states (see `state_of_cell`)
        return {"i_cell_a": current, "pulse_s": np.asarray(float(self.state_pulse_s[state])),
                "stored_v": np.asarray(float(self.state_stored_v[state]))}

    def read_plan(self, workers: int) -> ReadPlan:
        """Every netlist holds cells of one width (one rising and one falling edge), up to `CACHE_CELLS`."""
        _, per_width = np.unique(self.state_pulse_s, return_counts=True)
        netlists = int(np.sum(np.ceil(per_width / CACHE_CELLS)))
        return ReadPlan(netlists, 2, min(CACHE_CELLS, int(per_width.max())), max(1, min(workers, netlists)),
                        self.simulated_cells)

    def sweep(self, name: str = "array", workers: int | None = None) -> Sweep:
        """One point per cell state, up to `CACHE_CELLS` states of equal pulse width a netlist."""
        return Sweep(name, self, {"cell": list(range(self.simulated_cells))}, chunk_size=CACHE_CELLS,
                     timeout_s=3600.0)

    def array_result(self, report, estimate_s, estimate_bytes):
        charges = np.asarray(report.data.scalars["charge_c"], dtype=float)
        cells = charges[self.state_of_cell]  # (rows, cols); NaN where a state failed
        return ArrayResult(cells.sum(axis=0), report, estimate_s, estimate_bytes, cells)


@dataclass(frozen=True)
class ColumnsRead(ArrayRead):
    """Columns that share wires or drivers: a sweep point is one column (`column` = its index); it also records
    the column's current `i_col_a`."""

    wires: Wires = Wires()
    write: bool = False
    row_inverters: bool = False

    layout = "columns"
    subckt_name = "column"

    @property
    def simulated_cells(self) -> int:
        return self.rows * self.cols

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
        d, rows = self.design, self.rows
        ports = [f"rwl{r}" for r in range(rows)] + [f"rwlb{r}" for r in range(rows)]
        if self.write:
            ports += [f"wwl{r}" for r in range(rows)]
        lines = [voltage("dd", "vdd", GROUND, d.vdd_v), voltage("bl", "bl", GROUND, d.zero_v)]
        if self.write:  # the column's write bit line carries each row's value during that row's slot
            knots = [(0, param("s0"))]
            for r in range(1, rows):
                change = self._write_slot(r) - 0.5e-9
                knots += [(change, param(f"s{r - 1}")), (change + 50e-12, param(f"s{r}"))]
            park = self._write_slot(rows - 1) + d.write_time_s + 0.5e-9
            knots += [(park, param(f"s{rows - 1}")), (park + 50e-12, d.zero_v)]
            lines.append(voltage("wbl", "wbl", GROUND, Pwl(tuple(knots))))
        else:
            lines += [voltage("wbl", "wbl", GROUND, d.zero_v), voltage("wwl", "wwl", GROUND, 0)]
        w = self.wires
        if w.bitline_r_ohm > 0 or w.bitline_c_f > 0:
            cell_nodes = [f"b{r}" for r in range(rows)]
            lines += ladder("bl", "bl", cell_nodes, w.bitline_r_ohm, w.bitline_c_f)
        else:
            cell_nodes = ["bl"] * rows
        for r in range(rows):
            lines.append(cell_instance(d, str(r), wwl=f"wwl{r}" if self.write else "wwl", wbl="wbl", rwl=f"rwl{r}",
                                       rwlb=f"rwlb{r}", rbl=cell_nodes[r], vdd="vdd"))
            lines.append(initial_condition(f"x{r}.sn", d.zero_v if self.write else param(f"s{r}")))
        return self.point_subcircuit({f"s{r}": d.zero_v for r in range(rows)}, lines, ports)

    def _line_nodes(self, kind: str, row: int) -> list[str]:
        """The node of row `row`'s line `kind` (rwl/rwlb) at each column."""
        if not self.wires.couples_columns:
            return [f"{kind}{row}"] * self.cols
        return [f"{kind}{row}_{c}" for c in range(self.cols)]

    def instance_ports(self, point):
        c = int(point["column"])
        ports = [self._line_nodes("rwl", r)[c] for r in range(self.rows)]
        ports += [self._line_nodes("rwlb", r)[c] for r in range(self.rows)]
        if self.write:
            ports += [f"wwl{r}" for r in range(self.rows)]
        return tuple(ports)

    def instance_params(self, point):
        c = int(point["column"])
        return {f"s{r}": self.stored_v[r][c] for r in range(self.rows)}

    def shared_lines(self, points) -> str:
        """Row drivers (ideal complementary pulses, or a pulse and a row inverter), the word-line wires and
        the write word lines."""
        d, w = self.design, self.wires
        lines = [voltage("ddrow", "vddrow", GROUND, d.vdd_v)] if self.row_inverters else []
        for r in range(self.rows):
            suffix = f"{r}_drv" if w.couples_columns else f"{r}"
            drive = read_drive_lines(d, self.pulse_s[r], d.v_in_v, self.read_start_s, suffix)
            lines.append(drive[0])
            if self.row_inverters:
                lines.append(row_inverter(f"inv{r}", f"rwl{suffix}", f"rwlb{suffix}", "vddrow"))
            else:
                lines.append(drive[1])
            if w.couples_columns:
                for kind in ("rwl", "rwlb"):
                    start = f"{kind}{r}_drv"
                    if w.driver_r_ohm > 0:
                        lines.append(resistor(f"drv{kind}{r}", start, f"{kind}{r}_out", w.driver_r_ohm))
                        start = f"{kind}{r}_out"
                    lines += ladder(f"{kind}{r}_", start, self._line_nodes(kind, r), w.wordline_r_ohm,
                                     w.wordline_c_f)
            if self.write:
                lines.append(voltage(f"wwl{r}", f"wwl{r}", GROUND,
                                     Pulse(0, d.write_wl_v, self._write_slot(r), width=d.write_time_s)))
        return "\n".join(lines)

    def read_widths(self, points) -> list[float]:
        return list(self.pulse_s)

    def point_results(self, current, point):
        return {"i_col_a": current}

    def read_plan(self, workers: int) -> ReadPlan:
        """Coupled columns run as one netlist; independent ones `max_pack` a netlist, in parallel."""
        coupled = self.wires.couples_columns
        edges = 1 + self.distinct_widths + (2 * self.rows if self.write else 0)
        if coupled:
            return ReadPlan(1, edges, self.simulated_cells, 1, self.cols)
        return ReadPlan(math.ceil(self.cols / self.max_pack), edges, self.max_pack * self.rows,
                        max(1, min(workers, self.cols)), self.cols)

    def sweep(self, name: str = "array", workers: int | None = None) -> Sweep:
        """One point per column: coupled arrays as one netlist, independent columns `max_pack` a netlist."""
        chunk = self.cols if self.wires.couples_columns else min(self.max_pack,
                                                                 max(1, math.ceil(self.cols / (workers or 2))))
        return Sweep(name, self, {"column": list(range(self.cols))}, chunk_size=chunk, timeout_s=3600.0)

    def array_result(self, report, estimate_s, estimate_bytes):
        return ArrayResult(np.asarray(report.data.scalars["charge_c"], dtype=float), report, estimate_s,
                           estimate_bytes)

"""Sweeps: a grid of parameter points simulated as packed netlists on a process pool or a Dask cluster.

A `Testbench` describes one point as a parameterised subcircuit; a chunk of points becomes one netlist
with one subcircuit instance per point (`X0`, `X1`, ... with the point's values as instance parameters),
so ngspice solves hundreds of independent cells in one run. A chunk that fails is split in halves until
the failing point is isolated; its ngspice message is recorded and the rest of the sweep goes on. The
design-neutral machinery lives in circuits/spice/: chunk files and checkpoints (parts.py), running chunks
on the worker pool or Dask (chunks.py).

    sweep = Sweep("read", MyBench(...), {"stored_v": [...], "pulse_s": [...]})
    data = run_sweep(sweep, "char.h5")          # resumes if char.h5(.parts) already hold some points
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gaincell import __version__
from gaincell.design import CellDesign
from gaincell.design_record import DESIGN_RECORD, design_record
from gaincell.errors import ConfigError, NetlistError, WorkerStartError
from gaincell.outputs import output_lock
from gaincell.progress import bar as progress_bar
from gaincell.periphery import C2PDesign, DacDesign
from gaincell.store import read_sweep
from gaincell.sweep_data import OK, SweepData

from .spice.analysis import Analysis
from .spice.chunks import execute_chunks, instance_vector
from .spice.elements import comment, instance, subcircuit
from .spice.netlist import Netlist, prepare
from .spice.parts import PART_GLOB, apply_part, checkpoint, parts_folder, record_outcome, save_part
from .spice.simulator import check_backend


class Testbench:
    """One sweep point as a parameterised subcircuit; subclasses fill in the circuit-specific parts.

    Subclasses are frozen dataclasses (picklable: they travel to worker processes) and define:
    - `subcircuit()`: the point's `.subckt` block, built with `point_subcircuit` from element lines of
      `spice/elements.py` (the only place SPICE text is written); every sweep parameter is a subckt param;
    - `analysis(points)`: the analysis for a chunk of points;
    - `probes`: vectors inside one instance to keep (`v(sn)`, `i(v.vbl)` for a source `vbl`);
    - optionally `preamble()` (model libraries, shared sources), `ports` (nodes the instances share,
      e.g. a common drive), `options()`, and `extract()` to turn raw vectors into results.
    """

    name = "testbench"
    subckt_name = "point"
    ports: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    shared_probes: tuple[str, ...] = ()  # top-level vectors (e.g. a shared driver's current) every point sees
    max_pack = 200
    splittable = True  # a failed chunk may be bisected (False when its instances couple through shared wires)

    def subcircuit(self) -> str:
        raise NotImplementedError

    def analysis(self, points: list[dict[str, float]]) -> Analysis:
        raise NotImplementedError

    def preamble(self) -> str:
        return ""

    def options(self) -> dict:
        return {}

    def pack_key(self, point: dict[str, float]):
        """Only points with equal keys share a netlist; they may share drive circuitry (`shared_lines`)."""
        return ()

    def shared_lines(self, points: list[dict[str, float]]) -> str:
        """Top-level elements of a chunk that all its instances connect to through `ports` (e.g. one
        pulse driver per netlist, as one word-line driver serves a row of an array)."""
        return ""

    def instance_ports(self, point: dict[str, float]) -> tuple[str, ...]:
        """The nodes one instance connects to (default: `ports`, the same for every instance)."""
        return self.ports

    def instance_params(self, point: dict[str, float]) -> dict[str, float]:
        """The subcircuit parameters of one instance (default: the sweep point itself)."""
        return point

    def describe(self) -> dict:
        """Design parameters recorded with the sweep (JSON-able)."""
        return dict(getattr(self, "__dict__", {}))

    def coordinate_labels(self) -> dict[str, list[str]]:
        """Names of the values of index coordinates (grid values 0, 1, ...), e.g. a process corner's."""
        return {}

    def extract(self, vectors: dict[str, np.ndarray], point: dict[str, float]) -> dict[str, np.ndarray]:
        """Per-point results from this instance's probes (names without the instance prefix), the
        `shared_probes` and `n_instances` (points in this netlist, to share a common driver's energy)."""
        return dict(vectors)

    def point_subcircuit(self, params: dict, body: list[str], ports: Sequence[str] | None = None) -> str:
        """The `.subckt` of one point: `subckt_name` on `ports` (default: `self.ports`), declaring `params` (each
        sweep parameter with its default) and `extra_params()`, around the element lines `body`."""
        return subcircuit(self.subckt_name, self.ports if ports is None else ports, params | self.extra_params(), body)

    def extra_params(self) -> dict:
        """Parameters every point's subcircuit declares besides the testbench's own (e.g. Monte Carlo shifts)."""
        return {}

    def netlist(self, points: list[dict[str, float]]) -> Netlist:
        """The packed deck for a chunk: one instance per point."""
        lines = [comment(f"gaincell {self.name}: {len(points)} packed point(s)"), self.preamble().strip(),
                 self.subcircuit().strip(), self.shared_lines(points).strip()]
        for i, point in enumerate(points):
            params = {k: float(v) for k, v in self.instance_params(point).items()}
            lines.append(instance(str(i), self.instance_ports(point), self.subckt_name, params))
        save = [instance_vector(probe, i) for i in range(len(points)) for probe in self.probes]
        save += list(self.shared_probes)
        if self.probes:
            save.append("time")
        return prepare("\n".join(line for line in lines if line), self.analysis(points), save=save,
                       options=self.options())


@dataclass(frozen=True)
class Sweep:
    """A named grid (cartesian product of `grid`'s values, in its key order) over one testbench."""

    name: str
    testbench: Testbench
    grid: dict[str, Sequence[float]]
    chunk_size: int | None = None
    timeout_s: float = 300.0
    periphery: tuple = ()  # the C2PDesign / DacDesign the cell works with: its design record names them (no spec)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError("name", f"must be a non-empty group name without '/', got {self.name!r}")
        if not self.grid:
            raise ConfigError("grid", "needs at least one parameter")
        for key, values in self.grid.items():
            if len(values) == 0:
                raise ConfigError(f"grid[{key!r}]", "has no values")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError("chunk_size", f"must be >= 1, got {self.chunk_size}")
        if not self.timeout_s > 0:
            raise ConfigError("timeout_s", f"must be > 0 seconds, got {self.timeout_s}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.grid.values())

    def point(self, index: tuple[int, ...]) -> dict[str, float]:
        return {k: float(v[i]) for (k, v), i in zip(self.grid.items(), index)}

    def spec_hash(self) -> str:
        """Identity that a resumed run must match: testbench, its design and the grid."""
        spec = {"testbench": type(self.testbench).__name__, "design": self.testbench.describe(),
                "grid": {k: [float(x) for x in v] for k, v in self.grid.items()}}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class SweepReport:
    """What a `run_sweep` call did: points simulated now, failures, wall time."""

    data: SweepData
    simulated: int = 0
    failed_now: int = 0
    wall_s: float = 0.0
    messages: list[str] = field(default_factory=list)


def _fresh_data(sweep: Sweep) -> SweepData:
    tb = sweep.testbench
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    attrs = {"testbench": type(getattr(tb, "inner", tb)).__name__, "design": json.dumps(tb.describe(), default=str),
             "spec_sha256": sweep.spec_hash(), "created": now, "gaincell_version": __version__}
    if isinstance(getattr(tb, "design", None), CellDesign):  # the design record (gaincell.design) of a cell's sweep
        parts = (getattr(tb, "c2p", None), getattr(tb, "dac", None), *sweep.periphery)
        attrs[DESIGN_RECORD] = design_record(tb.design, next((p for p in parts if isinstance(p, C2PDesign)), None),
                                             next((p for p in parts if isinstance(p, DacDesign)), None))
    labels = tb.coordinate_labels()
    coords = {k: np.asarray(v, dtype=np.int32 if k in labels else float) for k, v in sweep.grid.items()}
    return SweepData(sweep.name, coords, attrs=attrs, labels=labels)


def _conditions_differ(data: SweepData, sweep: Sweep) -> str:
    """Which operating conditions the stored sweep and the asked one have, when those differ."""
    try:
        stored = json.loads(data.attrs.get("design", "{}")).get("conditions")
    except (ValueError, AttributeError):
        return ""
    asked = json.loads(json.dumps(sweep.testbench.describe().get("conditions"), default=str))

    def shown(conditions):
        if not conditions:
            return "none (the design's own corner and temperature)"
        return "; ".join(f"{key} {', '.join(map(str, values))}" for key, values in conditions.items() if values)
    return "" if stored == asked else f" (its conditions: {shown(stored)}; asked: {shown(asked)})"


def _load_state(sweep: Sweep, out: Path, restart: bool) -> SweepData:
    parts = parts_folder(out, sweep.name)
    if restart:
        shutil.rmtree(parts, ignore_errors=True)
    data = None
    if out.exists() and not restart:
        try:
            data = read_sweep(out, sweep.name)
        except ConfigError:
            data = None
        if data is not None and data.attrs.get("spec_sha256") != sweep.spec_hash():
            raise ConfigError("out", f"{out} already holds a sweep {sweep.name!r} made with other settings"
                                     f"{_conditions_differ(data, sweep)}; choose another file, or restart it "
                                     "(restart=True / --restart)")
    data = data or _fresh_data(sweep)
    for part in sorted(parts.glob(PART_GLOB)) if parts.exists() else []:
        apply_part(data, part)
    return data


def _chunks(sweep: Sweep, indices: list[tuple], size: int) -> list[list[tuple]]:
    """Split into chunks of at most `size` points, never mixing pack keys (indices are sorted by key)."""
    chunks: list[list[tuple]] = []
    last_key = object()
    for index in indices:
        key = sweep.testbench.pack_key(sweep.point(index))
        if key != last_key or len(chunks[-1]) >= size:
            chunks.append([])
            last_key = key
        chunks[-1].append(index)
    return chunks


def run_sweep(sweep: Sweep, out: str | Path, workers: int | None = None, backend: str = "shared",
              scheduler: str | None = None, progress: bool = True, retry_failed: bool = True,
              restart: bool = False, save_every_s: float = 2.0) -> SweepReport:
    """Simulate every point of `sweep` not yet done in `out` and store the results there.

    workers: local processes (default one per core). scheduler: None for the local pool, "local-dask"
    for a Dask LocalCluster, or "tcp://host:port" for a running Dask scheduler (Dask runs ngspice in batch
    mode: its worker threads must not share libngspice). retry_failed: simulate points that failed before
    again. restart: discard what `out` holds for this sweep. Interrupting (Ctrl-C, kill) loses at most the
    chunks in flight; calling again resumes.
    """
    backend = check_backend(backend)
    out = Path(out)
    with output_lock(out):
        return _run_locked(sweep, out, workers, backend, scheduler, progress, retry_failed, restart, save_every_s)


def _run_locked(sweep: Sweep, out: Path, workers, backend: str, scheduler, progress: bool, retry_failed: bool,
                restart: bool, save_every_s: float) -> SweepReport:
    started = time.perf_counter()
    data = _load_state(sweep, out, restart)
    todo_mask = data.status != OK if retry_failed else data.status == 0
    todo = [tuple(int(i) for i in ix) for ix in np.argwhere(todo_mask)]
    report = SweepReport(data)
    size = sweep.chunk_size or sweep.testbench.max_pack
    parts = parts_folder(out, sweep.name)
    if not todo:  # every point is done; chunks saved before a kill are merged now
        checkpoint(out, data, parts)
        return report
    serial = itertools.count(int(time.time() * 1000) * 1000)
    todo.sort(key=lambda ix: sweep.testbench.pack_key(sweep.point(ix)))  # stable: grid order within a key
    queue: deque = deque(_chunks(sweep, todo, size))
    bar = progress_bar(total=len(todo), desc=f"sweep {sweep.name}", unit="pt", enabled=progress)
    last_save = time.monotonic()
    refused = False
    try:
        for indices, outcome in execute_chunks(sweep, queue, workers, backend, scheduler):
            failed_whole = "results" not in outcome
            if failed_whole and len(indices) > 1 and sweep.testbench.splittable:
                half = len(indices) // 2  # isolate the failing point(s): bisect the chunk
                queue.extend([indices[:half], indices[half:]])
                continue
            save_part(parts, f"{next(serial):020d}", indices, outcome)
            record_outcome(data, indices, outcome)
            report.simulated += len(indices)
            if failed_whole:
                report.failed_now += 1
                report.messages.append(f"{sweep.point(indices[0])}: {outcome['error']}")
            bar.update(len(indices))
            bar.set_postfix(failed=int(np.sum(data.status == 2)))
            if time.monotonic() - last_save > save_every_s:
                checkpoint(out, data, parts)
                last_save = time.monotonic()
    except (NetlistError, WorkerStartError):
        refused = report.simulated == 0  # nothing ran: write no file at all (finished chunks stay in parts)
        raise
    finally:
        bar.close()
        if not refused:
            checkpoint(out, data, parts)
        report.wall_s = time.perf_counter() - started
    return report

"""`run`: simulate one circuit or netlist with either ngspice backend and get named numpy vectors.

    result = run(circuit, Transient(step_s=1e-9, stop_s=1e-6), save=["v(out)"], timeout=30)
    result["v(out)"], result["time"]

Backends: "shared" (PySpice + libngspice, in a spawned worker process so a hang can be stopped) and
"batch" (`ngspice -b`, a raw file read back here). Both give the same plots (`tran`, `op`, `ac`, ...) and
vectors under the names of ngspice's own raw file (`v(out)`, `i(v1)`, `v(v-sweep)`; `engines.vector_name`).
"""
from __future__ import annotations

import atexit
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaincell.errors import ConfigError, SimulationError

from .analysis import Analysis
from .engines import BatchEngine, EngineOutput, libngspice_path
from .netlist import Netlist, prepare
from .workers import Task, WorkerPool, simulate_in_worker

BACKENDS = ("shared", "batch")
_shared_pool: WorkerPool | None = None


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


@dataclass
class SimResult(Mapping):
    """Vectors of the last analysis by normalised name, plus every plot, the netlist and provenance."""

    netlist: Netlist
    output: EngineOutput
    backend: str

    @property
    def vectors(self) -> dict[str, np.ndarray]:
        return self.output.plots[-1][1]

    @property
    def plots(self) -> list[tuple[str, dict[str, np.ndarray]]]:
        return self.output.plots

    @property
    def simulator(self) -> str:
        return self.output.simulator

    @property
    def log(self) -> str:
        return self.output.log

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.vectors[name.lower()]
        except KeyError:
            raise KeyError(f"no vector {name!r}; this result has {', '.join(sorted(self.vectors))}") from None

    def __iter__(self):
        return iter(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)


def _pool() -> WorkerPool:
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = WorkerPool(workers=1)
        atexit.register(_shared_pool.close)
    return _shared_pool


def run_netlist(netlist: Netlist, backend: str = "shared", timeout: float = 60.0) -> EngineOutput:
    """Run a prepared deck; raises `SimulationError` (or a subclass) with ngspice's message."""
    check_backend(backend)
    if not timeout > 0:
        raise ConfigError("timeout", f"must be > 0 seconds, got {timeout!r}")
    if backend == "batch":
        return BatchEngine().simulate(netlist, timeout=timeout)
    libngspice_path()  # a missing library is reported here, by name, not as a crash in the worker
    [(_, result)] = list(_pool().run([Task(0, simulate_in_worker, (netlist, "shared"), timeout)]))
    if isinstance(result, SimulationError):
        raise result
    return result


def run(circuit_or_netlist, analysis: Analysis | None = None, save=(), timeout: float = 60.0,
        backend: str = "shared", options: dict | None = None, base_dir: str | Path | None = None,
        source_name: str = "netlist") -> SimResult:
    """Simulate a PySpice circuit or netlist text; see the module docstring. The text is checked by the trust
    policy first (`prepare`, `trust.py`); `source_name` is what its errors call it (e.g. the file name)."""
    netlist = prepare(circuit_or_netlist, analysis, save=save, options=options, base_dir=base_dir,
                      source_name=source_name)
    return SimResult(netlist, run_netlist(netlist, backend, timeout), backend)

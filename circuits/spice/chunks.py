"""Running a sweep's chunks: the worker-side simulation of one packed deck (`simulate_chunk`) and the
dispatch of chunks to the local worker pool or a Dask cluster (`execute_chunks`)."""
from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from gaincell.errors import ConfigError, GaincellError, NetlistError, SimulationError, WorkerCrashed

from .workers import Task, WorkerPool, simulate_in_worker


def instance_vector(probe: str, i: int) -> str:
    """`v(sn)` -> `v(x3.sn)`; `i(v.vbl)` -> `i(v.x3.vbl)` (ngspice's names inside instance X3)."""
    kind, inner = probe[0], probe[2:-1]
    if kind == "i" and "." in inner:
        letter, rest = inner.split(".", 1)
        return f"i({letter}.x{i}.{rest})"
    return f"{kind}(x{i}.{inner})"


def simulate_chunk(testbench, points: list[dict], backend: str, timeout_s: float) -> dict:
    """Worker side: simulate a chunk as one packed deck of `testbench` (a `gaincell.circuits.sweep.Testbench`);
    returns per-point results or the failure."""
    netlist = testbench.netlist(points)
    try:
        if backend == "shared":
            output = simulate_in_worker(netlist, "shared")
        else:
            output = simulate_in_worker(netlist, "batch", timeout_s)
    except SimulationError as exc:
        return {"deck": netlist.text, "error": exc.message, "kind": exc.kind}
    vectors = output.plots[-1][1]
    results = []
    for i, point in enumerate(points):
        own = {probe: vectors[instance_vector(probe, i)] for probe in testbench.probes}
        own.update({probe: vectors[probe] for probe in testbench.shared_probes})
        own["n_instances"] = np.asarray(len(points))
        if "time" in vectors:
            own["time"] = vectors["time"]
        results.append(testbench.extract(own, point))
    return {"deck": netlist.text, "results": results, "simulator": output.simulator}


def execute_chunks(sweep, queue: deque, workers, backend: str, scheduler: str | None):
    """Yield (indices, outcome) per chunk of `sweep` (a `gaincell.circuits.sweep.Sweep`) from the local pool
    or Dask; the caller may extend `queue`."""
    def points(indices):
        return [sweep.point(ix) for ix in indices]

    if scheduler is None:
        with WorkerPool(workers) as pool:
            tasks = _TaskFeed(queue, lambda ix: Task(ix, simulate_chunk, (sweep.testbench, points(ix), backend,
                                                                          sweep.timeout_s), sweep.timeout_s))
            for indices, result in pool.run(tasks):
                if isinstance(result, SimulationError):  # the worker died or hung: no deck came back
                    result = {"deck": "", "error": result.message, "kind": result.kind}
                yield indices, result
        return
    yield from _execute_dask(sweep, queue, workers, scheduler, points)


class _TaskFeed(deque):
    """A deque of tasks that turns chunks appended to `queue` into tasks as the pool asks for them."""

    def __init__(self, queue: deque, make):
        super().__init__()
        self._queue, self._make = queue, make

    def __bool__(self):
        return bool(self._queue)

    def __len__(self):
        return len(self._queue)

    def popleft(self):
        return self._make(self._queue.popleft())


def _execute_dask(sweep, queue: deque, workers, scheduler: str, points):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise GaincellError("the Dask backend needs dask.distributed: pip install 'gaincell[dask]'") from None
    cluster = None
    if scheduler == "local-dask":
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError("--scheduler", f"no Dask scheduler answers at {scheduler!r} ({exc})") from None
    try:
        def submit(indices):
            future = client.submit(simulate_chunk, sweep.testbench, points(indices), "batch", sweep.timeout_s,
                                   pure=False)
            owners[future.key] = indices
            return future

        owners: dict[Any, list] = {}
        running = as_completed([submit(queue.popleft()) for _ in range(len(queue))])
        for future in running:
            indices = owners.pop(future.key)
            try:
                outcome = future.result()
            except NetlistError:  # refused before ngspice ran: the whole sweep is refused, not this point
                raise
            except Exception as exc:  # KilledWorker and friends: the worker died under this chunk
                crash = WorkerCrashed(f"Dask worker failed: {type(exc).__name__}: {exc}")
                outcome = {"deck": "", "error": crash.message, "kind": crash.kind}
            yield indices, outcome
            while queue:
                running.add(submit(queue.popleft()))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

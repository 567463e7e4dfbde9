"""A small process pool for simulator work that survives hung and crashing ngspice.

`concurrent.futures` breaks the whole pool when one worker dies; here a dead or overdue worker is
killed, its task reported as `WorkerCrashed` / `SimulationTimeout`, and a fresh worker takes its place.
Workers are fresh interpreters (`python -m gaincell.circuits.worker_entry`, spawn semantics: libngspice must
not be forked, and unlike multiprocessing's spawn the caller's main script is not re-imported, so scripts
need no `if __name__ == "__main__"` guard), talk over a socket pair, hold one shared-mode engine each, and are recycled after `max_tasks_per_worker` tasks before ngspice's leaks matter.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator

from gaincell.errors import GaincellError, SimulationError, SimulationTimeout, WorkerCrashed

_ERROR_KINDS = {cls.kind: cls for cls in (SimulationError, SimulationTimeout, WorkerCrashed)}


@dataclass
class Task:
    """One unit of work: `fn(*args)` in a worker, stopped after `timeout_s` seconds."""

    key: Any
    fn: Callable
    args: tuple
    timeout_s: float


def _worker_main(conn: Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        fn, args = message
        try:
            reply = ("ok", fn(*args))
        except SimulationError as exc:
            reply = ("error", exc.kind, exc.message, exc.netlist_hash, exc.log)
        except GaincellError as exc:
            reply = ("error", "error", str(exc), "", "")
        except Exception as exc:  # a bug or an unexpected library error: report it, keep the worker
            reply = ("error", "error", f"{type(exc).__name__}: {exc}", "", "")
        conn.send(reply)


class _Worker:
    def __init__(self):
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen([sys.executable, "-m", "gaincell.circuits.worker_entry", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        self.conn = Connection(mine.detach())
        self.tasks_done = 0
        self.task: Task | None = None
        self.deadline = 0.0

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
                self.process.wait(timeout=5)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.conn.close()


class WorkerPool:
    """Run tasks on `workers` spawned processes; results come back as they finish."""

    def __init__(self, workers: int | None = None, max_tasks_per_worker: int = 200):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.max_tasks_per_worker = max_tasks_per_worker
        self._idle: list[_Worker] = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped by `run` itself). Workers hold no state worth
        saving, so they are killed rather than waited for (a graceful exit of libngspice takes ~0.2 s)."""
        while self._idle:
            self._idle.pop().stop(kill=True)

    def _take_worker(self) -> _Worker:
        return self._idle.pop() if self._idle else _Worker()

    def _release(self, worker: _Worker) -> None:
        worker.task = None
        worker.tasks_done += 1
        if worker.tasks_done >= self.max_tasks_per_worker:
            worker.stop()
        else:
            self._idle.append(worker)

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Any, Any]]:
        """Yield `(key, result)` per task in completion order; a failure's result is its `SimulationError`.

        A deque passed as `tasks` is consumed as it is: the caller may append to it while iterating."""
        pending = tasks if isinstance(tasks, deque) else deque(tasks)
        busy: list[_Worker] = []
        try:
            while pending or busy:
                while pending and len(busy) < self.size:
                    task = pending.popleft()
                    worker = self._take_worker()
                    worker.task, worker.deadline = task, time.monotonic() + task.timeout_s
                    worker.conn.send((task.fn, task.args))
                    busy.append(worker)
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready = set(wait([w.conn for w in busy], timeout))
                for worker in list(busy):
                    outcome = self._collect(worker, ready)
                    if outcome is not None:
                        busy.remove(worker)
                        yield outcome
        finally:
            for worker in busy:
                worker.stop(kill=True)

    def _collect(self, worker: _Worker, ready: set) -> tuple[Any, Any] | None:
        task = worker.task
        if worker.conn in ready:
            try:
                reply = worker.conn.recv()
            except (EOFError, OSError):
                reply = None
            if reply is not None:
                self._release(worker)
                if reply[0] == "ok":
                    return task.key, reply[1]
                _, kind, message, netlist_hash, log = reply
                return task.key, _ERROR_KINDS.get(kind, SimulationError)(message, netlist_hash, log)
        if worker.conn in ready:  # readable but no reply: the process is gone
            try:
                code = worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = "unknown"
            worker.stop(kill=True)
            return task.key, WorkerCrashed(f"the simulator process died (exit code {code}) while running "
                                           "this task")
        if time.monotonic() >= worker.deadline:
            worker.stop(kill=True)
            return task.key, SimulationTimeout(f"no result within {task.timeout_s:g} s; the simulator "
                                               "process was stopped")
        return None


def simulate_in_worker(netlist, backend: str = "shared", timeout_s: float | None = None):
    """Worker-side entry: run one prepared netlist with the named engine, return its `EngineOutput`."""
    from .engines import BatchEngine, SharedEngine

    if backend == "shared":
        return SharedEngine.get().simulate(netlist)
    return BatchEngine().simulate(netlist, timeout=timeout_s)


def main(argv: list[str]) -> None:
    """Entry of a worker process (see worker_entry.py): serve tasks over the inherited socket."""
    _worker_main(Connection(int(argv[1])))

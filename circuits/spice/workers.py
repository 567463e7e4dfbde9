"""A small process pool for simulator work that survives hung and crashing ngspice.

`concurrent.futures` breaks the whole pool when one worker dies; here a dead or overdue worker is
killed, its task reported as `WorkerCrashed` / `SimulationTimeout`, and a fresh worker takes its place.
Workers are fresh interpreters (spawn semantics: libngspice must not be forked, and unlike multiprocessing's
spawn the caller's main script is not re-imported, so scripts need no `if __name__ == "__main__"` guard),
talk over a socket pair, hold one shared-mode engine each, and are recycled after `max_tasks_per_worker`
tasks before ngspice's leaks matter.

A worker imports the same gaincell as this process, whatever its working folder holds: it runs
`python -P worker_entry.py` (no working folder or script folder on its path) with this process's `sys.path`
as PYTHONPATH (relative entries made absolute), so functions of the caller's modules (e.g. test helpers)
can be sent too. Its first message says where it found gaincell; a worker that cannot start (an import
error, another gaincell, ngspice failing to load, a task that cannot be unpickled) stops the whole run at
once with `WorkerStartError` carrying the worker's own error, and a netlist refused inside a worker
(`NetlistError`) stops it too: every other task would fail the same way.
"""
from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from gaincell.errors import (GaincellError, NetlistError, SimulationError, SimulationTimeout, WorkerCrashed,
                             WorkerStartError)

from .engines import FOLDER_VARIABLE, make_private_folder

ENTRY = Path(__file__).with_name("worker_entry.py")
_ERROR_KINDS = {cls.kind: cls for cls in (SimulationError, SimulationTimeout, WorkerCrashed)}


@dataclass
class Task:
    """One unit of work: `fn(*args)` in a worker, stopped after `timeout_s` seconds."""

    key: Any
    fn: Callable
    args: tuple
    timeout_s: float


def package_location() -> tuple[str, str]:
    """Where this process found gaincell and this module: what a worker must find too."""
    import gaincell

    return str(Path(gaincell.__file__).resolve()), str(Path(__file__).resolve())


def worker_path() -> str:
    """PYTHONPATH for workers: this process's `sys.path`, with '' (the working folder) and other relative
    entries made absolute, in the same order, so a worker resolves every import as this process did."""
    here = os.getcwd()
    return os.pathsep.join(os.path.join(here, entry) for entry in sys.path if isinstance(entry, str))


def _run_task(message) -> tuple:
    fn, args = message
    try:
        return ("ok", fn(*args))
    except WorkerStartError as exc:
        return ("fatal", str(exc), exc.details)
    except NetlistError as exc:
        return ("refused", str(exc))
    except SimulationError as exc:
        return ("error", exc.kind, exc.message, exc.netlist_hash, exc.log)
    except GaincellError as exc:
        return ("error", "error", str(exc), "", "")
    except Exception as exc:  # a bug or an unexpected library error: report it, keep the worker
        return ("error", "error", f"{type(exc).__name__}: {exc}", "", "")


def serve(conn: Connection) -> None:
    """A worker's life after its imports succeeded: say where gaincell came from, then run tasks."""
    conn.send(("ready", package_location()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        except Exception as exc:  # the task could not be unpickled here
            conn.send(("fatal", f"a simulator worker cannot load its task ({type(exc).__name__}: {exc}); "
                                "functions sent to workers must be importable: define them in a module, not "
                                "in the main script or interactively", ""))
            continue
        if message is None:
            return
        reply = _run_task(message)
        try:
            conn.send(reply)
        except OSError:  # the parent is gone (stopped or killed): end quietly
            return
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("error", "error", f"the task's result cannot be sent back ({type(exc).__name__}: {exc})",
                       "", ""))


class _Worker:
    def __init__(self, folder: Path):
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=worker_path(), **{FOLDER_VARIABLE: str(folder)})
        # a process group of its own: a terminal's Ctrl-C and `timeout` signal the parent's group, and the parent
        # stops its workers itself, so a worker never dies mid-task or prints a traceback for them
        self.process = subprocess.Popen([sys.executable, "-P", str(ENTRY), str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), env=env, process_group=0)
        theirs.close()
        self.conn = Connection(mine.detach())
        self.started = False
        self.tasks_done = 0
        self.task: Task | None = None
        self.deadline = 0.0

    def give(self, task: Task) -> None:
        self.task, self.deadline = task, time.monotonic() + task.timeout_s
        try:
            self.conn.send((task.fn, task.args))
        except OSError:  # the worker is gone: `_collect` reads what it left and reports it
            pass

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
        self._folder: Path | None = None  # the workers' private ngspice folder (see engines.private_folder)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped by `run` itself). Workers hold no state worth
        saving, so they are killed rather than waited for (a graceful exit of libngspice takes ~0.2 s)."""
        while self._idle:
            self._idle.pop().stop(kill=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _take_worker(self) -> _Worker:
        if self._idle:
            return self._idle.pop()
        if self._folder is None:
            self._folder = make_private_folder()
        return _Worker(self._folder)

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
                    worker = self._take_worker()
                    busy.append(worker)
                    worker.give(pending.popleft())
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
        """The outcome of `worker`'s task if it has one now; raises when the run must stop."""
        task = worker.task
        if worker.conn in ready:
            try:
                reply = worker.conn.recv()
            except (EOFError, OSError):
                reply = None
            if reply is None:  # readable but nothing came: the process is gone
                try:
                    code = worker.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = "unknown"
                worker.stop(kill=True)
                if not worker.started:
                    raise WorkerStartError(f"a simulator worker process exited (code {code}) before it started; "
                                           "its own output above says why")
                return task.key, WorkerCrashed(f"the simulator process died (exit code {code}) while running "
                                               "this task")
            return self._answer(worker, reply)
        if time.monotonic() >= worker.deadline:
            worker.stop(kill=True)
            return task.key, SimulationTimeout(f"no result within {task.timeout_s:g} s; the simulator "
                                               "process was stopped")
        return None

    def _answer(self, worker: _Worker, reply: tuple) -> tuple[Any, Any] | None:
        kind, task = reply[0], worker.task
        if kind == "ready":
            if tuple(reply[1]) != package_location():
                raise WorkerStartError(f"a simulator worker imported gaincell from {reply[1][0]}, not from "
                                       f"{package_location()[0]} like this process")
            worker.started = True
            return None
        if kind == "failed":
            _, summary, details, found = reply
            raise WorkerStartError(f"a simulator worker process could not start: {summary} (it found gaincell "
                                   f"at {found}; this process uses {package_location()[0]})", details)
        if kind == "fatal":
            raise WorkerStartError(reply[1], reply[2])
        if kind == "refused":
            raise NetlistError(reply[1])
        self._release(worker)
        if kind == "ok":
            return task.key, reply[1]
        _, error_kind, message, netlist_hash, log = reply
        return task.key, _ERROR_KINDS.get(error_kind, SimulationError)(message, netlist_hash, log)


def simulate_in_worker(netlist, backend: str = "shared", timeout_s: float | None = None):
    """Worker-side entry: run one prepared netlist with the named engine, return its `EngineOutput`.
    A shared engine that cannot start is a `WorkerStartError` (no task could run here)."""
    from .engines import BatchEngine, SharedEngine

    if backend == "shared":
        try:
            engine = SharedEngine.get()
        except Exception as exc:
            raise WorkerStartError(f"ngspice's shared library could not start in a simulator worker: "
                                   f"{exc if isinstance(exc, GaincellError) else f'{type(exc).__name__}: {exc}'}"
                                   ) from exc
        return engine.simulate(netlist)
    return BatchEngine().simulate(netlist, timeout=timeout_s)

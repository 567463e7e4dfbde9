"""Simulator workers import the gaincell this process imported, whatever the working folder holds; a worker
that cannot start stops the run at once with its own error."""
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import gaincell
from gaincell.circuits.spice import prepare
from gaincell.circuits.spice.workers import Task, WorkerPool, WorkerStartError, simulate_in_worker
from gaincell.errors import SimulatorNotFoundError

ROOT = Path(__file__).resolve().parent.parent
DECK = "t\nr1 a 0 1k\nv1 a 0 1\n.op\n"


def double(x):
    """Sent to workers by reference: this test module must be importable there."""
    return 2 * x


def run_tasks(tasks, workers=2):
    with WorkerPool(workers) as pool:
        return dict(pool.run(tasks))


def test_functions_of_test_modules_run_in_workers():
    assert run_tasks([Task(k, double, (k,), 30.0) for k in range(4)]) == {0: 0, 1: 2, 2: 4, 3: 6}


def test_a_folder_named_gaincell_in_the_working_folder_is_not_imported(tmp_path):
    """The parent folder of a clone: `gaincell/` holds the repository, whose layout is not the package's."""
    clone = tmp_path / "gaincell"
    clone.mkdir()
    for part in ("gaincell", "circuits", "netlists"):
        (clone / part).symlink_to(ROOT / part)
    (tmp_path / "d.cir").write_text(DECK)
    code = "from gaincell.circuits.spice import run; print(run(open('d.cir').read())['v(a)'][0])"
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"
    assert "Traceback" not in done.stderr


def test_a_worker_that_cannot_import_stops_the_run_at_once_with_its_error(tmp_path, monkeypatch, capfd):
    broken = tmp_path / "broken" / "gaincell"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this gaincell is broken on purpose')\n")
    monkeypatch.syspath_prepend(str(broken.parent))  # workers follow this process's sys.path
    started = time.monotonic()
    netlist = prepare(DECK)
    with pytest.raises(WorkerStartError, match=r"could not start: ImportError: this gaincell is broken on purpose "
                                               rf"\(it found gaincell at .*{broken}"):
        run_tasks([Task(k, simulate_in_worker, (netlist, "shared"), 60.0) for k in range(20)])
    assert time.monotonic() - started < 20
    assert "Traceback" not in capfd.readouterr().err  # the error comes back once, in the exception


def test_a_worker_that_imports_another_copy_of_gaincell_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "copy" / "gaincell"
    shutil.copytree(Path(gaincell.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "circuits", copy / "circuits", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(copy.parent))
    with pytest.raises(WorkerStartError, match=rf"imported gaincell from {copy / '__init__.py'}, not from "
                                               rf"{Path(gaincell.__file__).resolve()}"):
        run_tasks([Task(0, double, (1,), 60.0)], workers=1)


def test_a_task_the_worker_cannot_load_stops_the_run(monkeypatch):
    module = types.ModuleType("gaincell_test_only_here")  # exists in this process only
    exec("def triple(x):\n    return 3 * x\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(WorkerStartError, match="cannot load its task .*must be importable"):
        run_tasks([Task(0, module.triple, (1,), 60.0)], workers=1)


def test_ngspice_that_cannot_start_in_a_worker_stops_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("NGSPICE_LIBRARY_PATH", str(tmp_path / "libngspice.so.0"))
    with pytest.raises(WorkerStartError, match=r"shared library could not start .*apt-get install libngspice0"):
        run_tasks([Task(k, simulate_in_worker, (prepare(DECK), "shared"), 60.0) for k in range(6)])
    assert issubclass(WorkerStartError, gaincell.errors.GaincellError)
    assert not issubclass(SimulatorNotFoundError, WorkerStartError)

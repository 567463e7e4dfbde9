"""kill -9 of `characterize` (the runner and its ngspice workers) at each step of its work and inside each kind of
write: nothing half-written at the destination, and re-runs finish with the results of an uninterrupted run."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gaincell.app.inspection import describe
from gaincell.store import list_sweeps, read_sweep
from gaincell.sweep_data import FAILED, OK, SweepData

OUT = "char.h5"
SWEEPS = ("write", "retention", "read")  # characterize's order
# A small characterization (8 write levels, 4 retention levels, 6 x 3 x 2 read points in 6 netlists) in a
# process of its own, as `gaincell characterize` runs it, with two ngspice worker processes.
RUNNER = """
import sys
from gaincell.circuits.characterize import characterize
from gaincell.periphery import Grid
from gaincell.design import load_design
characterize(load_design("cmos-generic"), sys.argv[1], workers=2, progress=False,
             grid=Grid(stored_levels=6, pulse_levels=3, vin_levels=2, retention_stop_s=20e-3))
"""
# Results of a resumed run against an uninterrupted one. A chunk is saved whole or redone whole, so a resumed
# run sends the very same netlists through the same ngspice (checked: every point's deck text is the same):
# the numbers came out bit-identical in every run measured (7 runs of the random-kill test, ~60 kills,
# compared with rtol=0). What could still move them is round-off only (which worker's libngspice, fresh or
# not, solves a chunk; the order of float sums in extraction), far below 1e-9 relative; a real resume bug
# (a point stored under another index, a chunk of another design, a cut waveform) differs by O(1).
RTOL = 1e-9
# Besides the destination, what a killed run may leave visible beside it: the documented chunk folder, the
# lock file, and the temporary file of an interrupted HDF5 write (named after the dead writer's pid; the
# next write removes it). Inside the chunk folder: finished chunks, and the temporary file of an interrupted
# chunk write.
LEFTOVER = re.compile(rf"({re.escape(OUT)}\.parts|\.{re.escape(OUT)}\.lock|\.{re.escape(OUT)}\.(\d+)\.tmp\.h5)")
PART = re.compile(r"\d{20}\.npz")
PART_TEMPORARY = re.compile(r"\.\d{20}\.tmp\.npz")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    script = tmp_path_factory.mktemp("runner") / "characterize.py"
    script.write_text(RUNNER)
    return script


@pytest.fixture(scope="module")
def uninterrupted(runner) -> tuple[dict[str, SweepData], float]:
    """The uninterrupted run's sweeps and its duration (s)."""
    folder = runner.parent / "whole"
    folder.mkdir()
    duration = run_to_end(runner, folder)
    reference = sweeps_of(folder / OUT)
    assert set(reference) == set(SWEEPS)
    assert all(np.all(data.status == OK) for data in reference.values())
    return reference, duration


def start(script: Path, folder: Path) -> subprocess.Popen:
    """The runner in a session of its own (so its workers can be killed with it); output to a log file, not
    a pipe, so a killed run never blocks on a full pipe; its temporary folders (the workers' ngspice folders,
    which a killed run cannot remove) beside `folder`, not in the system's."""
    scratch = folder.parent / f"{folder.name}.tmp"
    scratch.mkdir(exist_ok=True)
    with open(folder.parent / f"{folder.name}.log", "a") as log:
        return subprocess.Popen([sys.executable, str(script), str(folder / OUT)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(scratch)})


def run_to_end(script: Path, folder: Path) -> float:
    started = time.perf_counter()
    assert start(script, folder).wait(timeout=300) == 0, log_of(folder)
    return time.perf_counter() - started


def log_of(folder: Path) -> str:
    return (folder.parent / f"{folder.name}.log").read_text()[-3000:]


def kill_group(run: subprocess.Popen) -> None:
    """kill -9 of the runner's process group and of its simulator workers (each in a process group of its own,
    circuits/spice/workers.py)."""
    workers = worker_pids(run.pid)
    with contextlib.suppress(ProcessLookupError):  # the run may have ended on its own just now
        os.killpg(run.pid, signal.SIGKILL)  # the runner (and anything else of its group)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.wait()


def worker_pids(parent: int) -> list[int]:
    """The live child processes of `parent` (the runner's simulator workers); none without /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def workers_running(runner: int) -> int:
    """How many simulator workers the runner has up."""
    return len(worker_pids(runner))


def sweeps_of(path: Path) -> dict[str, SweepData]:
    """Every sweep the file lists, read in full (raises on anything half-written)."""
    return {name: read_sweep(path, name) for name in list_sweeps(path)}


def assert_points_equal(got: SweepData, want: SweepData) -> None:
    """The points `got` holds as done ran in the same netlist (deck text) as in the uninterrupted run and gave
    the same results, signal by signal (padding removed)."""
    assert got.coords.keys() == want.coords.keys()
    for name, values in want.coords.items():
        np.testing.assert_array_equal(got.coords[name], values)
    for index in map(tuple, np.argwhere(got.status == OK)):
        assert got.decks[got.deck_index[index]] == want.decks[want.deck_index[index]], (got.name, index)
        have, expected = got.point(index), want.point(index)
        assert have.keys() == expected.keys(), (got.name, index)
        for signal_name, value in expected.items():
            np.testing.assert_allclose(have[signal_name], value, rtol=RTOL, atol=0,
                                       err_msg=f"sweep {got.name!r} point {index} signal {signal_name!r}")


def assert_results_like(folder: Path, reference: dict[str, SweepData]) -> None:
    """A run that ended on its own: every point OK, with the uninterrupted run's signals, netlists and results;
    no temporary file left (chunk files that a kill in a sweep's last merge left are tolerated here: see
    test_kill_9_after_the_last_chunk_of_a_sweep_was_saved_merges_it_on_the_rerun)."""
    finished = sweeps_of(folder / OUT)
    assert finished.keys() == reference.keys()
    for name, data in finished.items():
        assert np.all(data.status == OK), (name, data.counts())
        assert data.waveforms.keys() == reference[name].waveforms.keys()
        assert data.scalars.keys() == reference[name].scalars.keys()
        for key in ("testbench", "design", "spec_sha256", "simulator"):
            assert data.attrs[key] == reference[name].attrs[key], (name, key)
        assert_points_equal(data, reference[name])
    assert set(check_after_kill(folder, reference)) <= {"unmerged chunk files"}


def assert_finished_like(folder: Path, reference: dict[str, SweepData]) -> None:
    """`assert_results_like`, and like an uninterrupted run in full: every chunk merged (no chunk folder left)
    and every sweep's provenance attributes present (e.g. its netlist and hash)."""
    assert_results_like(folder, reference)
    for name, data in sweeps_of(folder / OUT).items():
        assert data.attrs.keys() == reference[name].attrs.keys(), name
    assert sorted(p.name for p in folder.iterdir()) == [OUT]  # the lock file goes with the lock


def progress_of(folder: Path) -> dict[str, int]:
    """Points done per sweep, in the file and in finished (not yet merged) chunk files."""
    done = {name: 0 for name in SWEEPS}
    if (folder / OUT).exists():
        for name, data in sweeps_of(folder / OUT).items():
            done[name] += int(np.sum(data.status == OK))
    for part in (folder / f"{OUT}.parts").glob("*/*.npz"):
        if PART.fullmatch(part.name):
            with np.load(part) as chunk:
                done[part.parent.name] += 0 if "error" in chunk.files else len(chunk["index"])
    return done


def phase_of(before: dict[str, int], after: dict[str, int], totals: dict[str, int], workers: int) -> str:
    """Where a kill landed, judged by what the run had saved and whether its workers were up."""
    if after == before:
        return ("simulating, no new chunk saved yet" if workers else
                "no worker up (interpreter start-up or between sweeps), nothing new saved")
    working = next((name for name in SWEEPS if after[name] < totals[name]), None)
    return f"during sweep {working!r}" if working else "after every point was saved (merging or exiting)"


def check_after_kill(folder: Path, reference: dict[str, SweepData]) -> list[str]:
    """Nothing half-written: the destination is absent or whole (its done points equal the reference),
    finished chunk files are whole, nothing else is left but the documented leftovers. Returns what was left."""
    left = []
    for path in folder.iterdir():
        if path.name == OUT:
            continue
        match = LEFTOVER.fullmatch(path.name)
        assert match, f"a killed run left {path.name} beside the destination"
        if match.group(2):
            left.append("temporary HDF5 of an interrupted write")
    parts = folder / f"{OUT}.parts"
    for part in parts.glob("*/*") if parts.exists() else []:
        assert part.parent.name in SWEEPS, f"unexpected chunk folder {part.parent}"
        if PART_TEMPORARY.fullmatch(part.name):
            left.append("temporary chunk file of an interrupted write")
            continue
        assert PART.fullmatch(part.name), f"unexpected file {part} in the chunk folder"
        with np.load(part) as chunk:  # renamed into place whole
            assert "index" in chunk.files and "deck" in chunk.files
        left.append("unmerged chunk files")
    out = folder / OUT
    if out.exists():
        for name, data in sweeps_of(out).items():
            assert not np.any(data.status == FAILED), data.error[data.status == FAILED]
            assert_points_equal(data, reference[name])
        assert f"{out}: gaincell characterization" in describe(out)  # `gaincell inspect` of an interrupted file
    return sorted(set(left))


def new_parts(folder: Path, sweep: str, since: float) -> int:
    """Chunk files of `sweep` saved since `since` (time.time())."""
    count = 0
    for part in (folder / f"{OUT}.parts" / sweep).glob("[0-9]*.npz"):
        try:
            count += part.stat().st_mtime >= since
        except FileNotFoundError:  # merged and removed since it was listed
            pass
    return count


# Where the runs are killed, one run each, in this order, each resuming what the ones before it saved: a
# condition on the output folder and the run, polled every half millisecond (not a random moment: the same
# places whatever the machine's load).
KILL_POINTS = [
    ("the output lock taken, no worker up yet", lambda folder, run, since: (folder / f".{OUT}.lock").exists()),
    ("workers up, nothing saved yet", lambda folder, run, since: workers_running(run.pid) > 0),
    ("the write sweep's chunk saved", lambda folder, run, since: new_parts(folder, "write", since) > 0),
    ("the retention sweep's chunk saved", lambda folder, run, since: new_parts(folder, "retention", since) > 0),
    ("the first read chunk saved", lambda folder, run, since: new_parts(folder, "read", since) > 0),
    ("three more read chunks saved", lambda folder, run, since: new_parts(folder, "read", since) >= 3),
]


@pytest.mark.slow
def test_kill_9_of_characterize_at_each_step_resumes_to_the_uninterrupted_result(runner, uninterrupted, tmp_path):
    """kill -9 of the runner and its workers at each step of a characterization (start-up, simulating, after a
    chunk of each sweep), each run resuming the last: nothing half-written after any kill, and the last run
    ends with the uninterrupted run's results."""
    reference, duration = uninterrupted
    totals = {name: data.status.size for name, data in reference.items()}
    folder, phases, finished_first = tmp_path / "killed", Counter(), []
    folder.mkdir()
    for point, reached in KILL_POINTS:
        before, since = progress_of(folder), time.time() - 0.05  # file times lag the clock by a tick
        run = start(runner, folder)
        while run.poll() is None and not reached(folder, run, since):
            time.sleep(0.0005)  # leaves the cores to the run
        if run.poll() is not None:  # ended before its kill point (a resumed run has less to do)
            assert run.returncode == 0, log_of(folder)
            assert_results_like(folder, reference)
            finished_first.append(point)
            shutil.rmtree(folder)  # start over, so that the next kills land in work again
            folder.mkdir()
            continue
        workers = workers_running(run.pid)
        kill_group(run)
        left = check_after_kill(folder, reference)
        phase = phase_of(before, progress_of(folder), totals, workers) + "".join(f"; {x}" for x in left)
        print(f"kill at {point!r}: {phase}")  # shown with a failure
        phases[phase] += 1
    print(f"uninterrupted run {duration:.1f} s; kills: {dict(phases)}; runs that ended before their kill point: "
          f"{finished_first}")
    assert len(finished_first) <= 1, finished_first
    run_to_end(runner, folder)
    assert_finished_like(folder, reference)


def kill_when_written(script: Path, folder: Path, pattern: str, attempts: int = 3) -> Path:
    """Start a run in an empty `folder` and kill it the moment a file matching `pattern` (a glob under
    `folder`) appears once the destination exists. Returns that file, still there after the kill (the kill
    landed before the step that follows its writing); a run that got past it is retried from scratch.
    Polling catches files that live for milliseconds or more (a chunk waiting for its merge),
    not a write of one file: `CUT_CHUNK_WRITE` and `CUT_HDF5_WRITE` stand in for those."""
    for _ in range(attempts):
        run = start(script, folder)
        found = None
        while run.poll() is None and not found:
            found = (folder / OUT).exists() and next(folder.glob(pattern), None)
            time.sleep(0.0005)  # leaves the cores to the run
        if found:
            kill_group(run)
        run.wait()
        if found and found.exists():
            return found
        shutil.rmtree(folder)
        folder.mkdir()
    pytest.fail(f"no kill landed while {pattern} was there in {attempts} runs")


# A kill in the middle of the HDF5 replacement, made exact: the file is built in memory and written in one call
# (a window too short to poll for), so the runner writes half of its second replacement and kills its group.
CUT_HDF5_WRITE = f"""
import os, signal, pathlib
whole_write_bytes = pathlib.Path.write_bytes
def write_half_then_die(self, data):
    if self.name.endswith(".tmp.h5") and (self.parent / "{OUT}").exists():
        whole_write_bytes(self, bytes(data)[: len(data) // 2])
        os.killpg(0, signal.SIGKILL)
    return whole_write_bytes(self, data)
pathlib.Path.write_bytes = write_half_then_die
"""


@pytest.mark.slow
def test_kill_9_inside_the_hdf5_replacement_keeps_the_previous_file_whole(runner, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    folder, dying = tmp_path / "killed", tmp_path / "dying.py"
    folder.mkdir()
    dying.write_text(CUT_HDF5_WRITE + RUNNER)
    assert start(dying, folder).wait(timeout=300) == -signal.SIGKILL
    assert "temporary HDF5 of an interrupted write" in check_after_kill(folder, reference)
    assert np.all(read_sweep(folder / OUT, "write").status == OK)  # the previous file, whole
    run_to_end(runner, folder)
    assert_finished_like(folder, reference)  # the dead writer's temporary file is gone too


# A kill in the middle of a chunk file's write, made exact: the runner writes the first `retention` chunk file,
# cuts it to half its length (what the file system holds when the writer dies mid-write) and kills its group.
CUT_CHUNK_WRITE = """
import os, signal
from pathlib import Path
import numpy as np
whole_savez = np.savez
def savez_then_die(file, *args, **kwds):
    whole_savez(file, *args, **kwds)
    if Path(file).parent.name == "retention":
        os.truncate(file, os.path.getsize(file) // 2)
        os.killpg(0, signal.SIGKILL)
np.savez = savez_then_die
"""


@pytest.mark.slow
def test_kill_9_inside_a_chunk_file_write_is_ignored_by_the_rerun(runner, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    folder, dying = tmp_path / "killed", tmp_path / "dying.py"
    folder.mkdir()
    dying.write_text(CUT_CHUNK_WRITE + RUNNER)
    assert start(dying, folder).wait(timeout=300) == -signal.SIGKILL
    (temporary,) = (folder / f"{OUT}.parts" / "retention").iterdir()
    assert PART_TEMPORARY.fullmatch(temporary.name) and temporary.stat().st_size > 0
    check_after_kill(folder, reference)  # `gaincell inspect` of the interrupted file included
    run_to_end(runner, folder)  # the cut chunk file must not stop the re-run
    assert_finished_like(folder, reference)


@pytest.mark.slow
def test_kill_9_after_the_last_chunk_of_a_sweep_was_saved_merges_it_on_the_rerun(runner, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    folder = tmp_path / "killed"
    folder.mkdir()
    kill_when_written(runner, folder, f"{OUT}.parts/retention/[0-9]*.npz")  # retention is one chunk
    assert "retention" not in list_sweeps(folder / OUT)
    check_after_kill(folder, reference)
    run_to_end(runner, folder)
    assert_finished_like(folder, reference)

"""`gaincell simulate FILE` runs a plain netlist exactly as ngspice does: ngspice's own regression netlists
(../shared/reference/ngspice-tests, PROVENANCE.md there) through both backends and through plain
`ngspice -b -r`, every vector compared on ngspice's own grid.

Every netlist has one expected outcome, listed once below (unlisted ones must agree):
- agree: both backends give ngspice's plots, under the same names (`plot_kind`, `vector_name`), with every
  vector on ngspice's grid within RTOL of ngspice's values (relative to the largest magnitude of that
  vector, so a value near zero is held to RTOL of the vector's scale, and an all-zero vector must be 0);
- refused: control block (the trust policy, circuits/spice/trust.py) or no analysis line;
- ngspice fails: ngspice itself crashes; both backends report a clear SimulationError;
- ngspice exceeds its time: plain ngspice does not finish within REFERENCE_LIMIT_S; both backends stop at
  their timeout with SimulationTimeout.

The runs go through the project's worker pool (two processes): a reference task runs `ngspice -b -r` in the
netlist's folder, a gaincell task does what `gaincell simulate FILE` does (the file's text prepared with its
folder as base_dir, then the backend's engine, `simulate_in_worker` as `simulator.run` uses it); the CLI path
itself is checked on an AC netlist and on a plot without points.

Every run reads a writable copy of the folder in the test's temporary folder (ngspice writes logs beside the
netlist it runs), and plain ngspice's results are kept between test runs (tests/reference_cache.py: outside
the project, recomputed when the ngspice binary, the folder or reference_run changes).
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.circuits.spice.engines import SPICEINIT, plot_kind
from gaincell.circuits.spice.netlist import prepare, read_netlist_file
from gaincell.circuits.spice.rawfile import read_raw
from gaincell.circuits.spice.trust import CONTROL_RULE
from gaincell.circuits.spice.workers import Task, WorkerPool, simulate_in_worker
from gaincell.errors import NetlistError, SimulationError, SimulationTimeout, WorkerCrashed
import reference_cache

RTOL = 1e-9
REFERENCE_LIMIT_S = 20.0  # the slowest agreeing netlist (bsim3soifd/ring51) takes ~10 s in ngspice here
SLOW_TIMEOUT_S = 2.0  # gaincell's timeout for the netlists ngspice itself cannot finish in time
RUN_TIMEOUT_S = 120.0
BACKENDS = ("shared", "batch")

AGREE = "agree"
CONTROL = "refused: control block"
NO_ANALYSIS = "refused: no analysis line"
NGSPICE_FAILS = "ngspice fails"
NGSPICE_SLOW = "ngspice exceeds its time"

_CONTROL_BLOCK = """
func/func-1 lib-processing/ex1a lib-processing/ex1b lib-processing/ex2a lib-processing/ex3a lib-processing/scope-1
lib-processing/scope-2 lib-processing/scope-3 misc/ac-zero misc/alter-vec misc/asrc-tc-1 misc/asrc-tc-2 misc/bugs-1
misc/bugs-2 misc/convergence misc/dollar-1 misc/empty-1 misc/if-elseif misc/log-functions-1 misc/resume-1
misc/test-noise-2 misc/test-noise-3 model/binning-1 model/instance-defaults model/special-names-1 parser/bxpressn-1
parser/minus-minus parser/xpressn-1 parser/xpressn-2 parser/xpressn-3 pz/ac-resistance sens/sens-ac-1 sens/sens-ac-2
sens/sens-dc-1 sens/sens-dc-2 subckt-processing/global-1 subckt-processing/model-scope-5 temper/temper-1
temper/temper-2 temper/temper-3 temper/temper-res-1
"""
# netlist (relative to the folder) -> (outcome, reason); every other netlist: AGREE
EXPECTED: dict[str, tuple[str, str]] = {
    **{f"tests/regression/{name}.cir": (CONTROL, "its .control block runs ngspice commands (the .noctl.cir copy "
                                                 "beside it runs the same analyses)")
       for name in _CONTROL_BLOCK.split()},
    "tests/regression/pipe/alter-1.cir": (NO_ANALYSIS, "its analyses come from ngspice's standard input (a pipe "
                                                       "test); plain ngspice -b runs nothing and writes no results"),
    "tests/general/diffpair.cir": (NGSPICE_FAILS, "ngspice 39 crashes on it (segmentation fault)"),
    "tests/sensitivity/diffpair.cir": (NGSPICE_FAILS, "ngspice 39 crashes on it (segmentation fault)"),
    "tests/bsim3soidd/ring51.cir": (NGSPICE_SLOW, "51-stage BSIM3-SOI ring oscillator: minutes in ngspice"),
    "tests/bsim3soipd/ring51.cir": (NGSPICE_SLOW, "51-stage BSIM3-SOI ring oscillator: ~40 s in ngspice"),
    "tests/mesa/mesa12.cir": (NGSPICE_SLOW, "more than 200 s in ngspice"),
    "tests/mesa/mesa-12.cir": (NGSPICE_SLOW, "more than 200 s in ngspice"),
}


def outcome(name: str) -> str:
    return EXPECTED.get(name, (AGREE, ""))[0]


def reference_run(path: str, limit_s: float):
    """Plain `ngspice -b -r` on the file, in its own folder (one thread, as gaincell runs it):
    ("ok", [(plot name, [(vector name, values), ...]), ...]), ("timeout",) or ("failed", message)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="conformance-") as scratch:
        Path(scratch, ".spiceinit").write_text(SPICEINIT)
        raw = Path(scratch, "ref.raw")
        try:
            done = subprocess.run(["ngspice", "-b", "-r", str(raw), str(path)], cwd=path.parent, capture_output=True,
                                  text=True, timeout=limit_s, env=dict(os.environ, SPICE_USERINIT_DIR=scratch))
        except subprocess.TimeoutExpired:
            return ("timeout",)
        if done.returncode != 0 or not raw.exists():
            return ("failed", f"exit code {done.returncode}, {'a' if raw.exists() else 'no'} raw file")
        return ("ok", [(plot.name, [(name.lower(), values) for name, values in plot.columns])
                       for plot in read_raw(raw)])


@pytest.fixture(scope="module")
def netlist_folder(shared_dir, tmp_path_factory) -> Path:
    """A writable copy of ../shared/reference/ngspice-tests: the only folder these tests run netlists in."""
    return reference_cache.writable_copy(shared_dir / "reference" / "ngspice-tests",
                                         tmp_path_factory.mktemp("ngspice-tests"))


@pytest.fixture(scope="module")
def reference_key(netlist_folder) -> str:
    """The cache key of plain ngspice's results: the binary, every file of the folder, how reference_run runs."""
    return reference_cache.cache_key(netlist_folder, inspect.getsource(reference_run), SPICEINIT, REFERENCE_LIMIT_S)


def reference_of(folder: Path, key: str, name: str):
    """Plain ngspice's result for one netlist of the folder: the cached one, else a fresh run."""
    cached = reference_cache.load(key)
    if cached is not None and name in cached:
        return cached[name]
    return reference_run(str(folder / name), REFERENCE_LIMIT_S)


def cacheable(references: dict) -> bool:
    """Only results as every netlist's expected outcome has them are kept (a timeout on a loaded machine, a
    crashed worker are not): a failure is never replayed from the cache."""
    wanted = {AGREE: ("ok",), NGSPICE_FAILS: ("failed",), NGSPICE_SLOW: ("ok", "failed", "timeout")}
    return all(isinstance(result, tuple) and result[0] in wanted[outcome(name)] for name, result in references.items())


def gaincell_run(path: str, backend: str, timeout_s: float):
    """What `gaincell simulate FILE --backend BACKEND` runs (see gaincell/app/commands/circuits.py): the file's text,
    prepared with its folder as base_dir, run by the backend's engine; the plots as (kind, {name: values}) and
    the simulator."""
    path = Path(path)
    netlist = prepare(read_netlist_file(path), base_dir=path.parent.resolve(), source_name=str(path))
    output = simulate_in_worker(netlist, backend, timeout_s)
    return output.plots, output.simulator


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _reference_names(columns: list[tuple[str, np.ndarray]], ours: list[str]) -> list[str]:
    """ngspice's raw-file names mapped onto gaincell's: the same, except the raw file's repeated `i(p1)` of a
    CPL/TXL line, which gaincell tells apart as `i(p1#branch1_0)`, `i(p1#branch1_1)`, ... (in that order)."""
    counts = Counter(name for name, _ in columns)
    taken: Counter = Counter()
    names = []
    for name, _ in columns:
        if counts[name] > 1 or (name.startswith("i(") and name not in ours):
            stem = name[:-1] + "#branch"
            matching = sorted((n for n in ours if n.startswith(stem)), key=_natural)
            assert len(matching) == counts[name], f"{name}: {counts[name]} in ngspice's raw file, ours {matching}"
            names.append(matching[taken[name]])
            taken[name] += 1
        else:
            names.append(name)
    return names


def _agrees(expected: np.ndarray, got: np.ndarray) -> bool:
    """Equal shapes and |got - expected| <= RTOL x the largest finite |expected| (NaN where ngspice has NaN)."""
    scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)
    return (np.shape(expected) == np.shape(got)
            and np.allclose(got, expected, rtol=0, atol=RTOL * scale, equal_nan=True))


def compare(name: str, backend: str, reference, plots) -> list[str]:
    """Every difference between ngspice's plots and a backend's (plot kinds, vector names, values)."""
    where = f"{name} ({backend})"
    kinds = [plot_kind(plot_name) for plot_name, _ in reference]
    if kinds != [kind for kind, _ in plots]:
        return [f"{where}: plots {[kind for kind, _ in plots]}, ngspice {kinds}"]
    problems = []
    for (kind, columns), (_, vectors) in zip(((plot_kind(n), c) for n, c in reference), plots):
        names = _reference_names(columns, list(vectors))
        if sorted(names) != sorted(vectors):
            problems.append(f"{where} {kind}: vectors {sorted(vectors)}, ngspice {sorted(names)}")
            continue
        for vector, (_, expected) in zip(names, columns):
            got = vectors[vector]
            if np.iscomplexobj(expected) != np.iscomplexobj(got):
                problems.append(f"{where} {kind} {vector}: {got.dtype}, ngspice {expected.dtype}")
            elif not _agrees(expected, got):
                worst = (np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-300)
                         if np.shape(expected) == np.shape(got) else float("nan"))
                problems.append(f"{where} {kind} {vector}: {len(got)} points, ngspice {len(expected)}; worst "
                                f"difference {worst:.2e} of the vector's largest value")
    return problems


def _check_refused(path: Path, name: str) -> None:
    with pytest.raises(NetlistError) as refused:
        prepare(read_netlist_file(path), base_dir=path.parent.resolve(), source_name=str(path))
    message = str(refused.value)
    if outcome(name) == CONTROL:
        assert CONTROL_RULE in message and str(path) in message, message
    else:
        assert "no analysis line" in message, message


@pytest.mark.slow
def test_ngspice_regression_netlists_run_as_in_ngspice(netlist_folder, reference_key):
    folder = netlist_folder
    netlists = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.cir"))}
    assert len(netlists) > 100, f"{folder} holds only {len(netlists)} netlists"
    assert set(EXPECTED) <= set(netlists), f"listed but missing: {sorted(set(EXPECTED) - set(netlists))}"
    start = time.perf_counter()
    cached = reference_cache.load(reference_key) or {}
    tasks = []
    for name, path in netlists.items():
        if outcome(name) in (CONTROL, NO_ANALYSIS):
            _check_refused(path, name)
            continue
        slow = outcome(name) == NGSPICE_SLOW
        if name not in cached:
            tasks.append(Task((name, "ngspice"), reference_run, (str(path), REFERENCE_LIMIT_S),
                              REFERENCE_LIMIT_S + 30))
        for backend in BACKENDS:
            limit = SLOW_TIMEOUT_S if slow else RUN_TIMEOUT_S
            # a slow netlist in the shared backend is stopped by the pool (the worker and its libngspice killed at
            # the limit); the batch engine stops its own ngspice process at the limit, before the pool would kill
            # the worker and leave that process running for minutes beside the next tests
            margin = 0 if slow and backend == "shared" else 30
            tasks.append(Task((name, backend), gaincell_run, (str(path), backend, limit), limit + margin))
    # the slowest first, so that the two workers finish together
    tasks.sort(key=lambda task: outcome(task.key[0]) != NGSPICE_SLOW and "ring51" not in task.key[0])
    # a CPL circuit leaves libngspice unable to run another (engines.SharedEngine): each in a fresh worker
    after_cpl = [t for t in tasks if t.key[1] == "shared" and "transmission/cpl" in t.key[0]]
    results: dict = {}
    with WorkerPool(2) as pool:
        for key, result in pool.run([t for t in tasks if t not in after_cpl]):
            results[key] = result
    for task in after_cpl:
        with WorkerPool(1) as pool:
            results.update(pool.run([task]))
    computed = {name: result for (name, kind), result in results.items() if kind == "ngspice"}
    if computed and cacheable(computed):
        reference_cache.store(reference_key, {**cached, **computed})
    results.update({(name, "ngspice"): result for name, result in cached.items()})
    problems = []
    for name in netlists:
        expected = outcome(name)
        if expected in (CONTROL, NO_ANALYSIS):
            continue
        reference = results[name, "ngspice"]
        if expected == AGREE:
            if reference[0] != "ok":
                problems.append(f"{name}: ngspice itself gave {reference}")
                continue
            for backend in BACKENDS:
                got = results[name, backend]
                if isinstance(got, Exception):
                    problems.append(f"{name} ({backend}): {type(got).__name__}: {got}")
                    continue
                plots, simulator = got
                if f"({backend}" not in simulator:
                    problems.append(f"{name} ({backend}): run by {simulator}")
                problems += compare(name, backend, reference[1], plots)
        elif expected == NGSPICE_FAILS:
            if reference[0] != "failed":
                problems.append(f"{name}: expected ngspice to fail, it gave {reference[0]}")
            for backend in BACKENDS:
                got = results[name, backend]
                if not isinstance(got, SimulationError) or isinstance(got, SimulationTimeout):
                    problems.append(f"{name} ({backend}): expected a clear SimulationError, got {got!r}")
                elif backend == "shared":
                    assert isinstance(got, WorkerCrashed) and "died" in str(got), got
                else:
                    assert "ngspice exited with code" in str(got), got
        else:
            # plain ngspice needs about the reference limit for these (once it finished in time on a loaded
            # machine): what is checked is that gaincell stops them clearly at its own short timeout
            for backend in BACKENDS:
                got = results[name, backend]
                if not isinstance(got, SimulationTimeout):
                    problems.append(f"{name} ({backend}): expected SimulationTimeout, got {got!r}")
    counts = Counter(outcome(name) for name in netlists)
    print(f"\nconformance: {dict(counts)} in {time.perf_counter() - start:.0f} s "
          f"(ngspice's results {'from the cache' if cached else 'computed'})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_stores_an_ac_result_as_ngspice_computes_it(netlist_folder, reference_key, tmp_path, backend):
    """`gaincell simulate` of an .ac netlist: complex vectors in the file, equal to ngspice's on its grid."""
    from gaincell.app.cli import main
    from gaincell.store import read_sweep

    path = netlist_folder / "tests" / "filters" / "lowpass.cir"
    out = tmp_path / "lowpass.h5"
    result = CliRunner().invoke(main, ["simulate", str(path), "--out", str(out), "--backend", backend])
    assert result.exit_code == 0, result.output
    status, reference = reference_of(netlist_folder, reference_key, "tests/filters/lowpass.cir")
    assert status == "ok"
    [columns] = [columns for plot_name, columns in reference if plot_kind(plot_name) == "ac"]
    data = read_sweep(out, "ac")
    assert int(data.n_samples[0]) == len(columns[0][1]) > 1
    stored = data.point((0,))
    assert set(stored) == {name for name, _ in columns}
    for name, expected in columns:
        assert stored[name].dtype == expected.dtype, name
        assert _agrees(expected, stored[name]), name
    assert data.is_complex("v(2)") and np.ptp(np.angle(stored["v(2)"])) > 1  # the phase is there


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_stores_a_plot_without_points_as_empty_with_a_note(netlist_folder, tmp_path, backend):
    from gaincell.app.cli import main
    from gaincell.store import read_sweep

    path = netlist_folder / "ac_zero_points.cir"
    out = tmp_path / "zero.h5"
    result = CliRunner().invoke(main, ["simulate", str(path), "--out", str(out), "--backend", backend])
    assert result.exit_code == 0, result.output
    assert "ac (0 vectors)" in result.output
    data = read_sweep(out, "ac")
    assert not data.waveforms and not data.scalars and "without any points" in data.attrs["note"]
    described = CliRunner().invoke(main, ["inspect", str(out)])
    assert described.exit_code == 0, described.output
    assert "note: the simulator returned this analysis without any points" in described.output


def test_empty_circuit_runs_alike_in_both_backends(netlist_folder, reference_key):
    """A circuit without elements (only node 0): ngspice runs its .op, .tran and .ac; so do both backends."""
    name = "tests/regression/misc/empty-1.noctl.cir"
    path = netlist_folder / name
    from gaincell.circuits.spice.simulator import run

    status, reference = reference_of(netlist_folder, reference_key, name)
    assert status == "ok" and len(reference) == 3
    for backend in BACKENDS:
        result = run(read_netlist_file(path), backend=backend, base_dir=path.parent, source_name=str(path))
        assert compare(path.name, backend, reference, result.plots) == []

"""Both ngspice backends against analytic solutions and against each other."""
import numpy as np
import pytest
from PySpice.Spice.Netlist import Circuit

from gaincell.circuits.spice import Transient, run
from gaincell.circuits.spice.engines import find_errors, plot_kind, vector_name
from gaincell.circuits.spice.netlist import prepare
from gaincell.circuits.spice.workers import Task, WorkerPool, simulate_in_worker

R, C, L = 1e3, 1e-9, 1e-6


def rc_circuit():
    circuit = Circuit("rc step")
    circuit.V("drive", "drive", circuit.gnd, 1.0)
    circuit.R(1, "drive", "out", R)
    circuit.C(1, "out", circuit.gnd, C, initial_condition=0)
    return circuit


def rlc_netlist():
    return f"""series rlc step
vdrive drive 0 1
r1 drive a 20
l1 a out {L} ic=0
c1 out 0 {C} ic=0
"""


TRAN_RC = Transient(step_s=1e-9, stop_s=5e-6, max_step_s=1e-9, uic=True)
TRAN_RLC = Transient(step_s=0.5e-9, stop_s=2e-6, max_step_s=0.5e-9, uic=True)


def rc_exact(t):
    return 1 - np.exp(-t / (R * C))


def rlc_exact(t, r=20.0):
    alpha, w0 = r / (2 * L), 1 / np.sqrt(L * C)
    wd = np.sqrt(w0**2 - alpha**2)
    return 1 - np.exp(-alpha * t) * (np.cos(wd * t) + alpha / wd * np.sin(wd * t))


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_rc_matches_analytic(backend):
    result = run(rc_circuit(), TRAN_RC, save=["v(out)", "i(vdrive)"], backend=backend)
    t, v = result["time"], result["v(out)"]
    assert len(t) > 1000
    assert np.max(np.abs(v - rc_exact(t))) / 1.0 < 1e-4
    # the source delivers the capacitor current (ngspice's sign: into the + terminal)
    assert np.max(np.abs(-result["i(vdrive)"] - np.exp(-t / (R * C)) / R)) < 1e-4 / R


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_rlc_matches_analytic(backend):
    result = run(rlc_netlist(), TRAN_RLC, save=["v(out)"], backend=backend)
    t, v = result["time"], result["v(out)"]
    peak = np.max(np.abs(rlc_exact(t)))
    assert np.max(np.abs(v - rlc_exact(t))) / peak < 1e-4


def test_backends_agree():
    for source, tran in ((rc_circuit(), TRAN_RC), (rlc_netlist(), TRAN_RLC)):
        shared = run(source, tran, backend="shared")
        batch = run(source, tran, backend="batch")
        assert set(shared) == set(batch)
        for name in shared:
            assert np.allclose(shared[name], batch[name], rtol=1e-6, atol=1e-12), name
        assert shared.netlist.hash == batch.netlist.hash


def test_vector_names_are_ngspice_raw_file_names():
    """Both backends name vectors as `ngspice -b -r` writes them into a raw file (lower case)."""
    assert vector_name("sn", "voltage") == "v(sn)"
    assert vector_name("V(SN)", "voltage") == "v(sn)"
    assert vector_name("x1.sn", "voltage") == "v(x1.sn)"
    assert vector_name("vrbl#branch", "current") == "i(vrbl)"
    assert vector_name("i(vrbl)", "current") == "i(vrbl)"
    assert vector_name("v-sweep", "voltage") == "v(v-sweep)"
    assert vector_name("i-sweep", "current") == "i(i-sweep)"
    assert vector_name("@m1[vbs]", "voltage") == "v(@m1[vbs])"
    assert vector_name("@m1[id]", "current") == "i(@m1[id])"
    assert vector_name("p1#branch1_0", "current") == "i(p1#branch1_0)"  # the raw file's i(p1), told apart
    assert vector_name("time", "time") == "time"
    assert vector_name("inoise_spectrum", "other") == "inoise_spectrum"
    assert vector_name("inoise_total", "current") == "i(inoise_total)"


def test_plot_names_are_ngspice_plot_types():
    for shared, batch, kind in (("tran1", "Transient Analysis", "tran"), ("dc1", "DC transfer characteristic", "dc"),
                                ("pz1", "Pole-Zero Analysis", "pz"), ("sens1", "Sensitivity Analysis", "sens"),
                                ("noise1", "Noise Spectral Density Curves", "noise"),
                                ("noise2", "Integrated Noise", "noise"),
                                ("disto1", "DISTORTION - 2nd harmonic", "disto")):
        assert plot_kind(shared) == plot_kind(batch) == kind


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_names_agree_for_device_quantities_sweeps_and_line_currents(backend):
    dc = run("names\nv1 in 0 1\nr1 in 0 1k\nm1 in in 0 0 nm\n.model nm nmos level=1\n.save all @m1[vbs] @m1[id]\n"
             ".dc v1 0 1 0.5\n", backend=backend)
    assert set(dc) == {"v(v-sweep)", "v(in)", "i(v1)", "v(@m1[vbs])", "i(@m1[id])"}
    assert [kind for kind, _ in dc.plots] == ["dc"]


CPL_LINE = ("line\nvs in 0 pulse(0 1 0 0.1n 0.1n 1n 4n)\nrs in a 50\nrl b 0 50\n"
            "p1 a 0 b 0 lossy\n.model lossy cpl r=0.1 l=1e-9 g=0 c=1e-13 length=1\n.tran 0.1n 2n\n")


def test_cpl_line_currents_and_a_second_cpl_run():
    """Both backends name a CPL line's currents i(p1#branch1_0) ...; libngspice crashes or hangs on a second
    CPL circuit in one process, so the shared engine runs every later deck with ngspice -b (same numbers).
    Its own pool keeps that engine away from the other tests' shared worker."""
    netlist = prepare(CPL_LINE)
    with WorkerPool(1) as pool:
        tasks = [Task(k, simulate_in_worker, (netlist, backend, 30.0), 30.0)
                 for k, backend in enumerate(("shared", "shared", "batch"))]
        first, second, batch = (output for _, output in sorted(pool.run(tasks), key=lambda item: item[0]))
    vectors = [dict(output.plots)["tran"] for output in (first, second, batch)]
    assert {"i(p1#branch1_0)", "i(p1#branch2_0)", "i(vs)"} <= set(vectors[0])
    assert "(shared" in first.simulator and "(batch)" in second.simulator and "CPL" in second.log
    for name in vectors[0]:
        assert np.array_equal(vectors[0][name], vectors[1][name]) and np.array_equal(vectors[0][name], vectors[2][name])


def test_user_transient_keeps_ngspice_default_tmax():
    """A netlist's `.tran` without TMAX is passed on as written: ngspice takes min(step, (stop-start)/50)."""
    result = run(rlc_netlist() + ".tran 10n 100n\n", backend="batch")
    assert ".tran 10n 100n\n" in result.netlist.text
    assert np.max(np.diff(result["time"])) <= 100e-9 / 50 * (1 + 1e-9)  # not the 10 ns print step
    own = run(rlc_netlist(), Transient(step_s=10e-9, stop_s=100e-9, max_step_s=10e-9), backend="batch")
    assert ".tran 1e-08 1e-07 0 1e-08" in own.netlist.text  # gaincell's testbenches set TMAX themselves


def test_gmin_stepping_note_is_not_an_error():
    log = "Warning: singular matrix:  check node out\nNote: Starting dynamic gmin stepping\n" \
          "Trying gmin =   1.0000E-03 Note: One successful gmin step\n"
    assert find_errors(log) == []
    assert find_errors("doAnalyses: TRAN:  Timestep too small; time = 1e-6\nrun simulation(s) aborted")


def test_shared_worker_survives_many_runs():
    """Destroy + remcirc after each run: 50 runs in the same worker stay correct."""
    values = [run(rc_circuit(), Transient(1e-8, 1e-6, 1e-8, uic=True), save=["v(out)"])["v(out)"][-1]
              for _ in range(50)]
    assert np.ptp(values) <= 1e-9 * abs(values[0])  # state left from an earlier run moves it far more
    assert values[0] == pytest.approx(rc_exact(1e-6), rel=1e-3)


def test_a_circuit_without_elements_runs_alike_in_both_backends():
    """Only node 0 (ngspice's regression/misc/empty-1): ngspice runs every analysis; both backends return the
    same plots, the .op without vectors."""
    deck = "nothing\n.op\n.tran 0.1m 1m\n.ac lin 3 1kHz 2kHz\n.end\n"
    shared, batch = (run(deck, backend=backend) for backend in ("shared", "batch"))
    for result in (shared, batch):
        assert [(kind, sorted(vectors)) for kind, vectors in result.plots] == [
            ("ac", ["frequency"]), ("op", []), ("tran", ["time"])]
    for (_, one), (_, other) in zip(shared.plots, batch.plots):
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])

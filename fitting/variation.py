"""The `variation` component: cell-to-cell spread fitted from the Monte Carlo sweeps of a characterization file
(circuits/mismatch.py: `mc_read`, `mc_retention`, `read_noise`), and its check against the simulated cells.

    figures = variation_figures("char.h5")            # per-cell fits -> mean, covariance, sigmas
    variation = fit_variation("char.h5")              # the surrogate's Variation
    table = compare_with_simulation("char.h5", variation, nominal_tau_s)   # sampled vs simulated, KS tests

Read: each cell's mean read current over the longest pulse at v_in (charge_c / pulse_s, A) at every stored
level is fitted by a polynomial in (stored_v - y0_v), y0_v = VDD/2; the coefficients' mean and covariance
across cells describe the spread. Retention: sigma of ln tau_1e across cells at the decay fit's reference
level. The converter's offset sigma and the read noise come from circuits/mismatch.py (their models are named
in the provenance).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

from gaincell.circuits.mismatch import MC_READ, MC_RETENTION, READ_NOISE, c2p_offset_sigma
from gaincell.design_record import read_design_record
from gaincell.errors import FitError
from gaincell.periphery import C2PDesign
from gaincell.store import list_sweeps, read_sweep
from gaincell.sweep_data import OK, SweepData

DEFAULT_ORDER = 7  # the cell's read current is odd to 7th order (fit rms ~2 nA of 10 uA at 9 levels; order 4: 285 nA)


def has_monte_carlo(path: str | Path) -> bool:
    """Whether a characterization file holds the Monte Carlo sweeps `fit` turns into a variation."""
    return {MC_READ, MC_RETENTION} <= set(list_sweeps(path))


def cell_read_currents(read: SweepData) -> tuple[np.ndarray, np.ndarray]:
    """Stored levels and each complete cell's mean read current there (cells x levels, A) at the sweep's
    longest pulse and highest input; cells with a failed point are left out."""
    charge = read.scalars["charge_c"][:, :, -1, -1]
    ok = np.all(read.status[:, :, -1, -1] == OK, axis=1) & np.all(np.isfinite(charge), axis=1)
    return read.coords["stored_v"], charge[ok] / float(read.coords["pulse_s"][-1])


def fit_read_polynomials(stored_v: np.ndarray, current_a: np.ndarray, y0_v: float, order: int) -> np.ndarray:
    """Least-squares polynomial coefficients of every cell (cells x order+1, A per V^i, ascending powers)."""
    if not 1 <= order < len(stored_v):
        raise FitError(f"a read polynomial of order {order} needs more than {order} stored levels, "
                       f"the Monte Carlo sweep has {len(stored_v)}")
    return np.polynomial.polynomial.polyfit(stored_v - y0_v, current_a.T, order).T


def polynomial_current(coefficients: np.ndarray, stored_v, y0_v: float) -> np.ndarray:
    """Read current (A) of cells with these coefficients (cells x order+1) at stored levels: cells x levels."""
    coefficients = np.atleast_2d(coefficients)
    powers = (np.atleast_1d(np.asarray(stored_v, float)) - y0_v)[:, None] ** np.arange(coefficients.shape[1])
    return coefficients @ powers.T


def cell_retention_taus(retention: SweepData) -> np.ndarray:
    """tau_1e (s) of every cell whose retention run succeeded with a finite, positive time constant."""
    tau = retention.scalars["tau_1e_s"][:, 0]
    ok = (retention.status[:, 0] == OK) & np.isfinite(tau) & (tau > 0)
    return tau[ok]


def variation_figures(path: str | Path, order: int = DEFAULT_ORDER) -> dict:
    """Every figure of the variation component, as plain values (see the module docstring)."""
    read, retention = read_sweep(path, MC_READ), read_sweep(path, MC_RETENTION)
    record = read_design_record(read.attrs, f"sweep {MC_READ!r}")
    design = record.cell
    stored, current = cell_read_currents(read)
    if len(current) < 2:
        raise FitError(f"sweep {MC_READ!r} has {len(current)} complete cells: a spread needs at least 2")
    coefficients = fit_read_polynomials(stored, current, design.zero_v, order)
    taus = cell_retention_taus(retention)
    if len(taus) < 2:
        raise FitError(f"sweep {MC_RETENTION!r} has {len(taus)} cells with a finite retention time: at least 2 needed")
    offset, offset_source = c2p_offset_sigma(design, record.c2p or C2PDesign())
    if READ_NOISE in list_sweeps(path):
        noise_sweep = read_sweep(path, READ_NOISE)
        per_level = noise_sweep.scalars["read_noise_c"][noise_sweep.status == OK]
        noise = float(np.sqrt(np.mean(per_level ** 2)))
        noise_source = (f"rms over {per_level.size} stored levels ({np.min(per_level):.3g}..{np.max(per_level):.3g} C) "
                        f"of sweep {READ_NOISE!r}: {noise_sweep.attrs.get('method', '')}")
    else:
        noise, noise_source = 0.0, f"no sweep {READ_NOISE!r}: read noise not characterized (0)"
    residual = current - polynomial_current(coefficients, stored, design.zero_v)
    mismatch = read.attrs.get("design", "")
    return {
        "y0_v": design.zero_v, "multiply_mean": tuple(float(c) for c in coefficients.mean(axis=0)),
        "multiply_covariance": np.cov(coefficients, rowvar=False), "retention_ln_sigma": float(np.std(np.log(taus),
                                                                                                       ddof=1)),
        "offset_sigma_c": offset, "read_noise_c": noise, "cells": int(len(current)),
        "source": (f"Monte Carlo of {len(current)} cells (sweep {MC_READ!r}: order-{order} polynomial of each cell's "
                   f"mean read current at t_max_s, v_in_v; fit rms {np.sqrt(np.mean(residual ** 2)):.3g} A) and "
                   f"{len(taus)} retention runs (sweep {MC_RETENTION!r}, tau_1e at "
                   f"{retention.coords['stored_v'][0]:.4g} V); mismatch: {_mismatch_source(mismatch)}; C2P offset: "
                   f"{offset_source}; read noise: {noise_source}"),
    }


def _mismatch_source(described: str) -> str:
    try:
        return json.loads(described)["mismatch"]["source"]
    except (ValueError, KeyError, TypeError):
        return "(not recorded)"


def fit_variation(path: str | Path, order: int = DEFAULT_ORDER):
    """The surrogate's `Variation` from a characterization file's Monte Carlo sweeps."""
    from gaincell.surrogate.file import Variation

    return Variation(**variation_figures(path, order))


def sample_cells(mean, covariance, n: int, seed: int = 0) -> np.ndarray:
    """n cells' read-polynomial coefficients drawn from the fitted normal (n x order+1)."""
    return np.random.default_rng(seed).multivariate_normal(np.asarray(mean, float), np.asarray(covariance, float), n)


def compare_with_simulation(path: str | Path, variation, nominal_tau_s: float, samples: int | None = None,
                            seed: int = 0, level_indices: tuple[int, ...] | None = None) -> dict:
    """Simulated cells against cells sampled from `variation`: the read current at three stored levels (by
    default the lowest, middle and highest of `mc_read`) and the retention time (sampled as nominal_tau_s x
    exp(retention_ln_sigma z), as the surrogate applies it). Per quantity: mean and sigma of both sets and the
    two-sample Kolmogorov-Smirnov statistic and p-value."""
    read, retention = read_sweep(path, MC_READ), read_sweep(path, MC_RETENTION)
    stored, current = cell_read_currents(read)
    taus = cell_retention_taus(retention)
    n = samples or len(current)
    drawn = sample_cells(variation.multiply_mean, variation.multiply_covariance, n, seed)
    if level_indices is None:
        level_indices = (0, len(stored) // 2, len(stored) - 1)
    rows = {}
    for k in level_indices:
        sampled = polynomial_current(drawn, stored[k], variation.y0_v)[:, 0]
        rows[f"read_current_a@{stored[k]:.4g}V"] = _row(current[:, k], sampled)
    ln_tau = np.log(nominal_tau_s) + variation.retention_ln_sigma * np.random.default_rng(seed + 1).standard_normal(n)
    rows["tau_1e_s"] = _row(taus, np.exp(ln_tau))
    return rows


def _row(simulated: np.ndarray, sampled: np.ndarray) -> dict:
    """Both distributions compared as they are and centred on their own means (the spread's shape alone: a
    read polynomial's fit error at one level shifts the sampled mean without changing the spread)."""
    test = stats.ks_2samp(simulated, sampled)
    centred = stats.ks_2samp(simulated - np.mean(simulated), sampled - np.mean(sampled))
    return {"simulated_mean": float(np.mean(simulated)), "simulated_sigma": float(np.std(simulated, ddof=1)),
            "sampled_mean": float(np.mean(sampled)), "sampled_sigma": float(np.std(sampled, ddof=1)),
            "ks_statistic": float(test.statistic), "ks_p": float(test.pvalue), "ks_p_centred": float(centred.pvalue),
            "n_simulated": int(simulated.size), "n_sampled": int(sampled.size)}


def format_comparison(rows: dict) -> str:
    """The comparison as a text table."""
    lines = [f"{'quantity':26s} {'sim mean':>11s} {'sim sigma':>11s} {'fit mean':>11s} {'fit sigma':>11s} "
             f"{'KS D':>6s} {'KS p':>7s} {'centred p':>9s}"]
    for name, r in rows.items():
        lines.append(f"{name:26s} {r['simulated_mean']:11.4g} {r['simulated_sigma']:11.4g} {r['sampled_mean']:11.4g} "
                     f"{r['sampled_sigma']:11.4g} {r['ks_statistic']:6.3f} {r['ks_p']:7.3g} {r['ks_p_centred']:9.3g}")
    return "\n".join(lines)

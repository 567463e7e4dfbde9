"""The surrogate file's optional `variation` group (schema version 3) and the `Variation` figures it holds."""
import dataclasses

from pathlib import Path

import h5py
import numpy as np
import pytest

from gaincell.errors import SurrogateError
from gaincell.resources import data_path
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import SCHEMA_VERSION, Surrogate
from gaincell.surrogate.variation import Variation

REFERENCE = data_path("paper_reference.h5")
SCHEMA_1 = Path(__file__).parent / "golden" / "surrogate_schema1.h5"  # as the paper reference was shipped
MEAN = (5.2e-7, 1.36e-5, -2.6e-6, 4.6e-5)  # A per V^i, near the paper cell's cubic


def example_variation(**changes) -> Variation:
    """A made-up spread (correlated coefficients) for tests; not a fitted one."""
    sigma = np.array([0.3e-6, 1.2e-6, 0.8e-6, 3e-6])
    correlation = np.array([[1, 0.5, 0, 0], [0.5, 1, 0.2, 0], [0, 0.2, 1, -0.3], [0, 0, -0.3, 1]])
    values = dict(y0_v=0.45, multiply_mean=MEAN, multiply_covariance=correlation * np.outer(sigma, sigma),
                  retention_ln_sigma=0.3, offset_sigma_c=2e-15, read_noise_c=1e-15, cells=200,
                  source="tests: made-up figures")
    return Variation(**(values | changes))


def test_a_variation_round_trips_through_the_file(tmp_path):
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation()
    path = surrogate.save(tmp_path / "varied.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 4 and "variation" in f
    loaded = Surrogate.load(path)
    assert loaded.variation == surrogate.variation and "variation" not in loaded.components
    assert loaded.variation.multiply_covariance.shape == (4, 4) and loaded.variation.cells == 200
    assert CellModel.from_surrogate(loaded).variation is not None


def test_files_without_a_variation_load_with_none(tmp_path):
    old = Surrogate.load(SCHEMA_1)  # the paper reference as shipped until schema 4
    with h5py.File(SCHEMA_1, "r") as f:
        assert f.attrs["schema_version"] < 3  # version 1
    assert old.variation is None and CellModel.from_surrogate(old).variation is None
    resaved = Surrogate.load(old.save(tmp_path / "plain.h5"))
    assert resaved.variation is None and set(resaved.components) == set(old.components)


@pytest.mark.parametrize("change,message", [
    (dict(multiply_covariance=np.eye(3) * 1e-12), r"\(4, 4\) matrix"),
    (dict(multiply_covariance=np.array([[1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) * 1e-12), "symmetric"),
    (dict(multiply_covariance=np.diag([1, -1, 1, 1]) * 1e-12), "positive semi-definite"),
    (dict(multiply_covariance=np.full((4, 4), np.nan)), "finite"),
    (dict(retention_ln_sigma=-0.1), "retention_ln_sigma"),
    (dict(offset_sigma_c=float("inf")), "offset_sigma_c"),
    (dict(read_noise_c=1.0), "read_noise_c"),
    (dict(cells=0), "cells"),
    (dict(multiply_mean=()), "multiply_mean"),
    (dict(y0_v=float("nan")), "y0_v"),
])
def test_bad_variations_are_refused_naming_the_field(change, message):
    with pytest.raises(SurrogateError, match=message):
        example_variation(**change)


def test_a_damaged_variation_group_is_refused(tmp_path):
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation()
    path = surrogate.save(tmp_path / "varied.h5")
    with h5py.File(path, "a") as f:
        del f["variation/multiply_covariance"]
    with pytest.raises(SurrogateError, match="variation group lacks"):
        Surrogate.load(path)
    path = surrogate.save(tmp_path / "varied2.h5")
    with h5py.File(path, "a") as f:
        f["variation"].attrs["retention_ln_sigma"] = -1.0
    with pytest.raises(SurrogateError, match="varied2.h5.*retention_ln_sigma"):
        Surrogate.load(path)


def test_recentring_keeps_the_polynomials():
    variation = example_variation()
    mean, covariance = variation.recentred(0.3)
    stored = np.linspace(0, 0.9, 7)
    np.testing.assert_allclose(np.polyval(mean[::-1], stored - 0.3), np.polyval(MEAN[::-1], stored - 0.45), rtol=1e-12)
    # a linear map of the coefficients: the variance of the value at any stored level is the same either way
    old = np.vander(stored - 0.45, 4, increasing=True)
    new = np.vander(stored - 0.3, 4, increasing=True)
    np.testing.assert_allclose(np.einsum("pi,ij,pj->p", new, covariance, new),
                               np.einsum("pi,ij,pj->p", old, variation.multiply_covariance, old), rtol=1e-9)


def test_the_layer_units_follow_the_cell_model():
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation(y0_v=0.4)
    cell = CellModel.from_surrogate(surrogate)
    factor = cell.variation.multiply_factor
    per_q_sat = cell.t_max_s / surrogate["c2p"].param("q_sat_c")
    covariance = surrogate.variation.recentred(cell.y0_v)[1] * per_q_sat ** 2
    np.testing.assert_allclose(factor @ factor.T, covariance, rtol=1e-9, atol=1e-12 * np.abs(covariance).max())
    assert cell.variation.offset_sigma == pytest.approx(2e-15 / 1.2e-12)
    assert cell.variation.retention_beta == pytest.approx(1.0, abs=1e-6)  # exponential decay
    assert dataclasses.replace(cell, variation=None) == cell  # the variation takes no part in equality

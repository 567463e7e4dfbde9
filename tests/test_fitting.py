"""Fitting and the surrogate file: the paper's coefficients, round trips, clear errors, held-out accuracy."""
import shutil
import h5py
import numpy as np
import pytest

from gaincell.circuits.characterize import characterize
from gaincell.compact import decay_factor, evaluate, tau_1e
from gaincell.design import load_design
from gaincell.errors import ConfigError, SurrogateError
from gaincell.fitting.fit import fit_characterization
from gaincell.fitting.reference import fit_reference
from gaincell.paper import PAPER_CUBIC_UA
from gaincell.fitting.validate import validate_cell
from gaincell.periphery import Grid
from gaincell.resources import data_path
from gaincell.surrogate.file import SCHEMA_VERSION, Surrogate


@pytest.fixture(scope="module")
def reference(shared_dir):
    return fit_reference(shared_dir / "reference/gaincellattention/gaincell_iv_spice.npz")


def test_paper_cubic_is_reproduced_to_1e_4(reference):
    cubic = reference["multiply"]
    fitted_ua = [cubic.param(f"c{i}0") * 1e6 for i in range(4)]
    np.testing.assert_allclose(fitted_ua, PAPER_CUBIC_UA, rtol=1e-4)
    assert cubic.residuals["rms"] == pytest.approx(0.13e-6, abs=0.01e-6)  # the paper: RMS 0.13 uA
    assert reference["multiply_2d"].residuals["rms_rel_full_scale"] < 0.05  # stated in the file and docs/fitting.md


def test_shipped_reference_surrogate_matches_a_fresh_fit(reference):
    shipped = Surrogate.load(data_path("paper_reference.h5"))
    # The shipped file must be this fit of this data: a change to the model, the data or the fit settings moves
    # the coefficients by far more than 1e-6, while another CPU, BLAS or numpy/scipy moves them ~1e-12 (the
    # fit stops within its own tolerance, 1.5e-8 relative), so 1e-6 separates the two.
    np.testing.assert_allclose(shipped["multiply"].values, reference["multiply"].values, rtol=1e-6, atol=0)
    charge = shipped.evaluate("multiply", stored_v=np.array([0.45, 0.9]), pulse_s=15e-9, vin_v=0.9)
    assert charge[0] == pytest.approx(15e-9 * 0.52136e-6, rel=1e-4)


def test_round_trip_is_exact(reference, tmp_path):
    path = reference.save(tmp_path / "s.h5")
    again = Surrogate.load(path)
    assert again.components.keys() == reference.components.keys()
    for name, part in reference.components.items():
        other = again[name]
        assert other.model_id == part.model_id and other.param_names == part.param_names
        np.testing.assert_array_equal(other.values, part.values)
        np.testing.assert_array_equal(other.stderr, part.stderr)
        np.testing.assert_array_equal(other.covariance, part.covariance)
        assert other.config == part.config and other.validity == part.validity


def _copy(tmp_path):
    target = tmp_path / "s.h5"
    shutil.copy(data_path("paper_reference.h5"), target)
    return target


def test_truncated_file_is_refused(tmp_path):
    path = _copy(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SurrogateError, match="truncated or corrupted"):
        Surrogate.load(path)


def test_wrong_version_missing_component_and_nan_are_refused(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SurrogateError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Surrogate.load(path)
    path = _copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["decay"]
    with pytest.raises(SurrogateError, match="missing component.*decay"):
        Surrogate.load(path)
    path = _copy(tmp_path)
    with h5py.File(path, "a") as f:
        f["multiply/values"][1] = np.nan
    with pytest.raises(SurrogateError, match="non-finite parameter.*c10"):
        Surrogate.load(path)
    with pytest.raises(SurrogateError, match="does not exist"):
        Surrogate.load(tmp_path / "nothing.h5")


def test_models_evaluate_from_ids():
    params = {"rate_v_per_s": 80.0, "vt_v": 0.025, "dibl_per_v": 0.0}
    config = {"hold_v": 0.0, "ref_v": 0.45}
    v = evaluate("decay/subthreshold-leakage", config, params, t_s=np.array([0.0, 1e-3, 1.0]), stored_v=0.45)
    assert v[0] == pytest.approx(0.45) and v[1] == pytest.approx(0.45 - 0.08, abs=2e-3) and v[2] < 1e-6
    # closed form without the drain-induced term: x(t) = vt ln(1 + (e^{x0/vt} - 1) e^{-a t / vt})
    t = np.linspace(0, 8e-3, 9)
    exact = 0.025 * np.log1p(np.expm1(0.45 / 0.025) * np.exp(-80.0 * t / 0.025))
    got = evaluate("decay/subthreshold-leakage", config, params, t_s=t, stored_v=np.full(t.size, 0.45))
    np.testing.assert_allclose(got, exact, atol=2e-5)
    tau = tau_1e("decay/subthreshold-leakage", config, params)
    assert decay_factor("decay/subthreshold-leakage", config, params, np.array([tau]))[0] == pytest.approx(np.exp(-1))
    assert evaluate("c2p/clipped-linear", {}, {"q_sat_c": 1.0, "offset_c": 0.0, "t_max_s": 15e-9},
                    q_c=np.array([-1.0, 0.5, 2.0])).tolist() == [0.0, 7.5e-9, 15e-9]


@pytest.mark.slow
def test_default_cell_surrogate_meets_its_targets(tmp_path):
    design = load_design("cmos-generic")
    char = tmp_path / "char.h5"
    characterize(design, char, Grid(retention_stop_s=20e-3), workers=2, progress=False)
    surrogate, _ = fit_characterization(char)
    path = surrogate.save(tmp_path / "surrogate.h5")
    surrogate = Surrogate.load(path)
    assert surrogate.source_sha256 and surrogate.design == design
    report = validate_cell(surrogate, design, tmp_path / "validation.h5", counts=(6, 4, 3), seed=1, workers=2,
                           progress=False)
    assert report.n_points == 72
    assert report.rms_rel_full_scale <= 0.01  # held-out points, relative to full scale
    decay = surrogate["decay"].residuals
    # one model fitted to the four retention levels at once: its 1/e time at the reference level agrees with
    # the raw curve's to 0.5 %, its RMS over all curves is a few mV (measured 0.3 % and 2.1 mV, see docs/fitting.md)
    assert decay["tau_1e_s"] == pytest.approx(decay["raw_tau_1e_s"], rel=5e-3)
    assert decay["rms"] < 3e-3  # volts
    assert 1e-3 < decay["tau_1e_s"] < 20e-3
    with pytest.raises(ConfigError, match="fitted to design 'cmos-generic', which differs"):
        validate_cell(surrogate, load_design("igzo-generic"), tmp_path / "v2.h5", progress=False)


def test_the_multiply_orders_are_capped_by_the_swept_levels():
    """Three input amplitudes cannot carry a cubic in V_in: the fit uses vin_order 2 (a cubic through three
    levels would interpolate them and swing between them) and still reproduces a surface of that order."""
    from gaincell.design import PRESETS
    from gaincell.fitting.fit import fit_multiply
    from gaincell.sweep_data import OK, SweepData

    design = PRESETS["cmos-generic"]
    stored, pulse, vin = np.linspace(0, 0.9, 8), np.array([5e-9, 15e-9]), np.array([0.45, 0.675, 0.9])
    s, p, v = np.meshgrid(stored, pulse, vin, indexing="ij")
    y = s - design.zero_v
    charge = p * (2e-5 * y + 4e-6 * y**3) * (1 + 0.5 * (v - 0.9) - 0.3 * (v - 0.9) ** 2)
    read = SweepData("read", {"stored_v": stored, "pulse_s": pulse, "vin_v": vin}, scalars={"charge_c": charge},
                     status=np.full(s.shape, OK, np.int8))
    outcome = fit_multiply(read, design)
    assert (outcome.component.config["order"], outcome.component.config["vin_order"]) == (5, 2)
    assert outcome.component.residuals["rms_rel_full_scale"] < 1e-6

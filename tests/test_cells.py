"""The gain cells on real ngspice runs: signed read, linearity in pulse width, retention, write accuracy."""
import numpy as np
import pytest

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead, CellRetention, CellWrite, cell_subcircuits
from gaincell.circuits.characterize import WRITE_ERROR_BOUND_V, zero_crossing
from gaincell.design import load_design

CMOS, IGZO = load_design("cmos-generic"), load_design("igzo-generic")


@pytest.fixture(scope="module")
def read_surface(tmp_path_factory):
    out = tmp_path_factory.mktemp("read") / "read.h5"
    sweep = Sweep("read", CellRead(CMOS), {"stored_v": np.linspace(0, 0.9, 10),
                                          "pulse_s": np.linspace(1e-9, 15e-9, 8), "vin_v": [0.9]})
    return run_sweep(sweep, out, workers=2, progress=False).data


def test_signed_cell_current_changes_sign_near_half_vdd(read_surface):
    current = read_surface.scalars["i_mid_a"][:, -1, 0]
    assert current[0] < -5e-6 and current[-1] > 5e-6  # about +-10 uA at the ends
    assert np.all(np.diff(current) > 0)  # monotonic in the stored voltage
    crossing = zero_crossing(read_surface.coords["stored_v"], current)
    assert abs(crossing - 0.45) <= 0.1


@pytest.mark.parametrize("k", [1, 8])  # stored 0.1 V and 0.8 V
def test_charge_is_linear_in_pulse_width(read_surface, k):
    pulses = read_surface.coords["pulse_s"]
    charge = read_surface.scalars["charge_c"][k, :, 0]
    slope, intercept = np.polyfit(pulses, charge, 1)
    r2 = 1 - np.sum((charge - slope * pulses - intercept) ** 2) / np.sum((charge - charge.mean()) ** 2)
    assert r2 > 0.999
    assert np.sign(slope) == np.sign(read_surface.coords["stored_v"][k] - 0.45)


def test_read_energy_is_positive_and_grows_with_current(read_surface):
    energy = read_surface.scalars["e_read_j"][:, -1, 0]
    assert np.all(energy > 0)
    assert energy[0] > 10 * energy[4] and energy[-1] > 10 * energy[4]  # ~0 current near 0.45 V


@pytest.mark.parametrize("design", [CMOS, IGZO], ids=lambda d: d.name)
def test_each_dac_level_is_written_within_the_documented_error(design, tmp_path):
    data = run_sweep(Sweep("write", CellWrite(design), {"level_v": design.dac_voltages}), tmp_path / "w.h5",
                     workers=2, progress=False).data
    errors = data.scalars["error_v"]
    assert np.all(np.abs(errors) <= WRITE_ERROR_BOUND_V), errors
    assert np.all(data.scalars["e_write_j"] > 0)


def test_retention_decays_monotonically_and_the_osfet_cell_retains_100x_longer(tmp_path):
    taus = {}
    for design in (CMOS, IGZO):
        data = run_sweep(Sweep("ret", CellRetention(design, stop_s=20e-3), {"stored_v": [0.7]}),
                         tmp_path / f"{design.name}.h5", workers=1, progress=False).data
        wave = data.point((0,))
        assert np.all(np.diff(wave["v(sn)"]) <= 1e-9), "the stored voltage rises somewhere"
        assert wave["v(sn)"][-1] < 0.7
        taus[design.name] = float(data.scalars["tau_1e_s"][0])
    assert 1e-3 < taus["cmos-generic"] < 20e-3  # silicon: milliseconds, as the paper's 5 ms
    assert taus["igzo-generic"] >= 100 * taus["cmos-generic"]


def test_model_names_can_be_mapped_onto_a_user_pdk():
    import dataclasses

    renamed = dataclasses.replace(CMOS, model_names=(("nmos_gen", "nch_lvt"), ("pmos_gen", "pch")))
    text = cell_subcircuits(renamed)
    assert " nch_lvt " in text and " pch " in text
    assert " nmos_gen " not in text and " nmos_gen_hvt " in text  # only whole names are replaced

"""The charge-to-pulse converters (netlists/c2p.sub) on real ngspice runs: clipped-linear transfer, a charge
below threshold reported as never fired, the signed readout's counter, and the fit into the surrogate form."""
import numpy as np
import pytest

from gaincell.circuits.c2p import c2p_sweeps, counter_value, never_fired
from gaincell.periphery import C2PDesign
from gaincell.circuits.sweep import run_sweep
from gaincell.design import load_design
from gaincell.errors import ConfigError
from gaincell.fitting.fit import fit_c2p

DESIGN = load_design("cmos-generic")
T_MAX = DESIGN.t_max_s


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    out = tmp_path_factory.mktemp("c2p") / "c2p.h5"
    return [run_sweep(sweep, out, workers=2, progress=False).data for sweep in c2p_sweeps(DESIGN, points=13)]


@pytest.mark.slow
def test_transfer_is_a_clipped_line_and_silent_conversions_are_reported(sweeps):
    unsigned, signed = sweeps
    charge, width, fired = unsigned.coords["charge_c"], unsigned.scalars["width_s"], unsigned.scalars["fired"]
    assert np.all(unsigned.status == 1) and np.all(np.diff(width) >= -1e-12)
    assert np.all(width[charge <= 0] < 1e-3 * T_MAX) and np.all(fired[charge <= 0] == 0)
    assert width.max() == pytest.approx(T_MAX, rel=0.01)  # saturates at the window
    message = never_fired(charge, fired)
    assert message.startswith(f"{int(np.sum(charge <= 0))} of 13 conversions never fired")
    q_sat = C2PDesign().iref_a * T_MAX  # iref x T_max by design
    ramp = (width > 0.1 * T_MAX) & (width < 0.9 * T_MAX)
    np.testing.assert_allclose(width[ramp], T_MAX * charge[ramp] / q_sat, atol=0.02 * T_MAX)
    # signed: the sign follows the charge, the counter counts T_max / 15 periods, both ends saturate
    s = signed.scalars
    q = signed.coords["charge_c"]
    assert np.all(s["sign"][np.abs(q) > 0.05 * q.max()] == np.sign(q[np.abs(q) > 0.05 * q.max()]))
    assert s["count"].max() == 15 and s["count"][0] == 15 and s["count"][np.argmin(np.abs(q))] == 0
    assert counter_value(7.4e-9, T_MAX, 16) == 7 and counter_value(30e-9, T_MAX, 16) == 15


@pytest.mark.slow
def test_fit_gives_the_converter_its_saturation_charges_and_energies(sweeps):
    outcome, energy, timing = fit_c2p(*sweeps)
    part = outcome.component
    assert part.model_id == "c2p/clipped-linear"
    assert part.param("q_sat_c") == pytest.approx(80e-6 * T_MAX, rel=0.02)  # iref 80 uA
    assert part.config["output_full_scale_c"] == pytest.approx(40e-6 * T_MAX, rel=0.02)
    assert part.config["output_full_scale_negative_c"] == pytest.approx(part.config["output_full_scale_c"], rel=0.02)
    assert part.residuals["rms_rel_full_scale"] < 0.01
    assert 0.1e-12 < energy["e_c2p_conversion_j"] < 5e-12 and energy["e_c2p_signed_conversion_j"] > 0
    assert timing["t_c2p_conversion_s"] == pytest.approx(C2PDesign().gap_s + T_MAX)


def test_bad_converter_settings_are_refused():
    with pytest.raises(ConfigError, match="cint_f: must be a number between"):
        C2PDesign(cint_f=0.0)
    with pytest.raises(ConfigError, match="counter_levels: must be an integer"):
        C2PDesign(counter_levels=1)

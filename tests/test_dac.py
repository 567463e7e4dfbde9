"""The write DAC (netlists/dac.sub, circuits/dac.py) on real ngspice runs: every level-to-level conversion
settles within the write pulse and leaves the cell on its level, its energy is the string's static share plus
charging the line, a too-weak string is caught (and refused by the fit), bad settings are refused."""
import dataclasses

import numpy as np
import pytest

from gaincell.circuits.characterize import WRITE_ERROR_BOUND_V
from gaincell.circuits.dac import DacConversion, dac_sweep
from gaincell.periphery import DacDesign
from gaincell.circuits.sweep import Sweep, run_sweep
from gaincell.design import load_design
from gaincell.errors import ConfigError, GaincellError
from gaincell.fitting.fit import fit_dac

DESIGN = load_design("cmos-generic")


@pytest.fixture(scope="module")
def conversions(tmp_path_factory):
    return run_sweep(dac_sweep(DESIGN), tmp_path_factory.mktemp("dac") / "dac.h5", workers=2, progress=False).data


@pytest.mark.slow
def test_every_conversion_settles_and_writes_its_level(conversions):
    s, levels = conversions.scalars, DESIGN.dac_levels
    assert conversions.status.shape == (levels, levels) and np.all(conversions.status == 1)
    assert np.all(s["settle_s"] < 0.8 * DESIGN.write_time_s)
    assert np.all(np.abs(s["error_v"]) < WRITE_ERROR_BOUND_V)
    # energy: the string's static current during the write (this DAC's share) plus charging the line
    dac = DacDesign()
    static = DESIGN.vdd_v**2 / dac.r_string_ohm / dac.dacs_per_string * DESIGN.write_time_s
    energy = s["e_conversion_j"]
    assert static < energy.mean() < 2 * static
    assert energy[0, -1] > energy[-1, -1] + 2e-15  # charging the line from 0 to VDD costs; staying does not
    figures, timing = fit_dac(conversions)
    assert figures["e_dac_write_j"] == pytest.approx(energy.mean()) and figures["e_dac_write_j:stderr"] > 0
    assert timing["t_dac_settle_s"] == pytest.approx(s["settle_s"].max())


@pytest.mark.slow
def test_a_string_too_weak_for_the_line_does_not_settle(tmp_path):
    weak = DacConversion(DESIGN, dac=DacDesign(r_string_ohm=2e6))
    middle = DESIGN.dac_levels // 2  # the tap farthest from both ends of the string: the slowest
    data = run_sweep(Sweep("weak", weak, {"from_level": [0], "to_level": [middle]}), tmp_path / "w.h5",
                     workers=1, progress=False).data
    assert data.status.item() == 1
    assert data.scalars["settle_s"].item() > 0.95 * DESIGN.write_time_s  # still moving when the word line fell
    assert abs(data.scalars["error_v"].item()) > WRITE_ERROR_BOUND_V
    with pytest.raises(GaincellError, match="does not settle within the write pulse"):
        fit_dac(data)


def test_bad_dac_settings_are_refused():
    with pytest.raises(ConfigError, match="r_string_ohm: must be a number between"):
        DacDesign(r_string_ohm=0.0)
    with pytest.raises(ConfigError, match=r"load_cells: must be an integer in \[1, 4096\]"):
        DacDesign(load_cells=0)
    with pytest.raises(ConfigError, match=r"dacs_per_string: must be an integer"):
        DacDesign(dacs_per_string=True)
    with pytest.raises(ConfigError, match=r"to_level: must be a level index, an integer in \[0, 7\]"):
        DacConversion(DESIGN).instance_params({"from_level": 0.0, "to_level": 8.0})
    with pytest.raises(ConfigError, match="dac_levels: the DAC testbench builds one gate per level: at most 64"):
        DacConversion(dataclasses.replace(DESIGN, dac_levels=128))
    wide = dac_sweep(dataclasses.replace(DESIGN, dac_levels=32))  # transitions between 16 evenly spread levels
    assert wide.grid["to_level"][0] == 0 and wide.grid["to_level"][-1] == 31 and len(wide.grid["to_level"]) == 16

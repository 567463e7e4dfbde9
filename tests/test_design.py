"""Design presets and files: validation names the field; TOML and YAML load."""
import dataclasses

import pytest

from gaincell.design import PRESETS, Device, load_design
from gaincell.errors import ConfigError


def test_presets_cite_their_source():
    assert set(PRESETS) >= {"cmos-generic", "igzo-generic"}
    for design in PRESETS.values():
        assert design.source and design.dac_voltages[0] == 0 and design.dac_voltages[-1] == design.vdd_v


def test_toml_overrides_a_preset(tmp_path):
    path = tmp_path / "cell.toml"
    path.write_text('base = "igzo-generic"\nname = "mine"\ncs_f = 5e-15\n[read_n]\nw_m = 120e-9\nl_m = 1e-6\n')
    design = load_design(path)
    assert design.name == "mine" and design.cs_f == 5e-15 and design.read_n.w_m == 120e-9
    assert design.cell_subckt == "gcsigned_igzo"


def test_yaml_design(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("name: y\nvdd_v: 1.0\nv_in_v: 1.0\n")
    assert load_design(path).vdd_v == 1.0


def test_user_pdk_library_path(tmp_path):
    lib = tmp_path / "pdk" / "models.lib"
    lib.parent.mkdir()
    lib.write_text("* my PDK\n.model nch nmos level=54\n")
    path = tmp_path / "cell.toml"
    path.write_text('name = "pdk"\nmodel_libraries = ["pdk/models.lib"]\ncorner = "tt"\n'
                    '[model_names]\nnmos_gen = "nch"\n')
    design = load_design(path)
    assert design.library_path(design.model_libraries[0]) == lib.resolve()
    assert design.model_names == (("nmos_gen", "nch"),) and design.corner == "tt"


def test_library_next_to_the_design_file(tmp_path):
    (tmp_path / "models.lib").write_text("* my PDK\n.model nch nmos level=54\n")
    path = tmp_path / "cell.yaml"
    path.write_text("name: pdk\nmodel_libraries: [./models.lib, cmos_generic.lib]\n")
    design = load_design(path)
    assert design.library_path(design.model_libraries[0]) == (tmp_path / "models.lib").resolve()
    path.write_text("name: pdk\nmodel_libraries: [models.lib]\n")
    with pytest.raises(ConfigError, match="neither a shipped library"):
        load_design(path)


@pytest.mark.parametrize("content, field", [
    ("[write]\nw_m = -1e-7\nl_m = 4e-8\n", "write.w_m"),
    ("vdd_v = 12.0\n", "vdd_v"),
    ("cs_f = -3e-15\n", "cs_f"),
    ('cell_subckt = "gcfancy"\n', "cell_subckt"),
    ('model_libraries = ["nowhere.lib"]\n', "model_libraries[0]"),
    ("size = 3\n", "size"),
    ('base = "tsmc"\n', "base"),
])
def test_invalid_values_name_the_field(tmp_path, content, field):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_design(path)
    assert info.value.parameter == field


def test_unknown_preset():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_design("tsmc28")


CMOS_GENERIC = PRESETS["cmos-generic"]


@pytest.mark.parametrize("changes, field", [
    ({"name": "cell\n.control"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "a b"}, "name"),
    ({"name": 7}, "name"),
    ({"corner": "tt\n*#shell ls"}, "corner"),
    ({"corner": ".control"}, "corner"),
    ({"model_names": (("nmos_gen", "nch\n.endc"),)}, "model_names.nmos_gen"),
    ({"model_names": (("nmos_gen", "a"), ("nmos_gen", "b"))}, "model_names"),
    ({"model_names": (("nch", "nmos_gen"),)}, "model_names"),
    ({"model_names": "nch"}, "model_names"),
    ({"source": "a paper\nshell ls"}, "source"),
    ({"source": None}, "source"),
    ({"model_libraries": "cmos_generic.lib"}, "model_libraries"),
    ({"model_libraries": ("cmos_generic.lib\n.control",)}, "model_libraries[0]"),
    ({"model_libraries": ("/tmp/x\0.lib",)}, "model_libraries[0]"),
    ({"vdd_v": True}, "vdd_v"),
    ({"cs_f": float("nan")}, "cs_f"),
    ({"t_max_s": float("inf")}, "t_max_s"),
    ({"dac_levels": True}, "dac_levels"),
    ({"dac_levels": 8.0}, "dac_levels"),
])
def test_construction_refuses_values_that_could_reach_a_netlist_badly(changes, field):
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(CMOS_GENERIC, **changes)
    assert info.value.parameter == field


def test_devices_refuse_bools_and_nan():
    with pytest.raises(ConfigError, match="write.w_m"):
        dataclasses.replace(CMOS_GENERIC, write=Device(True, 40e-9))
    with pytest.raises(ConfigError, match="read_p.l_m"):
        dataclasses.replace(CMOS_GENERIC, read_p=Device(150e-9, float("nan")))


def test_lists_are_stored_as_tuples_and_good_names_pass():
    design = dataclasses.replace(CMOS_GENERIC, model_libraries=["cmos_generic.lib"], corner="tt_1p0v-3.x",
                                 name="my_system", model_names=[["nmos_gen", "sky130_fd_pr__nfet_01v8"]])
    assert design.model_libraries == ("cmos_generic.lib",)
    assert design.model_names == (("nmos_gen", "sky130_fd_pr__nfet_01v8"),)
    hash(design)


def test_error_messages_stay_short_for_huge_values():
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(CMOS_GENERIC, name="x\n" * 100_000)
    assert "SPICE name" in str(info.value) and len(str(info.value)) < 1000

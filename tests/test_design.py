"""Design presets and files: validation names the field; TOML and YAML load."""
import pytest

from gaincell.design import PRESETS, load_design
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
    lib.write_text("* my PDK\n")
    path = tmp_path / "cell.toml"
    path.write_text('name = "pdk"\nmodel_libraries = ["pdk/models.lib"]\ncorner = "tt"\n'
                    '[model_names]\nnmos_gen = "nch"\n')
    design = load_design(path)
    assert design.library_path(design.model_libraries[0]) == lib.resolve()
    assert design.model_names == (("nmos_gen", "nch"),) and design.corner == "tt"


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

"""One design object from file to layer: the record in sweep files and surrogates, old files, validate."""
import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from gaincell.circuits.cells import CellWrite
from gaincell.circuits.sweep import Sweep, run_sweep
from gaincell.compact import EXPONENTIAL, POLY, poly_name, poly_terms
from gaincell.design import PRESETS, CellDesign, load_setup
from gaincell.design_record import DESIGN_RECORD, DesignRecord, design_record, read_design_record
from gaincell.errors import ConfigError
from gaincell.fields import field_help
from gaincell.fitting.fit import c2p_paper_default, figures, sweep_design
from gaincell.fitting.reference import PAPER_REFERENCE
from gaincell.fitting.validate import validate_cell
from gaincell.periphery import C2PDesign, DacDesign, Grid
from gaincell.resources import data_path
from gaincell.store import read_sweep
from gaincell.surrogate.file import Component, Surrogate

# a design that differs from its preset in a device, a number, a rename and its source
CUSTOM = dataclasses.replace(PRESETS["cmos-generic"], name="custom-cell", cs_f=4e-15,
                             read_n=dataclasses.replace(PRESETS["cmos-generic"].read_n, w_m=120e-9),
                             model_names=(("nmos_gen", "nmos_gen"),), source="a test design")
SCHEMA_1 = Path(__file__).parent / "golden" / "surrogate_schema1.h5"  # as the paper reference was shipped


def surrogate_of(design: CellDesign) -> Surrogate:
    terms = poly_terms(3, 0)
    multiply = Component(POLY, [poly_name(i, j) for i, j in terms], [0.0, 2e-5, 0.0, 1e-5],
                         config={"order": 3, "vin_order": 0, "y0_v": design.zero_v, "vin0_v": 0.0},
                         validity={"stored_v": [0.0, design.vdd_v], "pulse_s": [0.0, design.t_max_s],
                                   "vin_v": [design.v_in_v, design.v_in_v]})
    decay = Component(EXPONENTIAL, ["tau_s"], [5e-3], config={"hold_v": 0.0, "ref_v": design.zero_v})
    return Surrogate({"multiply": multiply, "decay": decay, "c2p": c2p_paper_default(design.t_max_s),
                      "energy": figures({"e_read_cell_j": 1e-15}), "timing": figures({"t_max_s": design.t_max_s})},
                     design)


def test_the_design_round_trips_through_a_sweep_file_and_a_surrogate_as_the_same_dataclass(tmp_path):
    run_sweep(Sweep("write", CellWrite(CUSTOM), {"level_v": [0.45]}), tmp_path / "char.h5", workers=1,
              progress=False)
    record = sweep_design(read_sweep(tmp_path / "char.h5", "write"))
    assert record == DesignRecord(CUSTOM) and type(record.cell) is CellDesign
    path = surrogate_of(record.cell).save(tmp_path / "surrogate.h5")
    loaded = Surrogate.load(path)
    assert loaded.design == CUSTOM and type(loaded.design) is CellDesign
    with h5py.File(path) as f:
        assert json.loads(f.attrs[DESIGN_RECORD])["schema_version"] == 2 and "design" not in f.attrs


def test_periphery_designs_travel_in_the_record_and_load_from_the_design_file(tmp_path):
    c2p, dac = C2PDesign(cint_f=3e-12), DacDesign(r_string_ohm=2e3)
    record = read_design_record({DESIGN_RECORD: design_record(CUSTOM, c2p, dac)}, "test")
    assert record == DesignRecord(CUSTOM, c2p, dac)
    path = tmp_path / "cell.toml"
    path.write_text('name = "t"\ncs_f = 5e-15\n[c2p]\ncint_f = 2e-12\n[dac]\nload_cells = 32\n'
                    '[grid]\npulse_levels = 3\nretention_levels = [0.5, 1.0]\n')
    setup = load_setup(path)
    assert setup.cell.cs_f == 5e-15 and setup.c2p == C2PDesign(cint_f=2e-12) and setup.dac == DacDesign(load_cells=32)
    assert setup.grid == Grid(pulse_levels=3, retention_levels=(0.5, 1.0))
    path.write_text('name = "t"\n[c2p]\ncint_f = 0.0\n')
    with pytest.raises(ConfigError, match=r"^c2p\.cint_f: must be a number between 1e-18 and 1e-06 F, got 0\.0"):
        load_setup(path)
    path.write_text('name = "t"\n[grid]\nstored_level = 3\n')
    with pytest.raises(ConfigError, match=r"grid\.stored_level: is not a field of \[grid\]"):
        load_setup(path)


def test_one_field_helper_gives_help_text_and_error_messages():
    lines = field_help(CellDesign)
    assert "cs_f: storage capacitance (F, 1e-18 .. 1e-09)" in lines
    assert "v_in_v: read input (pulse) amplitude (V, 0 .. vdd_v)" in lines
    assert "write.w_m: channel width (m, 1e-09 .. 0.001)" in lines
    with pytest.raises(ConfigError, match=r"^v_in_v: must be a number between 0 and 0.9 V, got 1.2$"):
        dataclasses.replace(PRESETS["cmos-generic"], v_in_v=1.2)
    with pytest.raises(ConfigError, match=r"^dac_levels: must be an integer in \[2, 1024\], got 1$"):
        dataclasses.replace(PRESETS["cmos-generic"], dac_levels=1)


def test_files_written_before_the_record_still_load(tmp_path):
    # the paper-reference surrogate as shipped until schema 4, a schema-1 file: its design is a JSON attribute
    with h5py.File(SCHEMA_1) as f:
        assert f.attrs["schema_version"] == 1 and DESIGN_RECORD not in f.attrs
    assert Surrogate.load(SCHEMA_1).design == PAPER_REFERENCE
    # a schema-1 surrogate of a characterized cell: every field of the CellDesign of its time
    path = surrogate_of(CUSTOM).save(tmp_path / "old.h5")
    with h5py.File(path, "a") as f:
        del f.attrs[DESIGN_RECORD], f["hardware"]
        f.attrs["schema_version"] = 1
        f.attrs["design"] = json.dumps(CUSTOM.to_dict())
    assert Surrogate.load(path).design == CUSTOM
    # a sweep group of the time: the testbench description holds the design and its converter
    old_sweep = {"testbench": "C2PTransfer", "design": json.dumps({"design": CUSTOM.to_dict(),
                                                                   "c2p": dataclasses.asdict(C2PDesign(gain=1e3)),
                                                                   "signed": False})}
    assert read_design_record(old_sweep, "sweep 'c2p'") == DesignRecord(CUSTOM, C2PDesign(gain=1e3))
    with pytest.raises(ConfigError, match="sweep 'c2p': holds no readable design record"):
        read_design_record({"testbench": "C2PTransfer", "design": "[1, 2]"}, "sweep 'c2p'")


def test_validate_refuses_a_changed_design_under_the_same_name(tmp_path):
    surrogate = surrogate_of(CUSTOM)
    changed = dataclasses.replace(CUSTOM, cs_f=6e-15)
    with pytest.raises(ConfigError, match=r"fitted to design 'custom-cell', which differs .*cs_f: 4e-15 -> 6e-15"):
        validate_cell(surrogate, changed, tmp_path / "v.h5", progress=False)
    with pytest.raises(ConfigError, match="paper's IV data"):
        validate_cell(Surrogate.load(data_path("paper_reference.h5")), None, tmp_path / "v.h5", progress=False)
    assert not (tmp_path / "v.h5").exists()


@pytest.mark.slow
def test_validate_defaults_to_the_surrogates_own_design(tmp_path):
    surrogate = surrogate_of(CUSTOM)
    report = validate_cell(surrogate, None, tmp_path / "v.h5", counts=(2, 1, 1), workers=1, progress=False)
    assert report.n_points == 2 and np.isfinite(report.rms_rel_full_scale)
    assert sweep_design(read_sweep(tmp_path / "v.h5", "validate_read")).cell == CUSTOM

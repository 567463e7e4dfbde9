"""The design's devices in the generated netlists (models or PDK subcircuits, geometry from the design), the
circuit temperature and the cell's threshold shifts, on real ngspice runs."""
import dataclasses
import re

import numpy as np
import pytest

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead, shipped_subcircuits
from gaincell.design import design_from_dict, load_design
from gaincell.design_record import DESIGN_RECORD, design_record, read_design_record
from gaincell.devices import PdkDevice, VtShift
from gaincell.errors import ConfigError

CMOS = load_design("cmos-generic")
SUB_FILES = ("gaincell_signed.sub", "c2p.sub", "dac.sub")
NFET = PdkDevice("nfet", "subckt", "um", (("nf", 1.0),))


def test_generic_text_keeps_its_models_and_takes_periphery_sizes_from_the_design():
    for name in SUB_FILES:
        text = shipped_subcircuits(CMOS, name)
        assert "{logic_" not in text and "{zero_v}" not in text
        assert not re.search(r"^x\S* .*_gen", text, re.MULTILINE)
    assert "mn out in 0 0 nmos_gen w={wn} l=3e-08" in shipped_subcircuits(CMOS, "gaincell_signed.sub")
    longer = dataclasses.replace(CMOS, logic_p=dataclasses.replace(CMOS.logic_p, l_m=60e-9))
    assert "mp a sb b vdd pmos_gen w={wp} l=6e-08" in shipped_subcircuits(longer, "dac.sub")


def test_a_subcircuit_device_is_an_x_line_in_its_geometry_unit():
    design = dataclasses.replace(CMOS, devices=(("nmos_gen", NFET),))
    text = shipped_subcircuits(design, "gaincell_signed.sub")
    assert "xrn dn grn 0 0 nfet w={(wrn)*1000000} l={(lrn)*1000000} nf=1" in text
    assert "xn out in 0 0 nfet w={(wn)*1000000} l={(3e-08)*1000000} nf=1" in text
    assert "mrp dp grp vdd vdd pmos_gen w={wrp} l={lrp}" in text  # the PMOS stays a model


@pytest.mark.parametrize("table, field", [
    ({"devices": {"nmos_gen": {"name": "nfet", "kind": "verilog"}}}, "devices.nmos_gen.kind"),
    ({"devices": {"nmos_gen": {"name": "nfet", "unit": "mm"}}}, "devices.nmos_gen.unit"),
    ({"devices": {"nmos_gen": {"name": "nfet\n.endc"}}}, "devices.nmos_gen.name"),
    ({"devices": {"nmos_gen": {"name": "nfet", "params": {"w": 1}}}}, "devices.nmos_gen.params"),
    ({"devices": {"nmos_gen": {"name": "nfet", "params": {"nf": "1;x"}}}}, "devices.nmos_gen.params"),
    ({"devices": {"nfet": {"name": "nfet"}}}, "devices"),
    ({"devices": {"nmos_gen": "nfet"}, "model_names": {"nmos_gen": "n2"}}, "devices"),
    ({"vt_shift": {"write": 2.0}}, "vt_shift.write"),
    ({"vt_shift": {"gate": 0.1}}, "vt_shift.gate"),
    ({"temp_c": 900}, "temp_c"),
])
def test_bad_device_descriptions_shifts_and_temperatures_are_refused_by_field(table, field):
    with pytest.raises(ConfigError) as caught:
        design_from_dict(table)
    assert caught.value.parameter == field


def test_devices_shifts_and_temperature_load_from_a_file_table_and_round_trip_the_record():
    design = design_from_dict({"devices": {"nmos_gen": {"name": "nfet", "kind": "subckt", "unit": "um",
                                                        "params": {"nf": 1}}},
                               "vt_shift": {"read_n": 0.02}, "temp_c": 85})
    assert design.device("nmos_gen") == NFET and design.device("pmos_gen") == PdkDevice("pmos_gen")
    assert design.vt_shift == VtShift(read_n=0.02) and design.temp_c == 85
    assert read_design_record({DESIGN_RECORD: design_record(design)}, "test").cell == design
    assert "temp_c" not in CMOS.to_dict()  # defaults stay out: records and sweep hashes of older designs hold


def _mid_currents(tmp_path, *designs, stored=(0.3, 0.6)):
    currents = []
    for k, design in enumerate(designs):
        sweep = Sweep("read", CellRead(design), {"stored_v": list(stored), "pulse_s": [5e-9], "vin_v": [0.9]})
        data = run_sweep(sweep, tmp_path / f"r{k}.h5", workers=1, progress=False).data
        currents.append(data.scalars["i_mid_a"][:, 0, 0])
    return currents


def test_the_circuit_temperature_reaches_ngspice(tmp_path):
    hot = dataclasses.replace(CMOS, temp_c=85.0)
    assert ".temp 85" in CellRead(hot).preamble() and ".temp 27" in CellRead(CMOS).preamble()
    room, warm = _mid_currents(tmp_path, CMOS, hot)
    assert np.all(np.abs(warm - room) > 0.02 * np.abs(room))


def test_threshold_shifts_weaken_the_shifted_transistor(tmp_path):
    base, slow_n, slow_p = _mid_currents(tmp_path, CMOS, dataclasses.replace(CMOS, vt_shift=VtShift(read_n=0.05)),
                                         dataclasses.replace(CMOS, vt_shift=VtShift(read_p=0.05)))
    # stored 0.3 V: the PMOS branch conducts; 0.6 V: the NMOS branch (each the other's subthreshold)
    assert slow_n[1] < base[1] - 1e-7 and slow_n[0] <= base[0]  # less NMOS current: the current moves down
    assert slow_p[0] > base[0] + 1e-7 and slow_p[1] >= base[1]  # less PMOS current: it moves up

"""The small sweeps whose results are frozen in tests/golden/cell_golden.h5 (made by scripts/make_golden.py).

A change to a netlist, model card, testbench or the simulator that moves these numbers fails
tests/test_golden.py; if the change is intended, re-run the script and commit the new file with a note.
"""
from gaincell.circuits import Sweep
from gaincell.circuits.cells import CellRead, CellRetention, CellWrite
from gaincell.design import load_design

GOLDEN_FILE = "cell_golden.h5"


def golden_sweeps() -> list[Sweep]:
    cmos, igzo = load_design("cmos-generic"), load_design("igzo-generic")
    return [
        Sweep("read_cmos", CellRead(cmos), {"stored_v": [0.0, 0.3, 0.6, 0.9], "pulse_s": [5e-9, 15e-9],
                                           "vin_v": [0.9]}),
        Sweep("write_cmos", CellWrite(cmos), {"level_v": [0.0, 0.45, 0.9]}),
        Sweep("write_igzo", CellWrite(igzo), {"level_v": [0.0, 0.45, 0.9]}),
        Sweep("retention_cmos", CellRetention(cmos, stop_s=20e-3), {"stored_v": [0.7]}),
        Sweep("retention_igzo", CellRetention(igzo, stop_s=20e-3), {"stored_v": [0.7]}),
    ]


# Tolerances by result name: (relative, absolute in the result's SI unit).
TOLERANCES = {
    "charge_c": (1e-3, 1e-17), "i_mid_a": (1e-3, 1e-9), "sn_disturb_v": (1e-2, 1e-4),
    "e_vdd_j": (1e-2, 1e-17), "e_bitline_j": (1e-2, 1e-17), "e_drive_j": (1e-2, 1e-18), "e_read_j": (1e-2, 1e-17),
    "stored_v": (0, 2e-4), "error_v": (0, 2e-4), "e_write_j": (1e-2, 1e-17),
    "v_end_v": (1e-3, 1e-4), "t_loss10_s": (1e-2, 0), "tau_1e_s": (1e-2, 0), "extrapolated": (0, 0),
}

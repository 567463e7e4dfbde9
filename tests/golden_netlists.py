"""Every kind of netlist the package writes, for the golden-netlist test (tests/test_golden_netlists.py).

    .venv/bin/python tests/golden_netlists.py        # rewrites tests/golden/netlists/*.cir

Each entry is the complete deck a simulator would run (absolute library paths shown as $ROOT/... or
$SITE/...). Re-write them only for an intended change to the netlists, and say in the commit what changed.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_FOLDER = ROOT / "tests" / "golden" / "netlists"


def _benches():
    """(name, testbench, points) for every testbench class, on the presets they serve."""
    from gaincell.circuits.arrays import ArrayRead
    from gaincell.circuits.c2p import C2PTransfer
    from gaincell.circuits.cells import CellRead, CellRetention, CellWrite
    from gaincell.circuits.conditions import ConditionedTestbench
    from gaincell.circuits.dac import DacConversion
    from gaincell.circuits.mismatch import MonteCarloRead, MonteCarloRetention, mismatch_for
    from gaincell.circuits.testbenches import RCStep
    from gaincell.circuits.tile import TileReadout, TileScores
    from gaincell.circuits.wires import Wires
    from gaincell.conditions import Conditions
    from gaincell.design import preset
    from gaincell.devices import VtShift
    from gaincell.periphery import C2PDesign, DacDesign

    cmos, igzo = preset("cmos-generic"), preset("igzo-generic")
    read_points = [{"stored_v": 0.2, "pulse_s": 7.5e-9, "vin_v": 0.9}, {"stored_v": 0.65, "pulse_s": 7.5e-9,
                                                                         "vin_v": 0.9}]
    stored = ((0.1, 0.5, 0.8), (0.3, 0.45, 0.9))
    shifted = dataclasses.replace(cmos, vt_shift=VtShift(write=0.01, read_n=-0.02))
    benches = [
        ("cell-read", CellRead(cmos), read_points),
        ("cell-read-igzo", CellRead(igzo), read_points[:1]),
        ("cell-read-vt-shift", CellRead(shifted), read_points[:1]),
        ("cell-write", CellWrite(cmos), [{"level_v": 0.3}, {"level_v": 0.7}]),
        ("cell-retention", CellRetention(igzo, stop_s=1e-3, max_step_s=1e-5), [{"stored_v": 0.9}]),
        ("c2p", C2PTransfer(cmos, c2p=C2PDesign()), [{"charge_c": 1e-14}, {"charge_c": 5e-14}]),
        ("c2p-signed", C2PTransfer(cmos, c2p=C2PDesign(), signed=True), [{"charge_c": -2e-14}]),
        ("dac", DacConversion(cmos, dac=DacDesign()), [{"from_level": 0, "to_level": 5}]),
        ("tile-scores", TileScores(cmos, stored, (3e-9, 12e-9)), [{"column": 1}]),
        ("tile-readout", TileReadout(cmos, stored, (0.0, 9e-9)), [{"column": 2}]),
        ("array-cells", ArrayRead.from_arrays(cmos, stored, (5e-9, 10e-9)), [{"cell": 0}, {"cell": 1}]),
        ("array-columns-wires", ArrayRead.from_arrays(
            cmos, stored, (5e-9, 0.0), wires=Wires(bitline_r_ohm=50.0, bitline_c_f=1e-16, wordline_r_ohm=20.0,
                                                   wordline_c_f=5e-17, driver_r_ohm=100.0)),
         [{"column": 0}, {"column": 1}, {"column": 2}]),
        ("array-columns-write-inverters", ArrayRead.from_arrays(cmos, stored, (5e-9, 10e-9), write=True,
                                                                row_inverters=True), [{"column": 0}]),
        ("mc-read", MonteCarloRead(cmos, mismatch=mismatch_for(cmos, 3)),
         [dict(read_points[0], cell=0), dict(read_points[0], cell=1)]),
        ("mc-retention", MonteCarloRetention(cmos, stop_s=1e-4, max_step_s=1e-6, mismatch=mismatch_for(cmos, 3)),
         [{"stored_v": 0.7, "cell": 4}]),
        ("rc-step", RCStep(), [{"r": 1e3, "c": 1e-9, "runaway": 0.0}]),
    ]
    conditioned = ConditionedTestbench(CellRead(preset("sky130")), Conditions(("ss", "ff"), (-40.0, 125.0)))
    benches.append(("sky130-read-ss-125c", conditioned, [dict(read_points[0], corner=0, temp_c=125.0)]))
    return benches


def package_netlists() -> dict[str, str]:
    """NAME -> the deck, for every entry of the catalogue (paths made machine-independent)."""
    from gaincell.circuits.cells import cell_transient
    from gaincell.circuits.mismatch import read_noise_netlist
    from gaincell.circuits.spice.netlist import prepare
    from gaincell.design import preset

    decks = {name: bench.netlist(points).text for name, bench, points in _benches()}
    cmos = preset("cmos-generic")
    circuit, analysis, save = cell_transient(cmos, 0.6, 5e-9)
    decks["cell-transient"] = prepare(circuit, analysis, save=save).text
    decks["read-noise"] = prepare(read_noise_netlist(cmos, 0.45)).text
    return {name: machine_independent(text) for name, text in decks.items()}


def machine_independent(text: str) -> str:
    """Absolute paths of the repository and of installed packages as $ROOT and $SITE."""
    text = re.sub(r"\S*/site-packages/", "$SITE/", text)
    return text.replace(str(ROOT), "$ROOT")


def golden_path(name: str) -> Path:
    return GOLDEN_FOLDER / f"{name}.cir"


def main() -> None:
    GOLDEN_FOLDER.mkdir(parents=True, exist_ok=True)
    decks = package_netlists()
    for old in GOLDEN_FOLDER.glob("*.cir"):
        if old.stem not in decks:
            old.unlink()
    for name, text in decks.items():
        golden_path(name).write_text(text)
    print(f"wrote {len(decks)} netlists to {GOLDEN_FOLDER}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

"""Gain-cell arrays on real ngspice runs: the column charge is the sum of independent single-cell reads
(a separate testbench), simulating each distinct cell once equals simulating every cell, wires lose charge,
the write path stores what `.ic` sets, too-large arrays are refused."""
import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.array_read import check_budget, random_array_inputs, read_array
from gaincell.circuits.arrays import ArrayRead, CellStatesRead, ColumnsRead
from gaincell.circuits.builtins import ir_drop
from gaincell.circuits.cells import CellRead
from gaincell.circuits.wires import Wires
from gaincell.app.cli import main
from gaincell.design import load_design
from gaincell.errors import ConfigError

DESIGN = load_design("cmos-generic")
FULL_CELL_CHARGE_C = 10e-6 * DESIGN.t_max_s  # ~ the largest charge one cell delivers


@pytest.fixture(scope="module")
def inputs():
    return random_array_inputs(DESIGN, 6, 3, seed=4, pulse_levels=4)


@pytest.fixture(scope="module")
def ideal(inputs, tmp_path_factory):
    stored, pulses = inputs
    out = tmp_path_factory.mktemp("arrays") / "array.h5"
    return read_array(ArrayRead.from_arrays(DESIGN, stored, pulses), out, workers=2, progress=False)


@pytest.mark.slow
def test_column_charges_are_sums_of_single_cell_reads(inputs, ideal, tmp_path):
    stored, pulses = inputs
    assert ideal.report.data.counts()["ok"] == ideal.report.data.status.size and not ideal.failed_points["cell"]
    levels, widths = np.unique(stored), np.unique(pulses[pulses > 0])
    cells = run_sweep(Sweep("cells", CellRead(DESIGN), {"stored_v": levels, "pulse_s": widths, "vin_v": [DESIGN.v_in_v]}),
                      tmp_path / "cells.h5", workers=2, progress=False).data.scalars["charge_c"][:, :, 0]
    expected = np.zeros(stored.shape[1])
    for r, width in enumerate(pulses):
        if width > 0:
            expected += cells[np.searchsorted(levels, stored[r]), np.searchsorted(widths, width)]
    assert np.abs(ideal.charges_c).max() > FULL_CELL_CHARGE_C / 3
    # CellRead starts its pulse 1 ns in, the array 0.2 ns in: the same circuit, other time steps
    np.testing.assert_allclose(ideal.charges_c, expected, atol=2e-3 * FULL_CELL_CHARGE_C)


@pytest.mark.slow
def test_simulating_each_distinct_cell_once_equals_simulating_every_cell(inputs, ideal, tmp_path):
    stored, pulses = inputs
    merged = ArrayRead.from_arrays(DESIGN, stored, pulses)
    pairs = {(pulses[r], stored[r, c]) for r in range(stored.shape[0]) for c in range(stored.shape[1])}
    assert isinstance(merged, CellStatesRead) and len(merged.state_pulse_s) == len(pairs) < stored.size
    every = read_array(ArrayRead.from_arrays(DESIGN, stored, pulses, merge_identical=False), tmp_path / "every.h5",
                       workers=2, progress=False)
    assert every.report.data.status.size == stored.size
    np.testing.assert_allclose(ideal.charges_c, every.charges_c, rtol=0, atol=1e-5 * FULL_CELL_CHARGE_C)
    np.testing.assert_allclose(ideal.cell_charges_c, every.cell_charges_c, rtol=0, atol=1e-5 * FULL_CELL_CHARGE_C)
    # a cell's charge: ~0 on a row without pulse; its sign set by the stored value (zero crossing near 0.45 V)
    cells, read = every.cell_charges_c, np.broadcast_to(pulses[:, None] > 0, stored.shape)
    assert (~read).any() and np.abs(cells[~read]).max() < 1e-3 * FULL_CELL_CHARGE_C
    high, low = cells[read & (stored > 0.6)], cells[read & (stored < 0.3)]
    assert high.size and low.size and np.all(high > 0) and np.all(low < 0)


@pytest.mark.slow
def test_wires_and_the_write_path(inputs, ideal, tmp_path):
    stored, pulses = inputs
    out = tmp_path / "wires.h5"
    bitline = read_array(ArrayRead.from_arrays(DESIGN, stored, pulses, wires=Wires(bitline_r_ohm=2e3, bitline_c_f=1e-15)),
                         out, "bitline", workers=2, progress=False)
    coupled = ArrayRead.from_arrays(DESIGN, stored, pulses, wires=Wires(wordline_r_ohm=2e3, driver_r_ohm=5e3))
    assert isinstance(coupled, ColumnsRead) and not coupled.splittable  # one netlist: word lines couple columns
    wordline = read_array(coupled, out, "wordline", workers=2, progress=False)
    for result in (bitline, wordline):  # the IR drop moves the bit line off VDD/2 and slows the row pulses:
        drop = ir_drop(result.charges_c, ideal.charges_c)  # a measurable error, not a different read
        assert 1e-4 < drop["rms_rel"] < 0.2 and abs(drop["mean_magnitude_loss"]) < 0.2
    written = read_array(ArrayRead.from_arrays(DESIGN, stored, pulses, write=True), out, "written", workers=2,
                         progress=False)
    # the write leaves each value within the documented 20 mV (feedthrough): at most ~20 uA/V x 20 mV per cell
    bound = 6 * 20e-6 * 0.020 * DESIGN.t_max_s
    assert np.abs(written.charges_c - ideal.charges_c).max() < bound


def test_cell_states_map_back_onto_the_array():
    stored, pulses = random_array_inputs(DESIGN, 12, 9, seed=1, pulse_levels=3)
    merged = ArrayRead.from_arrays(DESIGN, stored, pulses)
    assert merged.state_of_cell.shape == stored.shape and len(merged.state_pulse_s) <= 3 * 8
    np.testing.assert_array_equal(merged.state_stored_v[merged.state_of_cell], stored)
    np.testing.assert_array_equal(merged.state_pulse_s[merged.state_of_cell], np.broadcast_to(pulses[:, None], stored.shape))
    every = ArrayRead.from_arrays(DESIGN, stored, pulses, merge_identical=False)
    np.testing.assert_array_equal(every.state_of_cell.ravel(), np.arange(stored.size))
    with pytest.raises(ConfigError, match="merge_identical: False .* applies to arrays without wires"):
        ArrayRead.from_arrays(DESIGN, stored, pulses, merge_identical=False, wires=Wires(bitline_r_ohm=5.0))


def test_an_array_too_large_is_refused_up_front_with_an_estimate():
    stored, pulses = random_array_inputs(DESIGN, 512, 512, seed=0)
    every = ArrayRead.from_arrays(DESIGN, stored, pulses, merge_identical=False)
    with pytest.raises(ConfigError, match=r"rows x cols: a 512 x 512 array .* would take about \d+ s") as caught:
        check_budget(every, workers=2, max_seconds=300)
    assert "allowed: about" in str(caught.value)
    # on the DAC levels x 16 pulse levels the same array holds at most 8 x 16 distinct cells: affordable
    seconds, memory = check_budget(ArrayRead.from_arrays(DESIGN, stored, pulses), workers=2, max_seconds=300)
    assert seconds < 5 and memory < 2**30
    with pytest.raises(ConfigError, match="pulse_s: widths must be within 0..T_max"):
        ArrayRead.from_arrays(DESIGN, stored[:2, :2], [1e-9, 20e-9])
    with pytest.raises(ConfigError, match="bitline_r_ohm: must be a finite value >= 0"):
        Wires(bitline_r_ohm=-1.0)


@pytest.mark.slow
def test_simulate_array_command(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "array", "--rows", "4", "--cols", "2", "--bitline-r", "100",
                                       "--out", str(tmp_path / "a.h5")])
    assert result.exit_code == 0, result.output
    assert "array 4 x 2 (columns layout)" in result.output and "against the ideal array" in result.output
    refused = CliRunner().invoke(main, ["simulate", "array", "--rows", "512", "--cols", "512", "--all-cells", "--out",
                                        str(tmp_path / "b.h5")])
    assert refused.exit_code == 1 and "rows x cols" in refused.output and not (tmp_path / "b.h5").exists()

"""The attention tile in SPICE (K array -> C2P per token -> V array -> signed readout) against the torch
layer built from the same cell's surrogate (characterized and fitted here, C2P included)."""
import numpy as np
import pytest

from gaincell.circuits.characterize import characterize
from gaincell.periphery import Grid
from gaincell.circuits.sweep import SweepReport
from gaincell.circuits.tile import aged_voltages, refuse_failed_columns, run_tile
from gaincell.compact import tau_1e
from gaincell.design import load_design
from gaincell.errors import ConfigError, SimulationError
from gaincell.fitting.fit import fit_characterization
from gaincell.surrogate.tile_reference import tile_reference
from gaincell.sweep_data import FAILED, OK, SweepData

DESIGN = load_design("cmos-generic")


@pytest.fixture(scope="module")
def surrogate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tile")
    char = folder / "char.h5"
    characterize(DESIGN, char, Grid(pulse_levels=3, retention_stop_s=20e-3), workers=2, progress=False, c2p=True)
    fitted, _ = fit_characterization(char)
    return fitted


@pytest.mark.slow
def test_surrogate_carries_the_fitted_converter(surrogate):
    c2p = surrogate["c2p"]
    assert c2p.model_id == "c2p/clipped-linear" and "paper default" not in c2p.source
    assert c2p.param("q_sat_c") == pytest.approx(80e-6 * DESIGN.t_max_s, rel=0.02)
    assert {"e_read_cell_j", "e_c2p_conversion_j"} <= set(surrogate["energy"].param_names)
    assert surrogate["timing"].param("t_c2p_conversion_s") > DESIGN.t_max_s


@pytest.mark.slow
def test_spice_tile_matches_the_torch_layer(surrogate, tmp_path):
    rng = np.random.default_rng(7)
    tokens, dim = 12, 12
    levels = np.asarray(DESIGN.dac_voltages)
    query = rng.integers(0, 16, dim) / 15
    keys = levels[rng.integers(3, 8, (tokens, dim))]  # mostly above the zero crossing: most tokens fire
    values = levels[rng.integers(0, 8, (tokens, dim))]
    result = run_tile(DESIGN, query, keys, values, tmp_path / "tile.h5", workers=2, progress=False)
    reference = tile_reference(surrogate, query, keys, values)
    saturated = surrogate["c2p"].param("t_max_s")
    phi, outputs = result.phi(saturated), result.outputs(saturated)
    assert np.count_nonzero(phi) > tokens / 2 and np.abs(reference["output"]).max() > 0.2  # not a trivial case
    errors = result.compare(reference, saturated)
    print(f"tile {tokens} x {dim}: phi RMS {errors['phi_rms']:.4f}, output RMS {100 * errors['output_rms']:.2f} % "
          "of the range")
    assert errors["phi_rms"] <= 0.02 and errors["output_rms"] <= 0.02
    np.testing.assert_allclose(errors["phi_rms"], np.sqrt(np.mean((phi - reference["phi"]) ** 2)))
    # the 5-bit counter is the same readout rounded to 1/15
    assert np.abs(result.counter_outputs - outputs).max() <= 0.5 / 15 + 0.01


@pytest.fixture(scope="module")
def aged_tile(surrogate, tmp_path_factory):
    """A 12 x 12 tile whose keys and values were written 0 .. 3 tau ago (tau: the fitted decay's 1/e time),
    held in SPICE (retention) and then read in SPICE (the tile)."""
    folder = tmp_path_factory.mktemp("aged")
    rng = np.random.default_rng(7)
    tokens, dim = 12, 12
    levels = np.asarray(DESIGN.dac_voltages)
    query = rng.integers(0, 16, dim) / 15
    keys, values = levels[rng.integers(3, 8, (tokens, dim))], levels[rng.integers(0, 8, (tokens, dim))]
    decay = surrogate["decay"]
    ages = (tokens - 1 - np.arange(tokens)) * 3 * tau_1e(decay.model_id, decay.config, decay.params) / (tokens - 1)
    held_k = aged_voltages(DESIGN, keys, ages, folder / "aged.h5", workers=2)
    held_v = aged_voltages(DESIGN, values, ages, folder / "aged.h5", workers=2)
    result = run_tile(DESIGN, query, held_k, held_v, folder / "tile.h5", workers=2, progress=False)
    return query, keys, values, ages, held_k, held_v, result


@pytest.mark.slow
def test_an_aged_spice_tile_is_the_tile_of_its_decayed_voltages(surrogate, aged_tile):
    """In the circuit a stored value leaks toward the write bit line's hold level (0 V: the most negative
    product, not zero): the oldest keys hold almost nothing, and the aged tile reads like a fresh tile of the
    decayed voltages, to the fresh tile's accuracy."""
    query, keys, values, ages, held_k, held_v, result = aged_tile
    assert keys[0].mean() > 0.5 and held_k[0].mean() < 0.05 and np.allclose(held_k[-1], keys[-1], atol=2e-3)
    errors = result.compare(tile_reference(surrogate, query, held_k, held_v), surrogate["c2p"].param("t_max_s"))
    assert errors["phi_rms"] <= 0.02 and errors["output_rms"] <= 0.015, errors


@pytest.mark.slow
def test_the_layer_s_decay_matches_an_aged_spice_tile(surrogate, aged_tile):
    query, keys, values, ages, _, _, result = aged_tile
    errors = result.compare(tile_reference(surrogate, query, keys, values, ages), surrogate["c2p"].param("t_max_s"))
    assert errors["phi_rms"] <= 0.02 and errors["output_rms"] <= 0.015, errors


def test_tile_inputs_are_checked():
    with pytest.raises(ConfigError, match="tokens: a tile holds 1..64 tokens"):
        run_tile(DESIGN, np.zeros(4), np.zeros((65, 4)), np.zeros((65, 4)), "unused.h5")
    with pytest.raises(ConfigError, match=r"query_frac: pulse widths must be fractions of T_max in \[0, 1\]"):
        run_tile(DESIGN, np.full(4, 2.0), np.zeros((4, 4)), np.zeros((4, 4)), "unused.h5")


def test_a_failed_column_of_either_stage_is_refused_with_ngspice_s_message():
    data = SweepData("tile_readout", {"column": np.arange(3)})
    data.status[:] = OK
    refuse_failed_columns(SweepReport(data), "stage 2 (readout counters)")  # all simulated: nothing to say
    data.status[1] = FAILED
    data.error[1] = "doAnalyses: TRAN:  Timestep too small"
    with pytest.raises(SimulationError, match=r"tile stage 2 \(readout counters\) failed for column\(s\) \[1\]: "
                                              r"doAnalyses: TRAN:  Timestep too small"):
        refuse_failed_columns(SweepReport(data), "stage 2 (readout counters)")

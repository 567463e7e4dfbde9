"""The `gaincell` command: verbs, netlist files, built circuits, clear errors."""
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from browser_helpers import render_in_browser
from click.testing import CliRunner
from gaincell.app.cli import main
from gaincell.store import read_sweep
from gaincell.surrogate.file import Surrogate

RC_DECK = """rc from a file
.include {lib}
V1 drive 0 PULSE(0 1 0 1p 1p 1 2)
R1 drive out 1k
C1 out 0 1n
.op
.tran 10n 2u
.end
"""


def gaincell(*args):
    return subprocess.run([sys.executable, "-m", "gaincell.app.cli", *args], capture_output=True, text=True)


def test_help_lists_the_verbs():
    done = gaincell("--help")
    assert done.returncode == 0
    for verb in ("simulate", "characterize", "fit", "validate", "attention", "inspect", "plot", "export", "demo"):
        assert verb in done.stdout


def test_simulate_a_netlist_file_stores_every_vector_of_every_analysis(tmp_path):
    (tmp_path / "models.lib").write_text("* nothing but a comment\n")
    deck = tmp_path / "rc.cir"
    deck.write_text(RC_DECK.format(lib="models.lib"))  # relative include, resolved next to the deck
    out, png = tmp_path / "rc.h5", tmp_path / "rc.png"
    done = gaincell("simulate", str(deck), "--out", str(out), "--png", str(png))
    assert done.returncode == 0, done.stderr
    with h5py.File(out) as f:
        assert {"op", "tran"} <= set(f)
        assert str(tmp_path / "models.lib") in f["tran"].attrs["netlist"]
    tran = read_sweep(out, "tran").point((0,))
    assert set(tran) >= {"time", "v(out)", "v(drive)", "i(v1)"}
    assert tran["v(out)"][-1] == pytest.approx(1 - np.exp(-2), abs=2e-3)
    assert png.stat().st_size > 10_000


def test_simulate_cell_writes_the_stored_value(tmp_path):
    out = tmp_path / "cell.h5"
    done = gaincell("simulate", "cell", "--stored", "0.5", "--pulse", "5n", "--out", str(out))
    assert done.returncode == 0, done.stderr
    tran = read_sweep(out, "tran")
    wave = tran.point((0,))
    hold = np.interp(14e-9, wave["time"], wave["v(xcell.sn)"])
    assert hold == pytest.approx(0.5, abs=0.02)  # feedthrough as the write word line falls: a few mV
    assert "cmos-generic" in tran.attrs["design"]


@pytest.mark.parametrize("args, message", [
    (["simulate", "nosuchthing", "--out", "x.h5"], "neither a netlist file nor a built circuit"),
    (["simulate", "cell", "--stored", "2", "--out", "x.h5"], "stored: must be within 0..VDD"),
    (["simulate", "cell", "--pulse", "40n", "--out", "x.h5"], "pulse: must be in (0, T_max"),
    (["simulate", "cell", "--design", "nope", "--out", "x.h5"], "design: 'nope' is neither a preset"),
    (["simulate", "cell", "--pulse", "ten", "--out", "x.h5"], "not a number like"),
    (["characterize", "--scheduler", "bogus", "--out", "x.h5"], "neither 'local-dask' nor a Dask scheduler's address"),
    (["energy", "--figures", "paper", "--window", "1048576"], "--window: is 1048576 tokens"),
])
def test_bad_input_names_the_parameter(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_demo_writes_its_files(tmp_path):
    """The SPICE-to-energy stages of a design file whose [grid] and [c2p] tables the demo honours; the
    language-model stage has its own test (tests/test_adapt.py)."""
    design = tmp_path / "cell.toml"
    design.write_text('base = "cmos-generic"\nname = "demo_cell"\n\n[c2p]\ncounter_levels = 8\n\n'
                      '[grid]\nstored_levels = 10\npulse_levels = 3\nvin_levels = 2\n')
    done = gaincell("demo", "--out", str(tmp_path / "demo"), "--no-lm", "--design", str(design))
    assert done.returncode == 0, done.stderr
    for name in ("cell.h5", "cell.png", "char.h5", "surrogate.h5", "surrogate-fit.png", "validation.h5",
                 "summary.txt"):
        assert (tmp_path / "demo" / name).is_file()
    read = read_sweep(tmp_path / "demo" / "char.h5", "read")
    assert read.counts()["ok"] == 10 * 3 * 2  # the design file's grid
    assert Surrogate.load(tmp_path / "demo" / "surrogate.h5").hardware.readout_levels == 2 * 8  # its counter
    currents = read.scalars["i_mid_a"][:, -1, -1]
    assert currents[0] < -8e-6 and currents[-1] > 8e-6  # the signed cell: about +-10 uA
    report = (tmp_path / "demo" / "report.html").read_text()
    stages = re.findall(r'<section id="stage-\d" data-stage="(\d)" data-status="([^"]+)">', report)
    assert [s for _, s in stages] == ["done"] * 6 + ["skipped"]
    for link in re.findall(r'href="([^"#][^"]*)"', report):  # every linked file and interactive page exists
        assert (tmp_path / "demo" / link).is_file(), link
    for anchor in re.findall(r'href="#([^"]+)"', report):  # the contents link to the stages
        assert f'id="{anchor}"' in report
    assert "gaincell attention surrogate.h5" in report and "decoding vs parallel pass" in report
    assert "gaincell energy --surrogate surrogate.h5 --model gpt2" in report and "paper figures: energy per token" in report
    state, _ = render_in_browser(tmp_path / "demo" / "attention-layer.html")
    assert state["ready"] == "1" and state["traces"] == "6" and "violations" not in state  # multiply, line, 4 held levels
    assert report.index("<h2>Summary</h2>") < report.index("<h2>Contents</h2>") < report.index('id="stage-1"')
    assert "held-out RMS error" in report and "{'stored_v'" not in report  # a worst point in words, not a dict
    remakes_every_figure(tmp_path / "demo", report, tmp_path / "remade")


def remakes_every_figure(demo, report: str, remade):
    """Every figure's "made by" command, run in a folder holding only the demo's characterization, writes the
    same picture as the report's (pixel for pixel)."""
    import contextlib
    import shlex
    import shutil

    from matplotlib.image import imread

    remade.mkdir()
    shutil.copy(demo / "char.h5", remade / "char.h5")
    made = re.findall(r'<a href="([^"]+\.png)">[^<]+</a>(?: &middot; interactive: <a href="[^"]+">[^<]+</a>)?; made by: '
                      r"<code>([^<]+)</code>", report)
    assert len(made) == 7, made  # cell, read, retention, fit, parity, layer, energy
    for png, command in made:
        words = shlex.split(command.replace("&#x27;", "'"))
        assert words[0] == "gaincell", command
        with contextlib.chdir(remade):  # the command line's own code, in this process (no interpreter to start)
            done = CliRunner().invoke(main, words[1:])
        assert done.exit_code == 0, (command, done.output[-2000:])
        assert np.array_equal(imread(remade / png), imread(demo / png)), f"{command} does not remake {png}"


@pytest.mark.slow
def test_installed_non_editable_copy_finds_its_netlists(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(root)],
                    check=True, capture_output=True)
    code = ("from gaincell.resources import netlist_path; import gaincell.circuits.cells as c; "
            "print(netlist_path('cmos_generic.lib')); print(c.__file__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lib, module = done.stdout.split()
    assert lib.startswith(str(target)) and module.startswith(str(target))


EVERY_ANALYSIS = """every analysis
V1 in 0 dc 1 ac 1
R1 in out 1k
C1 out 0 1n
.op
.dc V1 0 1 0.25
.ac dec 2 1k 1meg
.tran 1u 10u
.noise v(out) V1 dec 2 1k 1meg
.pz in 0 out 0 vol pz
.sens v(out)
.end
"""


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_every_analysis_is_stored_under_one_name_with_its_length(tmp_path, backend):
    """Group and vector names are the same in both backends; `n_samples` is each analysis' length."""
    from click.testing import CliRunner

    from gaincell.app.cli import main

    deck, out = tmp_path / "every.cir", tmp_path / "every.h5"
    deck.write_text(EVERY_ANALYSIS)
    done = CliRunner().invoke(main, ["simulate", str(deck), "--out", str(out), "--backend", backend])
    assert done.exit_code == 0, done.output
    lengths = {"op": 1, "dc": 5, "ac": 7, "noise": 7, "noise2": 1, "pz": 1, "sens": 1}
    with h5py.File(out) as f:
        assert set(f) == set(lengths) | {"tran"}
    for group, expected in lengths.items():
        data = read_sweep(out, group)
        assert int(data.n_samples[0]) == expected, group
        assert all(np.isfinite(np.abs(values[0, :expected])).all() for values in data.waveforms.values()), group
    assert {"v(v-sweep)", "v(out)", "i(v1)"} <= set(read_sweep(out, "dc").waveforms)
    tran = read_sweep(out, "tran")
    assert int(tran.n_samples[0]) == np.sum(np.isfinite(tran.waveforms["time"][0])) > 10
    assert np.max(np.diff(tran.point((0,))["time"])) <= 10e-6 / 50 * (1 + 1e-9)  # ngspice's default TMAX
    ac, pz = read_sweep(out, "ac"), read_sweep(out, "pz")
    assert ac.is_complex("v(out)") and not ac.is_complex("frequency") and pz.is_complex("v(pole(1))")
    assert pz.point((0,))["v(pole(1))"][0] == pytest.approx(-1 / (2 * np.pi * 1e3 * 1e-9) * 2 * np.pi, rel=1e-6)
    assert {"frequency", "onoise_spectrum", "inoise_spectrum"} <= set(read_sweep(out, "noise").waveforms)
    assert {"v(onoise_total)", "v(inoise_total)"} <= set(read_sweep(out, "noise2").waveforms)


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_a_plot_without_points_is_stored_empty_beside_the_others(tmp_path, backend):
    """An .ac over zero frequencies (ngspice exits 0): an empty group with a note, the .op and .tran intact."""
    from click.testing import CliRunner

    from gaincell.app.cli import main

    deck, out = tmp_path / "zero.cir", tmp_path / "zero.h5"
    deck.write_text("zero-point ac\nv1 1 0 dc 1 ac 1\nr1 1 0 1k\n.op\n.ac dec 1 1kHz 1kHz\n.tran 1u 2u\n.end\n")
    done = CliRunner().invoke(main, ["simulate", str(deck), "--out", str(out), "--backend", backend])
    assert done.exit_code == 0, done.output
    assert "ac (0 vectors), op (2 vectors), tran (3 vectors)" in done.output
    empty = read_sweep(out, "ac")
    assert not empty.waveforms and "without any points" in empty.attrs["note"]
    assert read_sweep(out, "op").point((0,))["v(1)"] == pytest.approx([1.0])
    described = CliRunner().invoke(main, ["inspect", str(out)])
    assert described.exit_code == 0 and described.output.count("note:") == 1


def test_characterize_takes_the_grid_and_periphery_of_a_design_file(tmp_path):
    from gaincell.fitting.fit import sweep_design
    from gaincell.periphery import DacDesign

    design = tmp_path / "small.toml"
    design.write_text('name = "small"\ndac_levels = 2\n[dac]\nload_cells = 8\n[grid]\nstored_levels = 3\n'
                      'pulse_levels = 2\nvin_levels = 1\nretention_levels = [1.0]\nretention_stop_s = 1e-6\n')
    out = tmp_path / "char.h5"
    done = gaincell("characterize", "--design", str(design), "--out", str(out), "--dac", "--workers", "1")
    assert done.returncode == 0, done.stderr
    read = read_sweep(out, "read")
    assert [len(read.coords[k]) for k in ("stored_v", "pulse_s", "vin_v")] == [3, 2, 1]
    assert list(read_sweep(out, "retention").coords["stored_v"]) == [pytest.approx(0.9)]
    assert sweep_design(read_sweep(out, "dac")).dac == DacDesign(load_cells=8)


def test_validate_defaults_to_the_surrogates_design_and_names_what_another_changes(tmp_path):
    from test_design_record import CUSTOM, surrogate_of

    surrogate = surrogate_of(CUSTOM).save(tmp_path / "s.h5")
    refused = gaincell("validate", str(surrogate), "--design", "cmos-generic", "--out", str(tmp_path / "v.h5"))
    assert refused.returncode == 1 and not (tmp_path / "v.h5").exists()
    assert "differs from the design given" in refused.stderr and "cs_f" in refused.stderr
    done = gaincell("validate", str(surrogate), "--points", "1x1x1", "--out", str(tmp_path / "v.h5"))
    assert done.returncode == 0, done.stderr
    assert "1 fresh SPICE points" in done.stdout


def test_a_bad_lambada_file_is_refused_before_the_demo_or_an_exploration_starts(tmp_path):
    (tmp_path / "garbage.jsonl").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    (tmp_path / "no-text.jsonl").write_text('{"text": "fine passage"}\n{"words": 1}\n')
    (tmp_path / "items.txt").write_text('{"text": "fine passage"}\n')
    for name, message in (("garbage.jsonl", "is an HDF5 file"), ("no-text.jsonl", "line 2 is not a JSON object"),
                          ("items.txt", "is not a .jsonl file")):
        for args in (["demo", "--out", "d"], ["explore", "--vary", "cs_f=2f", "--out", "e"]):
            done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", *args, "--lambada", name],
                                  capture_output=True, text=True, cwd=tmp_path, timeout=120)
            assert done.returncode == 1 and message in done.stderr and "--lambada" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr and not (tmp_path / "d").exists() and not (tmp_path / "e").exists()

"""Hostile input files: foreign, fake, empty, truncated or incomplete HDF5 given to the verbs that read sweeps
and surrogates; implausible surrogates; complex (.ac) results stored, read, listed, plotted and exported whole."""
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from browser_helpers import render_in_browser
from gaincell.circuits.spice.rawfile import read_raw
from gaincell.circuits.spice.simulator import run
from gaincell.app.cli import main
from gaincell.app.commands.circuits import save_result
from gaincell.errors import InputFileError
from gaincell.app.inspection import sweep_figure
from gaincell.resources import data_path
from gaincell.store import list_sweeps, read_sweep, save_sweeps
from gaincell.sweep_data import SweepData, run_as_sweep
from gaincell.surrogate.cellmodel import probe_layer
from gaincell.errors import SurrogateError
from gaincell.surrogate.file import Surrogate

from sweep_helpers import C_F, R_OHM  # the RC of the `ac_file` fixture (tests/conftest.py)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *phrases):
    """Exit 1 with one `error:` paragraph naming what is wrong, never a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


# ----------------------------------------------------------------------------------------------------------
# files that are not what inspect / plot / export read


def _foreign(path, ac_file):
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3.0)
        f.attrs["creator"] = "another program"


def _surrogate(path, ac_file):
    shutil.copy(data_path("paper_reference.h5"), path)


def _text(path, ac_file):
    path.write_text("time,v(out)\n0,1\n")


def _empty(path, ac_file):
    path.write_bytes(b"")


def _truncated(path, ac_file):
    data = ac_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_dataset(path, ac_file):
    shutil.copy(ac_file, path)
    with h5py.File(path, "a") as f:
        del f["ac/error"]


def _bad_status(path, ac_file):
    shutil.copy(ac_file, path)
    with h5py.File(path, "a") as f:
        f["ac/status"][0] = 7


HOSTILE = {  # how to make it, what the error says
    "foreign HDF5": (_foreign,
                     "not a gaincell characterization file: it has no sweep groups (file_kind attribute missing)"),
    "surrogate": (_surrogate, "not a gaincell characterization file: it is a gaincell surrogate"),
    "text renamed .h5": (_text, "it is not an HDF5 file"),
    "empty": (_empty, "the file is empty (0 bytes)"),
    "truncated": (_truncated, "truncated or corrupted"),
    "sweep missing a dataset": (_missing_dataset, "sweep 'ac' is incomplete: dataset(s) error missing"),
    "sweep with a bad status": (_bad_status, "sweep 'ac' is malformed: 'status' holds values other than 0 pending"),
}
INCOMPLETE = ("sweep missing a dataset", "sweep with a bad status")  # the file itself is a gaincell sweep file
VERBS = {
    "inspect": [],
    "plot": ["--sweep", "ac", "--signal", "v(out)", "--out", "{out}.png"],
    "export": ["--sweep", "ac", "--format", "csv", "--out", "{out}.csv"],
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_file_of_the_wrong_kind_is_a_clear_error_in_every_verb(ac_file, tmp_path, kind, verb):
    make, expected = HOSTILE[kind]
    path = tmp_path / "input.h5"
    make(path, ac_file)
    before = path.read_bytes()
    args = [a.format(out=tmp_path / "output") for a in VERBS[verb]]
    if kind == "surrogate" and verb == "inspect":  # inspect describes surrogates too
        assert invoke(verb, path, *args).exit_code == 0
        return
    refused(invoke(verb, path, *args), str(path), expected)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("output*")) and not list(tmp_path.glob(".output*"))  # nothing written


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_store_readers_refuse_the_same_files(ac_file, tmp_path, kind):
    make, expected = HOSTILE[kind]
    path = tmp_path / "input.h5"
    make(path, ac_file)
    if kind in INCOMPLETE:
        assert list_sweeps(path) == ["ac"]
    else:
        with pytest.raises(InputFileError, match="input.h5: not a gaincell characterization file"):
            list_sweeps(path)
    with pytest.raises(InputFileError, match=str(path)) as error:
        read_sweep(path, "ac")
    assert expected in str(error.value)


def test_save_sweeps_keeps_a_foreign_file_unless_told_to_replace_it(ac_file, tmp_path):
    sweep = read_sweep(ac_file, "ac")
    foreign = tmp_path / "foreign.h5"
    _foreign(foreign, ac_file)
    before = foreign.read_bytes()
    with pytest.raises(InputFileError, match="refusing to write sweeps into it"):
        save_sweeps(foreign, [sweep])
    assert foreign.read_bytes() == before
    save_sweeps(foreign, [sweep], replace_other_kind=True)  # what --force asks for
    assert list_sweeps(foreign) == ["ac"]
    damaged = tmp_path / "damaged.h5"
    _missing_dataset(damaged, ac_file)  # a damaged sweep file is never dropped silently, even when forced
    with pytest.raises(InputFileError, match="incomplete"):
        save_sweeps(damaged, [SweepData("other", {"x": np.arange(2.0)})], replace_other_kind=True)


def test_an_unreadable_chunk_file_is_named(ac_file, tmp_path):
    path = tmp_path / "ac.h5"
    shutil.copy(ac_file, path)
    chunk = tmp_path / "ac.h5.parts" / "ac" / "00000000000000000001.npz"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"PK\x03\x04 not a zip archive")
    refused(invoke("inspect", path), str(chunk), "not a readable chunk file of sweep 'ac'")


def test_a_sweep_file_given_as_a_surrogate_is_refused(ac_file, tmp_path):
    with pytest.raises(SurrogateError, match=r"not a gaincell surrogate \(it is a gaincell characterization file\)"):
        Surrogate.load(ac_file)
    refused(invoke("attention", ac_file, "--out", tmp_path / "layer"), str(ac_file), "not a gaincell surrogate")


# ----------------------------------------------------------------------------------------------------------
# implausible surrogates: a copy of the shipped reference with one thing changed


def _set_value(component, index, value):
    def edit(f):
        f[f"{component}/values"][index] = value
    return edit


def _set_validity(component, variable, bounds):
    def edit(f):
        validity = json.loads(f[component].attrs["validity"])
        f[component].attrs["validity"] = json.dumps(validity | {variable: bounds})
    return edit


IMPLAUSIBLE = {
    "zero saturation charge": (_set_value("c2p", 0, 0.0),
                               r"component 'c2p' parameter q_sat_c = 0 is implausible: the C2P saturation charge"),
    "negative saturation charge": (_set_value("c2p", 0, -1.2e-12), r"q_sat_c = -1.2e-12 is implausible"),
    "NaN validity bound": (_set_validity("multiply", "stored_v", [float("nan"), 0.9]),
                           r"component 'multiply' validity of stored_v is \[nan, 0.9\]; it must be two finite"),
    "swapped validity bounds": (_set_validity("multiply", "stored_v", [0.9, 0.0]),
                                r"validity of stored_v is \[0.9, 0.0\].*low <= high"),
    "absurd coefficient": (_set_value("multiply", 3, 1e30),
                           r"component 'multiply' parameter c30 = 1e\+30 is implausible: a read-current coefficient"),
    "NaN coefficient": (_set_value("multiply", 1, np.nan), r"component 'multiply' has non-finite parameter\(s\) c10"),
    "zero retention": (_set_value("decay", 0, 0.0), r"component 'decay' parameter tau_s = 0 is implausible"),
    "negative energy": (_set_value("energy", 0, -1e-9), r"component 'energy' parameter \w+_j = -1e-09 is implausible"),
    "read current of amperes": (_set_value("multiply", 0, 5.0),
                                r"component 'multiply' \(multiply/poly\) is implausible: its read current"),
}


@pytest.mark.parametrize("case", IMPLAUSIBLE)
def test_an_implausible_surrogate_is_refused_naming_component_and_parameter(tmp_path, case):
    edit, expected = IMPLAUSIBLE[case]
    path = tmp_path / "surrogate.h5"
    shutil.copy(data_path("paper_reference.h5"), path)
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(SurrogateError, match=expected) as error:
        Surrogate.load(path)
    assert str(path) in str(error.value)


def test_the_cli_reports_an_implausible_surrogate_in_one_paragraph(tmp_path):
    path = tmp_path / "surrogate.h5"
    shutil.copy(data_path("paper_reference.h5"), path)
    with h5py.File(path, "a") as f:
        f["c2p/values"][0] = 0.0
    refused(invoke("inspect", path), str(path), "q_sat_c = 0 is implausible", "must lie in [1.602e-19, 1e-06] C")


def test_an_implausible_surrogate_is_not_saved(tmp_path):
    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    surrogate["c2p"].values[0] = 0.0
    with pytest.raises(SurrogateError, match="q_sat_c = 0 is implausible"):
        surrogate.save(tmp_path / "s.h5")
    assert not list(tmp_path.iterdir())


def test_the_layer_probe_names_what_gives_non_finite_numbers():
    """The last line of defence, on surrogates built in memory past the parameter rules."""
    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    probe_layer(surrogate, "reference")  # the shipped surrogate passes
    surrogate["decay"].values[0] = np.nan
    with pytest.raises(SurrogateError, match="component 'decay' .* gives decay factors nan"):
        probe_layer(surrogate, "edited")
    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    surrogate["multiply"].values[3] = np.inf
    with pytest.raises(SurrogateError, match="component 'multiply' compiles to non-finite attention constants"):
        probe_layer(surrogate, "edited")


# ----------------------------------------------------------------------------------------------------------
# complex results


def test_ac_results_are_stored_and_read_back_complex(ac_file):
    data = read_sweep(ac_file, "ac")
    point = data.point((0,))
    frequency, v_out = point["frequency"], point["v(out)"]
    assert frequency.dtype == np.float64 and len(frequency) == 61 and frequency[0] == pytest.approx(1.0)
    assert v_out.dtype == np.complex128
    analytic = 1.0 / (1.0 + 2j * np.pi * frequency * R_OHM * C_F)
    assert np.max(np.abs(v_out - analytic)) <= 1e-6
    assert np.min(v_out.imag) < -0.49  # the imaginary part is there: -1/2 at the corner frequency
    xr = pytest.importorskip("xarray")
    ds = xr.open_dataset(ac_file, group="ac", engine="h5netcdf")
    assert ds["v(out)"].dtype == np.complex128 and ds["v(out)"].dims == ("run", "sample")
    np.testing.assert_array_equal(ds["v(out)"].values[0], v_out)


def test_complex_results_are_listed_plotted_and_exported_as_csv(ac_file, tmp_path):
    result = invoke("inspect", ac_file)
    assert result.exit_code == 0, result.output
    assert "x axis frequency" in result.output and "v(out) [V, complex]" in result.output
    point = read_sweep(ac_file, "ac").point((0,))

    figure = sweep_figure(ac_file, "ac", ["v(out)"])  # a Bode plot: dB and degrees against log frequency
    assert "Bode" in figure.title and figure.x_log
    [magnitude], [phase] = (panel.traces for panel in figure.panels)
    assert [panel.y_unit for panel in figure.panels] == ["dB", "°"] and figure.panels[0].x_unit == "Hz"
    assert magnitude.name == "|v(out)| (dB)" and phase.name == "phase(v(out)) (deg)"
    np.testing.assert_allclose(magnitude.y, 20 * np.log10(np.abs(point["v(out)"])), rtol=1e-12)
    corner = np.argmin(np.abs(point["frequency"] - 1 / (2 * np.pi * R_OHM * C_F)))
    assert magnitude.y[corner] == pytest.approx(-3.01, abs=0.05) and phase.y[corner] == pytest.approx(-45, abs=1)
    np.testing.assert_allclose(phase.y, -np.degrees(np.arctan(2 * np.pi * point["frequency"] * R_OHM * C_F)),
                               atol=1e-4)
    for suffix in ("png", "html"):
        out = tmp_path / f"ac.{suffix}"
        assert invoke("plot", ac_file, "--sweep", "ac", "--signal", "v(out)", "--out", out).exit_code == 0
    assert (tmp_path / "ac.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "ac.html").read_text()
    assert '"xLog": true' in page and '"yUnit": "dB"' in page and '"name": "phase(v(out)) (deg)"' in page
    state, dom = render_in_browser(tmp_path / "ac.html")
    assert state["ready"] == "1" and state["traces"] == "2" and "violations" not in state
    assert ">-40 °<" in dom and ">-20 dB<" in dom  # plain numbers, no SI prefix
    assert ">10 Hz<" in dom and ">100 Hz<" in dom  # decades of a logarithmic axis

    assert invoke("export", ac_file, "--sweep", "ac", "--format", "csv", "--signal", "v(out)",
                  "--out", tmp_path / "ac.csv").exit_code == 0
    rows = [line.split(",") for line in (tmp_path / "ac.csv").read_text().splitlines()]
    assert rows[0] == ["point", "run", "frequency", "re(v(out))", "im(v(out))"]
    table = np.array([[float(x) for x in row[2:]] for row in rows[1:]])
    np.testing.assert_array_equal(table[:, 1] + 1j * table[:, 2], point["v(out)"])


def test_a_complex_sweep_exports_as_a_complex_raw_file(ac_file, tmp_path):
    point = read_sweep(ac_file, "ac").point((0,))
    result = invoke("export", ac_file, "--sweep", "ac", "--format", "raw", "--out", tmp_path / "ac.raw")
    assert result.exit_code == 0, result.output
    [plot] = read_raw(tmp_path / "ac.raw")
    assert "complex" in plot.flags and plot.kinds["frequency"] == "frequency"
    np.testing.assert_array_equal(plot.vectors["frequency"], point["frequency"])
    for name in ("v(out)", "i(v1)"):
        np.testing.assert_array_equal(plot.vectors[name], point[name])


def test_a_sweep_widens_to_complex_without_losing_earlier_points():
    data = SweepData("mixed", {"x": np.arange(2.0)})
    data.record_ok((0,), {"frequency": np.array([1.0, 2.0]), "v(out)": np.array([0.5, 0.25])}, 0)
    data.record_ok((1,), {"frequency": np.array([1.0, 2.0, 3.0]) + 0j, "v(out)": np.array([1j, 2, 3 - 1j])}, 0)
    assert data.waveforms["v(out)"].dtype == np.complex128 and data.waveforms["frequency"].dtype == np.float64
    np.testing.assert_array_equal(data.point((0,))["v(out)"], [0.5, 0.25])
    np.testing.assert_array_equal(data.point((1,))["v(out)"], [1j, 2, 3 - 1j])


def test_a_zero_point_analysis_is_stored_empty_with_a_note(tmp_path):
    path = tmp_path / "empty.h5"
    pz = run("* RC\nV1 in 0 dc 1 ac 1\nR1 in out 1k\nC1 out 0 1u\n.pz in 0 out 0 vol zer\n.end\n", backend="batch")
    save_result(pz, str(path), "batch")  # ngspice returns the zeros' plot without vectors
    empty = run_as_sweep("ac", {"frequency": np.array([]), "v(out)": np.array([], complex)}, "* deck", {})
    save_sweeps(path, [empty])
    data = read_sweep(path, "ac")
    assert data.waveforms["v(out)"].shape == (1, 0) and data.waveforms["v(out)"].dtype == np.complex128
    assert "without any points" in data.attrs["note"]
    result = invoke("inspect", path)
    assert result.exit_code == 0 and result.output.count("note: the simulator returned this analysis without") == 2
    refused(invoke("plot", path, "--sweep", "ac", "--signal", "v(out)", "--out", tmp_path / "e.png"), "has no samples")


def test_a_sweep_file_with_nan_coordinates_or_a_link_loop_is_a_clear_error(tmp_path):
    good = tmp_path / "good.h5"
    data = SweepData("s", {"x_v": np.array([0.0, 1.0])})
    for i in range(2):
        data.record_ok((i,), {"y_v": np.float64(i)}, data.add_deck("deck"))
    save_sweeps(good, [data])
    nan = tmp_path / "nan.h5"
    shutil.copy(good, nan)
    with h5py.File(nan, "r+") as f:
        f["s/x_v"][0] = np.nan
    refused(invoke("inspect", str(nan)), "finite numbers")
    loop = tmp_path / "loop.h5"
    shutil.copy(good, loop)
    with h5py.File(loop, "r+") as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
    for args in (["inspect", str(loop)], ["export", str(loop), "--sweep", "s", "--format", "csv", "--out",
                                          str(tmp_path / "o.csv")]):
        result = invoke(*args)
        assert result.exit_code == 1 and "error:" in result.output and "internal error" not in result.output, \
            result.output


def test_a_file_kind_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "kind.h5"
    with h5py.File(path, "w") as f:
        f.attrs["file_kind"] = np.array([1, 2, 3])
    refused(invoke("inspect", path))


def test_a_name_that_would_break_a_raw_files_header_is_refused(tmp_path):
    from gaincell.circuits.spice.rawfile import write_raw
    from gaincell.errors import OutputError

    t = np.array([0.0, 1.0])
    for vectors, title in (({"time": t, "v(x)\nNo. Points: 99999\nBinary:": t}, "gaincell"),
                           ({"time": t, "v(a b)": t}, "gaincell"), ({"time": t, "v(x)": t}, "t\nBinary:")):
        with pytest.raises(OutputError, match="cannot go into a raw file's header"):
            write_raw(tmp_path / "x.raw", vectors, title=title)
    write_raw(tmp_path / "ok.raw", {"time": t, "v(x)": t})
    [plot] = read_raw(tmp_path / "ok.raw")
    np.testing.assert_allclose(plot.vectors["v(x)"], t, rtol=1e-15)


def test_file_names_that_are_not_utf8_are_simulated_plotted_and_recorded(tmp_path):
    """A name with undecodable bytes (kept by Python as lone surrogates) is written into the sweep's
    attributes, a figure title and a surrogate's record as U+FFFD, not reported as a damaged file or a bug."""
    import os

    from sweep_helpers import RC_AC

    folder = os.fsdecode(bytes(tmp_path))
    netlist = os.fsdecode(os.fsencode(folder) + b"/rc\xff.cir")
    Path(netlist).write_text(RC_AC)
    sweep = os.fsdecode(os.fsencode(folder) + b"/rc\xfe.h5")
    result = invoke("simulate", netlist, "--out", sweep)
    assert result.exit_code == 0, result.output
    with h5py.File(sweep, "r") as f:
        assert f["ac"].attrs["source_file"].endswith("rc\ufffd.cir")
    for suffix in ("png", "html"):
        out = tmp_path / f"rc.{suffix}"
        result = invoke("plot", sweep, "--sweep", "ac", "--signal", "v(out)", "--out", out)
        assert result.exit_code == 0 and out.stat().st_size > 0, result.output
    assert "rc\ufffd.h5: sweep ac" in (tmp_path / "rc.html").read_text(encoding="utf-8")

    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    surrogate.source_path = os.fsdecode(os.fsencode(folder) + b"/char\xff.h5")
    saved = surrogate.save(tmp_path / "s.h5")
    assert Surrogate.load(saved).source_path.endswith("char\ufffd.h5")

"""Inspect, plot, export: any HDF5 the project writes, read back by gaincell, xarray, ngspice's raw format,
CSV, and a real headless browser for the interactive pages."""
import csv
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.spice.rawfile import read_raw
from gaincell.app.cli import main
from gaincell.plotting import Figure, Panel, Trace, render_html
from gaincell.store import read_sweep
from browser_helpers import render_in_browser
from sweep_helpers import FaultyRC

R_VALUES = [1e3, 2e3, 3e3]
C_VALUES = [1e-9, 2e-9]


@pytest.fixture(scope="module")
def faulty_file(tmp_path_factory):
    """A real sweep with one point that never converges (its ngspice message is recorded)."""
    out = tmp_path_factory.mktemp("inspect") / "faulty.h5"
    run_sweep(Sweep("faulty", FaultyRC(), {"r": R_VALUES, "c": C_VALUES}, chunk_size=3), out, workers=2,
              progress=False)
    return out


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_inspect_lists_signals_units_provenance_and_failures(faulty_file):
    code, text = invoke("inspect", faulty_file)
    assert code == 0, text
    assert "sweep 'faulty': testbench FaultyRC, simulator ngspice" in text
    assert "coordinates: r (3: 1 k .. 3 k); c (2: 1 n .. 2 n)" in text
    assert "v(out) [V]" in text and "time [s]" in text and "i(v.vdrive) [A]" in text and "v_final" in text
    assert "points: 6 total, 5 completed, 1 failed, 0 missing" in text
    assert re.search(r"failed \(2, 0\) \(r=3 k, c=1 n\): .*timestep too small", text, re.IGNORECASE)
    code, text = invoke("inspect", faulty_file.with_name("nothing.h5"))
    assert code != 0 and "does not exist" in text


def test_plot_png_and_html_and_bad_signal(faulty_file, tmp_path):
    code, text = invoke("plot", faulty_file, "--sweep", "faulty", "--signal", "v(out)", "--points", "0,5",
                        "--out", tmp_path / "w.png")
    assert code == 0, text
    assert (tmp_path / "w.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, text = invoke("plot", faulty_file, "--sweep", "faulty", "--signal", "v(out)", "--points", "0,5",
                        "--out", tmp_path / "w.html")
    page = (tmp_path / "w.html").read_text()
    assert code == 0 and "v(out) @ r=1 k" in page and not re.search(r"(src|href)=|https?://(?!www.w3.org/2000/svg)", page)
    code, text = invoke("plot", faulty_file, "--sweep", "faulty", "--signal", "v(nope)", "--out", tmp_path / "x.png")
    assert code != 0 and "v(nope)" in text and "v(out)" in text
    code, text = invoke("plot", faulty_file, "--sweep", "faulty", "--signal", "v(out)", "--points", "4",
                        "--out", tmp_path / "x.png")
    assert code != 0 and "did not complete" in text


def test_export_raw_round_trips_and_csv(faulty_file, tmp_path):
    data = read_sweep(faulty_file, "faulty")
    code, text = invoke("export", faulty_file, "--sweep", "faulty", "--format", "raw", "--out", tmp_path / "f.raw")
    assert code == 0, text
    plots = read_raw(tmp_path / "f.raw")
    assert len(plots) == 5  # the completed points, one plot each
    first = data.point((0, 0))
    assert np.array_equal(plots[0].vectors["time"], first["time"])
    assert np.array_equal(plots[0].vectors["v(out)"], first["v(out)"])
    if shutil.which("ngspice"):  # ngspice itself loads the file
        deck = tmp_path / "load.cir"
        deck.write_text(f"* load the export\n.control\nload {tmp_path / 'f.raw'}\nprint length(time)\nquit\n.endc\n.end\n")
        check = subprocess.run(["ngspice", "-b", str(deck)], capture_output=True, text=True, timeout=60)
        assert "length(time) = " in check.stdout, check.stdout + check.stderr
    code, text = invoke("export", faulty_file, "--sweep", "faulty", "--format", "csv", "--points", "1",
                        "--out", tmp_path / "f.csv")
    rows = list(csv.reader(open(tmp_path / "f.csv")))
    assert rows[0] == ["point", "r", "c", "time", "i(v.vdrive)", "v(out)"]
    assert len(rows) == 1 + len(data.point((0, 1))["time"])


def test_every_sweep_opens_with_xarray(faulty_file):
    xr = pytest.importorskip("xarray")
    ds = xr.open_dataset(faulty_file, group="faulty", engine="h5netcdf")
    assert ds["v(out)"].dims == ("r", "c", "sample") and ds["status"].values.sum() == 5 + 2


def test_html_page_renders_its_traces_offline_in_chromium(faulty_file, tmp_path):
    page = tmp_path / "w.html"
    invoke("plot", faulty_file, "--sweep", "faulty", "--signal", "v(out)", "--signal", "i(v.vdrive)", "--points", "0,1,5",
           "--out", page)
    shot = tmp_path / "w-screenshot.png"
    state, dom = render_in_browser(page, shot)
    assert state.get("ready") == "1", dom[:2000]
    assert state["traces"] == "6" and dom.count('class="trace"') == 6  # 2 signals x 3 points drawn as paths
    assert state["resources"] == "0" and "violations" not in state  # no request was made or attempted
    assert shot.stat().st_size > 10_000  # the screenshot stays in the test's folder for a look
    # the check can fail: a page that tries to load something from the network is caught
    leaky = tmp_path / "leaky.html"
    render_html(Figure("t", [Panel([Trace("a", np.arange(3.0), np.arange(3.0))])]), leaky)
    leaky.write_text(leaky.read_text().replace("</body>", '<img src="http://example.invalid/x.png"></body>'))
    state, _ = render_in_browser(leaky)
    assert state.get("violations") == "1"


def test_a_labelled_coordinate_is_shown_by_its_names():
    """A corner coordinate (integer indices with names) reads as its names, other coordinates with units."""
    from gaincell.app.inspection import point_label
    from gaincell.sweep_data import SweepData

    data = SweepData("read", {"corner": np.arange(2), "temp_c": np.array([27.0, 85.0])},
                     labels={"corner": ["tt", "ss"]})
    assert point_label(data, (1, 0)) == "corner=ss, temp_c=27 C"

"""Outputs never destroy inputs: refused destinations, atomic writes, locks, kill -9 at any moment."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.circuits.characterize import characterize
from gaincell.app.cli import main
from gaincell.design import load_design
from gaincell.errors import OutputError
from gaincell.outputs import SURROGATE, SWEEP_FILE, atomic_path, guard_output, output_lock
from gaincell.periphery import Grid
from gaincell.resources import data_path
from gaincell.surrogate.file import Surrogate

DECK = "rc\nv1 a 0 1\nr1 a b 1k\nc1 b 0 1n\n.tran 10n 1u\n.end\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *words):
    """Exit 1 with one `error:` paragraph naming the problem, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output
    return result


@pytest.fixture()
def deck(tmp_path):
    path = tmp_path / "rc.cir"
    path.write_text(DECK)
    return path


@pytest.fixture(scope="module")
def char_file(tmp_path_factory):
    """A real characterization (16 x 3 x 6 read points) for the kill -9 test of `fit`."""
    out = tmp_path_factory.mktemp("char") / "char.h5"
    characterize(load_design("cmos-generic"), out, Grid(pulse_levels=3, retention_stop_s=20e-3), workers=2,
                 progress=False)
    return out


@pytest.fixture()
def sweep_file(tmp_path):
    """A copy of a gaincell characterization (the golden cell sweeps): what `fit` reads, for the refusals that
    come before any reading."""
    path = tmp_path / "char.h5"
    shutil.copyfile(Path(__file__).parent / "golden" / "cell_golden.h5", path)
    return path


def test_out_equal_to_the_input_netlist_is_refused_and_the_netlist_kept(deck):
    refused(invoke("simulate", deck, "--out", deck), "is also an input")
    assert deck.read_text() == DECK


def test_out_through_a_symlink_or_hard_link_to_an_input_is_refused(deck, tmp_path):
    (tmp_path / "link.h5").symlink_to(deck)
    os.link(deck, tmp_path / "hard.h5")
    refused(invoke("simulate", deck, "--out", tmp_path / "link.h5"), "is also an input")
    refused(invoke("simulate", deck, "--out", tmp_path / "hard.h5"), "is also an input")
    assert deck.read_text() == DECK


@pytest.mark.parametrize("existing", ["text", "foreign_hdf5", "surrogate"])
def test_an_existing_file_of_another_kind_is_kept_unless_forced(deck, tmp_path, existing):
    out = tmp_path / "result.h5"
    if existing == "text":
        out.write_text("my notes\n")
    elif existing == "foreign_hdf5":
        with h5py.File(out, "w") as f:
            f["data"] = np.arange(3)
    else:
        out.write_bytes(data_path("paper_reference.h5").read_bytes())
    before = out.read_bytes()
    refused(invoke("simulate", deck, "--out", out), "--force")
    assert out.read_bytes() == before
    assert invoke("simulate", deck, "--out", out, "--force").exit_code == 0
    with h5py.File(out) as f:
        assert "tran" in f


def test_a_sweep_file_is_extended_and_a_surrogate_replaced_without_force(deck, tmp_path):
    out = tmp_path / "result.h5"
    assert invoke("simulate", deck, "--out", out).exit_code == 0
    assert invoke("simulate", deck, "--out", out).exit_code == 0  # a gaincell sweep file: its kind
    surrogate = tmp_path / "s.h5"
    surrogate.write_bytes(data_path("paper_reference.h5").read_bytes())
    guard_output(surrogate, SURROGATE)  # replacing a surrogate with a surrogate is allowed
    with pytest.raises(OutputError, match="not a gaincell characterization"):
        guard_output(surrogate, SWEEP_FILE)


def test_fit_refuses_its_input_as_output_and_foreign_report_files(sweep_file, tmp_path):
    before = sweep_file.read_bytes()
    refused(invoke("fit", sweep_file, "--out", sweep_file), "is also an input")
    assert sweep_file.read_bytes() == before
    report = tmp_path / "rep"
    report.mkdir()
    (report / "s-fit.txt").write_text("a text file that is not a gaincell report\n")
    refused(invoke("fit", sweep_file, "--out", tmp_path / "s.h5", "--report", report), "s-fit.txt", "--force")
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("verb", ["plot", "export"])
def test_plot_and_export_keep_foreign_files(deck, tmp_path, verb):
    result = tmp_path / "r.h5"
    assert invoke("simulate", deck, "--out", result).exit_code == 0
    target = tmp_path / ("figure.png" if verb == "plot" else "table.csv")
    target.write_bytes(b"\x89PNG\r\n\x1a\na photo from a camera" if verb == "plot" else b"name,value\nx,1\n")
    before = target.read_bytes()
    extra = ["--signal", "v(b)"] if verb == "plot" else ["--format", "csv"]
    refused(invoke(verb, result, "--sweep", "tran", *extra, "--out", target), "not written by gaincell")
    assert target.read_bytes() == before
    refused(invoke(verb, result, "--sweep", "tran", *extra, "--out", result), "is also an input")
    target.unlink()
    assert invoke(verb, result, "--sweep", "tran", *extra, "--out", target).exit_code == 0
    assert invoke(verb, result, "--sweep", "tran", *extra, "--out", target).exit_code == 0  # ours: replaced


def test_eval_keeps_a_foreign_json_before_loading_any_model(tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}\n')
    refused(invoke("eval", "--model", tmp_path / "nowhere", "--data", notes, "--out", notes), "is also an input")
    other = tmp_path / "other.json"
    other.write_text('{"mine": 2}\n')
    refused(invoke("eval", "--model", tmp_path / "nowhere", "--data", notes, "--out", other), "not written by gaincell")
    assert other.read_text() == '{"mine": 2}\n'


def test_unwritable_destinations_are_clear_errors(deck, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    refused(invoke("simulate", deck, "--out", blocker / "r.h5"), "not a folder")
    folder = invoke("simulate", deck, "--out", tmp_path)  # click's own usage error: exit 2, no traceback
    assert folder.exit_code == 2 and "is a directory" in folder.output and "Traceback" not in folder.output
    refused(invoke("attention", data_path("paper_reference.h5"), "--out", blocker / "sub"), "not a folder")


def test_cli_numbers_parse_strictly(tmp_path):
    for bad in ("10x", "nan", "inf", "1 V", "--", "1e999"):
        result = invoke("simulate", "cell", "--pulse", bad, "--out", tmp_path / "c.h5")
        assert result.exit_code == 2 and "--pulse" in result.output and "Traceback" not in result.output, bad
    assert not (tmp_path / "c.h5").exists()
    from gaincell.app.commands.options import parse_si

    assert parse_si("10n", "p", "s") == pytest.approx(1e-8)
    assert parse_si("10ns", "p", "s") == pytest.approx(1e-8)
    assert parse_si("2.5meg", "r", "ohm") == pytest.approx(2.5e6)
    assert parse_si("4kohm", "r", "ohm") == pytest.approx(4e3)


def test_atomic_path_keeps_the_old_file_on_error_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stopped")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    stale = tmp_path / ".a.txt.999999999.tmp.txt"  # left by a process that no longer exists
    stale.write_text("x")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_second_writer_of_the_same_file_is_refused(deck, tmp_path):
    out = tmp_path / "r.h5"
    with output_lock(out):
        done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", "simulate", str(deck), "--out", str(out)],
                              capture_output=True, text=True)
    assert done.returncode == 1 and "another gaincell process is writing" in done.stderr, done.stderr
    assert not out.exists()
    assert invoke("simulate", deck, "--out", out).exit_code == 0  # the lock is gone with its holder


def _complete_png(path):
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


# Where a `gaincell fit` run is killed, in the order it gets there: a file (a glob under the output folder; {pid}
# is the run's process id) that the run itself wrote, seen by polling every half millisecond.
FIT_KILL_POINTS = {
    "fitting (the output lock held, nothing written yet)": ".s.h5.lock",
    "inside the report figure's write": ".s-fit.png.{pid}.tmp.png",
    "the figure in place, its HTML page, the text report and the surrogate next": "s-fit.png",
    "the text report in place, the surrogate being written": "s-fit.txt",
}


def _written_since(path: Path, started: float) -> bool:
    try:
        return path.stat().st_mtime >= started
    except FileNotFoundError:  # renamed or removed since it was listed
        return False


def _kill_when_written(command, folder: Path, pattern: str) -> bool:
    """Run `command` and kill -9 it as soon as a file matching `pattern` that it wrote appears in `folder`; False
    when the run finished first (a window too short for polling)."""
    started = time.time() - 0.05  # file times lag the clock by a tick
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    glob = pattern.format(pid=proc.pid)
    while proc.poll() is None:
        if any(_written_since(path, started) for path in folder.glob(glob)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    assert proc.returncode == 0
    return False


@pytest.mark.slow
def test_kill_9_of_fit_at_each_step_never_leaves_a_half_written_file(char_file, tmp_path):
    """kill -9 of `gaincell fit` at each step of its work (deterministic kill points, not random moments that
    depend on the machine's load): each destination is absent or whole, and a re-run in the same folder (with
    what the killed runs left there) gives the uninterrupted run's files."""
    reference = tmp_path / "reference"
    reference.mkdir()
    assert invoke("fit", char_file, "--out", reference / "s.h5").exit_code == 0
    expected = Surrogate.load(reference / "s.h5")
    expected_text = (reference / "s-fit.txt").read_text()
    destinations = sorted(p.name for p in reference.iterdir())  # the surrogate and every report file
    assert {"s.h5", "s-fit.png", "s-fit.html", "s-fit.txt"} == set(destinations)
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "gaincell.app.cli", "fit", str(char_file), "--out", str(work / "s.h5")]
    landed = []
    for phase, pattern in FIT_KILL_POINTS.items():
        if _kill_when_written(command, work, pattern):
            landed.append(phase)
        for name in destinations:  # each destination is absent or whole
            path = work / name
            if not path.exists():
                continue
            if name == "s.h5":
                np.testing.assert_allclose(Surrogate.load(path)["multiply"].values, expected["multiply"].values,
                                           rtol=1e-9)
            elif name.endswith(".png"):
                assert _complete_png(path)
            elif name.endswith(".html"):
                assert path.read_text().rstrip().endswith("</html>"), name
            else:
                assert path.read_text() == expected_text
    print(f"kills landed: {landed}")  # the later steps take milliseconds: a run may finish before its kill
    assert landed[:1] == list(FIT_KILL_POINTS)[:1], landed  # the fit itself lasts long enough to be hit
    subprocess.run(command, capture_output=True, check=True)
    np.testing.assert_allclose(Surrogate.load(work / "s.h5")["multiply"].values, expected["multiply"].values,
                               rtol=1e-9)  # the same fit on the same data: only float round-off may differ
    assert _complete_png(work / "s-fit.png") and (work / "s-fit.txt").read_text() == expected_text
    assert sorted(p.name for p in work.iterdir()) == destinations  # no temporary or lock file left


def test_force_never_replaces_a_file_the_netlist_includes(tmp_path):
    (tmp_path / "models.inc").write_text("* models\n")
    deck = tmp_path / "deck.cir"
    deck.write_text("deck\n.include models.inc\n" + DECK.split("\n", 1)[1])
    refused(invoke("simulate", deck, "--out", tmp_path / "models.inc", "--force"), "is also an input")
    refused(invoke("simulate", deck, "--out", tmp_path / "r.h5", "--png", tmp_path / "models.inc", "--force"),
            "is also an input")
    assert (tmp_path / "models.inc").read_text() == "* models\n"


@pytest.mark.parametrize("signals, scale, phrases", [
    (["charge_c"], 1e20, ["sweep 'read': charge_c =", "outside the plausible +-1e-06 C"]),
    (["e_read_j", "e_bitline_j", "e_drive_j", "e_vdd_j"], -1e3, ["component 'energy'", "is implausible"]),
])
def test_fit_of_implausible_sweeps_is_refused_and_writes_nothing(char_file, tmp_path, signals, scale, phrases):
    """Charges no cell gives (a fit would converge to nothing) and negative energies (an implausible surrogate)
    are refused naming the file; neither the surrogate nor any report file is written."""
    edited = tmp_path / "edited.h5"
    shutil.copyfile(char_file, edited)
    with h5py.File(edited, "a") as f:
        for signal in signals:
            f["read"][signal][...] = f["read"][signal][()] * scale
    out = tmp_path / "out"
    out.mkdir()
    refused(invoke("fit", edited, "--out", out / "s.h5"), str(edited), *phrases)
    assert not list(out.iterdir())

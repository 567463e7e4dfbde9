"""The trust policy for SPICE text (circuits/spice/trust.py): nothing a netlist or a file it reads holds can
make ngspice run a command, and the files ngspice reads are the files the policy checked.

Marker files prove it: every hostile line would create one if ngspice ran it; each marker test first shows
that plain ngspice does run the hostile text, then that gaincell does not.
"""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead, cell_transient
from gaincell.circuits.spice import prepare, run
from gaincell.circuits.spice.engines import BatchEngine
from gaincell.circuits.spice.netlist import read_netlist_file
from gaincell.circuits.spice.trust import MAX_INCLUDE_DEPTH
from gaincell.circuits.spice.workers import Task, WorkerPool, simulate_in_worker
from gaincell.design import load_design
from gaincell.errors import NetlistError
from gaincell.resources import netlist_path

BODY = "r1 a 0 1k\nv1 a 0 1\n.op\n"


def deck(*lines: str) -> str:
    return "\n".join(["policy test", *lines, BODY])


def hostile(marker: Path) -> str:
    """A .control block that creates `marker` when ngspice runs it."""
    return f".control\nshell touch {marker}\n.endc\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------
# The rules, in the netlist itself

@pytest.mark.parametrize("line", [".control", "  .CONTROL", ".controls", "\t.endc", ".Endc"])
def test_control_lines_are_refused_in_any_spelling_ngspice_accepts(line):
    with pytest.raises(NetlistError, match=r"netlist line 2: '\.control'/'\.endc' blocks are not allowed.*"
                                           r"plain ngspice outside gaincell"):
        prepare(deck(line, "echo hi", ".endc"))


@pytest.mark.parametrize("line", ["*# echo hi", "  *#echo hi", "*#"])
def test_script_lines_are_refused(line):
    with pytest.raises(NetlistError, match=r"netlist line 2: '\*#' lines are not allowed"):
        prepare(deck(line))


@pytest.mark.parametrize("line, word", [("* calls SHELL", "SHELL"), ("r9 system 0 1k", "system"),
                                        ("r9 a 0 1k ; shell", "shell")])
def test_shell_and_system_words_are_refused_anywhere(line, word):
    with pytest.raises(NetlistError, match=f"netlist line 2: the word '{word}' is not allowed"):
        prepare(deck(line))


def test_longer_words_holding_them_are_fine():
    assert "subsystem" in prepare(deck("* subsystem shells_out_nothing", "r9 subsystem 0 1k")).text


def test_source_name_and_line_are_named():
    with pytest.raises(NetlistError, match=r"^top\.cir line 3: '\*#'"):
        prepare("title\n* ok\n*# echo\n" + BODY, source_name="top.cir")


def test_lines_after_end_never_reach_ngspice():
    text = prepare(deck() + ".end\n.control\nshell touch /tmp/x\n.endc\n").text
    assert ".control" not in text and text.endswith(".end\n")


@pytest.mark.parametrize("bad, what", [("\x00", "a NUL byte"), ("\x1b", "the control character"),
                                       ("\r", "the control character"), ("\u2028", "the control character"),
                                       ("\udcff", "it is not UTF-8")])
def test_binary_data_in_netlist_text_is_refused_with_its_line(bad, what):
    with pytest.raises(NetlistError, match=f"netlist line 3: binary data \\({what}"):
        prepare(f"title\nr1 a 0 1k\nr2 a{bad}b 0 1k\n.op\n")


@pytest.mark.parametrize("extra", [{"save": ["v(a)\n.control"]}, {"save": ["v(a\n.control)"]},
                                   {"options": {"gmin": "1\n.control"}}, {"options": {"gmin\n.control\nx": 1}}])
def test_saves_and_options_cannot_add_lines(extra):
    with pytest.raises(NetlistError, match="^(save|options): "):
        prepare(deck(), **extra)


def test_windows_line_ends_are_fine():
    assert prepare(deck().replace("\n", "\r\n")).text == prepare(deck()).text


# ---------------------------------------------------------------------------------------------------
# Files the netlist reads

def test_control_block_in_an_included_file_names_file_line_and_chain(tmp_path):
    write(tmp_path / "deck.cir", "* models\n\n" + hostile(tmp_path / "m"))
    with pytest.raises(NetlistError) as info:
        prepare(deck("* first", ".include deck.cir"), base_dir=tmp_path, source_name="top.cir")
    assert str(info.value).startswith(f"{tmp_path / 'deck.cir'} line 3 (included from top.cir line 3): "
                                      "'.control'/'.endc' blocks are not allowed")


def test_nested_relative_includes_resolve_from_the_including_file(tmp_path):
    write(tmp_path / "lib" / "top.lib", "* top\n.include sub/mid.lib\n")
    write(tmp_path / "lib" / "sub" / "mid.lib", "* mid\n.inc '../leaf.lib'\n")
    leaf = write(tmp_path / "lib" / "leaf.lib", "* leaf\n*# echo from the leaf\n")
    with pytest.raises(NetlistError) as info:
        prepare(deck(f".include {tmp_path / 'lib' / 'top.lib'}"))
    # the path as ngspice builds it (joined to the including file's folder, `..` and links not resolved)
    assert str(info.value) == (f"{tmp_path / 'lib' / 'sub' / '..' / 'leaf.lib'} line 2 (included from {tmp_path / 'lib' / 'sub' / 'mid.lib'} line 2, "
                               f"included from {tmp_path / 'lib' / 'top.lib'} line 2, included from netlist "
                               f"line 2): " + str(info.value).split(": ", 1)[1])
    leaf.write_text("* leaf\nr9 a 0 2k\n")
    assert f'.include "{tmp_path / "lib" / "top.lib"}"' in prepare(deck(".include lib/top.lib"), base_dir=tmp_path).text


def test_lib_sections_every_section_is_checked_and_selected_references_must_exist(tmp_path):
    lib = write(tmp_path / "corners.lib", "* corners\n.lib tt\nr9 a 0 1k\n.endl tt\n.lib ff\n" + hostile(tmp_path / "m")
                + ".endl ff\n")
    with pytest.raises(NetlistError, match=r"corners\.lib line 6 \(section 'tt' read from netlist line 2\)"):
        prepare(deck(f".lib {lib} tt"))
    lib.write_text("* corners\n.lib tt\n.include tt.mod\n.endl\n.lib ff\n.include ff.mod\n.endl\n")
    write(tmp_path / "tt.mod", "* tt\n")
    assert prepare(deck(f".LIB '{lib}' TT")).text  # ff.mod is missing, but nobody selects ff
    with pytest.raises(NetlistError, match=r"ff\.mod \(included from .*corners\.lib line 6, section 'ff' read "
                                           r"from netlist line 2\): file not found"):
        prepare(deck(f".lib {lib} ff"))
    write(tmp_path / "ff.mod", "* ff\n" + hostile(tmp_path / "m"))
    with pytest.raises(NetlistError, match=r"ff\.mod line 2"):  # exists in an unselected section: still checked
        prepare(deck(f".lib {lib} tt"))
    with pytest.raises(NetlistError, match="no section 'ss' in this library"):
        prepare(deck(f".lib {lib} ss"))


def test_include_cycles_and_depth_are_bounded(tmp_path):
    write(tmp_path / "a.lib", "* a\n.include b.lib\n")
    write(tmp_path / "b.lib", "* b\n.include a.lib\n")
    with pytest.raises(NetlistError, match=r"a\.lib \(included from .*b\.lib line 2, included from .*a\.lib "
                                           r"line 2, included from netlist line 2\): include cycle"):
        prepare(deck(".include a.lib"), base_dir=tmp_path)
    write(tmp_path / "self.lib", "* self\n.lib self.lib s\n.lib s\n.lib self.lib s\n.endl\n")
    with pytest.raises(NetlistError, match="include cycle"):
        prepare(deck(".lib self.lib s"), base_dir=tmp_path)
    for k in range(MAX_INCLUDE_DEPTH + 2):
        write(tmp_path / f"d{k}.lib", f"* level {k}\n.include d{k + 1}.lib\n")
    write(tmp_path / f"d{MAX_INCLUDE_DEPTH + 2}.lib", "* bottom\n")
    with pytest.raises(NetlistError, match=f"nest deeper than {MAX_INCLUDE_DEPTH} files"):
        prepare(deck(".include d0.lib"), base_dir=tmp_path)


def test_a_file_read_twice_is_no_cycle(tmp_path):
    write(tmp_path / "common.lib", "* shared models\n")
    write(tmp_path / "x.lib", "* x\n.include common.lib\n")
    write(tmp_path / "y.lib", "* y\n.include common.lib\n.lib self.lib tt\n")
    write(tmp_path / "self.lib", "* sections of one file may read each other\n.lib tt\n.lib self.lib base\n.endl\n"
                                 ".lib base\n.include common.lib\n.endl\n")
    assert prepare(deck(".include x.lib", ".include y.lib", ".include x.lib"), base_dir=tmp_path).text


@pytest.mark.parametrize("content, message", [
    (b"* models\nr1 a 0 1k\x00\n", r"binary data \(a NUL byte\)"),
    (b"* models\n* caf\xe9\n", r"binary data \(byte 0xe9 is not UTF-8\)"),
])
def test_binary_included_files_are_refused_with_their_line(tmp_path, content, message):
    (tmp_path / "m.lib").write_bytes(content)
    with pytest.raises(NetlistError, match=r"m\.lib line 2 \(included from netlist line 2\): " + message):
        prepare(deck(".include m.lib"), base_dir=tmp_path)


def test_missing_folder_and_device_includes_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.lib")  # reading it would hang: it must be refused without reading
    cases = {"missing.lib": "file not found", ".": "is a folder", "pipe.lib": "not a regular file",
             "/dev/zero": "not a regular file"}
    for name, message in cases.items():
        with pytest.raises(NetlistError, match=message):
            prepare(deck(f".include {name}"), base_dir=tmp_path)
    for line in [".include", ".lib", '.include"x.lib"', f".lib '{tmp_path}/a b.lib' tt"]:
        with pytest.raises(NetlistError, match="netlist line 2: '.(inc|lib)"):
            prepare(deck(line), base_dir=tmp_path)
    with pytest.raises(NetlistError, match="defines a library section"):
        prepare(deck(".lib tt"))


def test_shipped_libraries_and_the_decks_gaincell_builds_pass():
    shipped = sorted(p for p in netlist_path("cmos_generic.lib").parent.iterdir() if p.suffix in (".lib", ".sub"))
    assert len(shipped) >= 5
    prepare(deck(*(f".include {p}" for p in shipped)))
    for name in ("cmos-generic", "igzo-generic"):
        design = load_design(name)
        circuit, analysis, save = cell_transient(design, 0.5, 5e-9)
        prepare(circuit, analysis, save=save)
        CellRead(design).netlist([{"stored_v": 0.3, "pulse_s": 5e-9, "vin_v": design.v_in_v}])


# ---------------------------------------------------------------------------------------------------
# A design's model library

@pytest.fixture
def hostile_design(tmp_path):
    """The cmos-generic design with its model library followed by a control block, and the marker."""
    marker = tmp_path / "ran"
    library = write(tmp_path / "pdk" / "models.lib", netlist_path("cmos_generic.lib").read_text() + hostile(marker))
    return dataclasses.replace(load_design("cmos-generic"), model_libraries=(str(library),)), library, marker


def test_design_library_with_a_control_block_is_refused_for_a_cell(hostile_design):
    design, library, marker = hostile_design
    circuit, analysis, save = cell_transient(design, 0.5, 5e-9)
    with pytest.raises(NetlistError, match=rf"{library} line \d+ \(included from netlist line \d+\): '\.control'"):
        run(circuit, analysis, save=save)
    library.write_text("* models\n*# shell touch " + str(marker) + "\n.model nmos_gen nmos level=54\n")
    with pytest.raises(NetlistError, match=rf"{library} line 2 .*'\*#' lines are not allowed"):
        run(*cell_transient(design, 0.5, 5e-9)[:2], backend="batch")
    assert not marker.exists()


def test_design_library_with_a_control_block_stops_a_sweep(hostile_design, tmp_path):
    design, library, marker = hostile_design
    sweep = Sweep("read", CellRead(design), {"stored_v": [0.3, 0.6], "pulse_s": [5e-9], "vin_v": [design.v_in_v]})
    with pytest.raises(NetlistError, match=rf"{library} line \d+ .*'\.control'"):
        run_sweep(sweep, tmp_path / "out.h5", workers=1, progress=False)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Negative R, C, L through .param

@pytest.mark.parametrize("params, element, shown", [
    (".param rneg=-1k", "R1 a b {rneg}", "'{rneg}' (= -1000)"),
    (".param rneg = -1k", "R1 a b rneg", "'rneg' (= -1000)"),
    (".param r=1k", "R1 a b {-r}", "'{-r}' (= -1000)"),
    (".param rneg=-1k", "R1 a b {2*rneg}", "'{2*rneg}' (= -2000)"),
    (".param r=1k s={r/2}", "R1 a b '(s - r)'", "\"'(s - r)'\" (= -500)"),
    (".param rneg=-1k", "R1 a b r={rneg}", "'{rneg}' (= -1000)"),
    (".param rneg=-1k", "R1 a b\n+ {rneg}", "'{rneg}' (= -1000)"),
    (".param cap=-2p", "C1 b 0 {cap}", "'{cap}' (= -2e-12)"),
    (".param a=1u\n.param b={-a}", "L1 b 0 {b}", "'{b}' (= -1e-06)"),
    ("* literal", "C1 b 0 -1n", "'-1n'"),
])
def test_negative_passive_values_are_refused_through_param(params, element, shown):
    kind = {"r": "resistance", "c": "capacitance", "l": "inductance"}[element[0].lower()]
    name = element.split()[0]
    with pytest.raises(NetlistError, match=re.escape(f"negative {kind} {shown} on element '{name}'")):
        prepare(deck(params, element))


@pytest.mark.parametrize("params, element", [
    (".param r=1k", "R1 a b {r}"),
    (".param rneg=-1k", "R1 a b {rneg*rneg}"),
    (".param rneg=-1k", "R1 a b {abs(rneg)}"),  # a function: left to ngspice
    (".param a = -1 + 3", "R1 a b {a}"),
    (".subckt s a b params: x=1k\n.param y={-x}", "R1 a b {y}\n.ends"),  # set per instance: left to ngspice
    (".param loop={loop}", "R1 a b {loop}"),
    (".param rneg=-1k", "R1 a b {rneg ** 2}"),
])
def test_values_that_are_positive_or_unknown_here_are_left_alone(params, element):
    assert prepare(deck(params, element)).text


# ---------------------------------------------------------------------------------------------------
# Reading a user's netlist file

def test_read_netlist_file_is_strict(tmp_path):
    good = tmp_path / "good.cir"
    good.write_bytes(b"title\r\nr1 a 0 1k\r\n.op\r\n")
    assert read_netlist_file(good) == "title\r\nr1 a 0 1k\r\n.op\r\n"
    (tmp_path / "nul.cir").write_bytes(b"title\nr1 a 0 1k\n\x00\n")
    (tmp_path / "latin1.cir").write_bytes("title\n* \u00b5A\n".encode("latin-1"))
    (tmp_path / "escape.cir").write_bytes(b"title\n\x1b[31m\n")
    os.mkfifo(tmp_path / "pipe.cir")
    cases = {"nul.cir": r"nul\.cir line 3: binary data \(a NUL byte\)",
             "latin1.cir": r"latin1\.cir line 2: binary data \(byte 0xb5 is not UTF-8\)",
             "escape.cir": r"escape\.cir line 2: binary data \(the control character '\\x1b'\)",
             "missing.cir": r"missing\.cir: file not found", ".": "is a folder",
             "pipe.cir": "not a regular file"}
    for name, message in cases.items():
        with pytest.raises(NetlistError, match=message):
            read_netlist_file(tmp_path / name)


# ---------------------------------------------------------------------------------------------------
# What ngspice reads on its own: .spiceinit, and relative paths from its working folder

@pytest.fixture
def hostile_folders(tmp_path, monkeypatch):
    """A working folder, a home folder and $SPICE_USERINIT_DIR, each with a .spiceinit that creates a marker;
    the test runs in that working folder."""
    marker = tmp_path / "spiceinit-ran"
    for name in ("cwd", "home", "userinit"):
        write(tmp_path / name / ".spiceinit", f"shell touch {marker}\n")
    write(tmp_path / "cwd" / "spice.rc", f"shell touch {marker}\n")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPICE_USERINIT_DIR", str(tmp_path / "userinit"))
    return marker


def run_in_fresh_worker(netlist, backend):
    """A new worker process started from the current folder (libngspice reads .spiceinit when it starts)."""
    with WorkerPool(workers=1) as pool:
        [(_, output)] = list(pool.run([Task(0, simulate_in_worker, (netlist, backend, 30.0), 30.0)]))
    assert not isinstance(output, Exception), output
    return output


def test_spiceinit_files_are_not_read_by_either_backend(hostile_folders):
    marker = hostile_folders
    (Path.cwd() / "plain.cir").write_text(deck())
    subprocess.run(["ngspice", "-b", "plain.cir"], capture_output=True, timeout=30)
    assert marker.exists(), "plain ngspice should have run the hostile .spiceinit (the test's premise)"
    marker.unlink()
    probe = ("import os; os.environ['NGSPICE_LIBRARY_PATH'] = __import__('gaincell.circuits.spice.engines', "
             "fromlist=['x']).libngspice_path(); from PySpice.Spice.NgSpice.Shared import NgSpiceShared; "
             "NgSpiceShared.new_instance()")
    subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert marker.exists(), "plain libngspice should have run the hostile .spiceinit (the test's premise)"
    marker.unlink()
    netlist = prepare(deck())
    assert BatchEngine().simulate(netlist, timeout=30).plots[-1][1]["v(a)"][0] == 1.0
    assert run_in_fresh_worker(netlist, "shared").plots[-1][1]["v(a)"][0] == 1.0
    assert not marker.exists()


def test_ngspice_reads_the_relative_include_the_policy_checked(tmp_path, monkeypatch):
    """ngspice looks for a relative path in its working folder before the including file's folder: a
    same-named file in the user's folder must be neither run nor used."""
    marker = tmp_path / "cwd-file-ran"
    write(tmp_path / "pdk" / "top.lib", "* top\n.include models.lib\n")
    write(tmp_path / "pdk" / "models.lib", "* the checked one\n.param rload=4k\n")
    write(tmp_path / "cwd" / "models.lib", "* a planted one\n.param rload=1\n" + hostile(marker))
    monkeypatch.chdir(tmp_path / "cwd")
    netlist = prepare(f"t\n.include {tmp_path / 'pdk' / 'top.lib'}\nr1 a 0 {{rload}}\nv1 a 0 1\n.op\n")
    for output in (BatchEngine().simulate(netlist, timeout=30), run_in_fresh_worker(netlist, "shared")):
        assert output.plots[-1][1]["i(v1)"][0] == pytest.approx(-1 / 4e3)
    assert not marker.exists()


@pytest.mark.parametrize("first", [".include {evil}", ".lib {evil} tt", "*ng_script", "*NG_SCRIPT echo"])
def test_a_first_line_that_ngspice_acts_on_is_refused(tmp_path, first):
    """ngspice reads a card on the title line, and `*ng_script` turns the whole file into a script."""
    evil = write(tmp_path / "evil.lib", "* e\n.lib tt\n" + hostile(tmp_path / "ran") + ".endl tt\n")
    text = first.format(evil=evil) + "\n" + BODY
    with pytest.raises(NetlistError, match="line 1: .*(title|script)"):
        prepare(text)
    assert prepare(".title a plain title\n" + BODY).title == "a plain title"


def test_a_comment_mark_in_an_include_name_is_refused(tmp_path):
    """ngspice cuts `evil.inc;z` at the ';' and reads evil.inc, so the name checked must be the name read."""
    write(tmp_path / "evil.inc", hostile(tmp_path / "ran"))
    write(tmp_path / "evil.inc;z", "* benign\n")
    for name in ("evil.inc;z", "evil.inc$z", "x//evil.inc"):
        with pytest.raises(NetlistError, match="comment"):
            prepare(deck(f".include {name}"), base_dir=tmp_path)


def test_includes_through_a_linked_folder_are_read_from_that_folder(tmp_path):
    """A file reached through a linked folder reads its relative includes from the link's folder, as ngspice
    does, not from the target's: the file that ngspice would read is the one checked."""
    write(tmp_path / "elsewhere" / "x.inc", ".include y.inc\n")
    write(tmp_path / "elsewhere" / "y.inc", "* benign\n")
    (tmp_path / "via").mkdir()
    (tmp_path / "via" / "x.inc").symlink_to(tmp_path / "elsewhere" / "x.inc")
    write(tmp_path / "via" / "y.inc", hostile(tmp_path / "ran"))
    with pytest.raises(NetlistError, match=r"via/y\.inc line 1"):
        prepare(deck(".include via/x.inc"), base_dir=tmp_path)

"""Property-based fuzzing of netlist text given to `prepare()` and the trust policy (about 600 generated
cases per run, plus about 50 accepted decks run through `ngspice -b`; a quarter of that outside CI, see
tests/hypothesis_profiles.py): every case is a prepared `Netlist` or a
`GaincellError`, never another exception or a hang; hostile lines are always refused with their line; a deck
that is accepted holds no line the policy forbids, and running it creates no marker file."""
import itertools
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gaincell.circuits.spice import prepare
from gaincell.circuits.spice.engines import BatchEngine
from gaincell.circuits.spice.netlist import Netlist, read_netlist_file
from gaincell.circuits.spice.trust import line_problem, parse_reference
from gaincell.errors import GaincellError, NetlistError, SimulationError
from hypothesis_profiles import examples

FUZZ = settings(database=None, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])
_names = itertools.count()

nodes = st.sampled_from(["a", "b", "out", "0", "n1"])
positive = st.one_of(st.floats(1e-15, 1e9).map(lambda x: f"{x:.4g}"),
                     st.sampled_from(["1k", "2.2u", "10n", "1meg", "4.7kohm", "{rp}", "{2*rp}", "rp", "'rp/2'"]))
elements = st.builds(lambda kind, n, a, b, v: f"{kind}{n} {a} {b} {v}", st.sampled_from("rclRCL"),
                     st.integers(0, 99), nodes, nodes, positive)
sources = st.builds(lambda n, a, v: f"v{n} {a} 0 {v}", st.integers(0, 9), nodes, st.sampled_from(["1", "0.5", "dc 1"]))
harmless = st.sampled_from(["* a comment", "", ".param rp=1k", ".options gmin=1e-15", "+ ", "* contr0l",
                            "* the .control card is refused", ".endl", "*  # not a script line", ".func f(x) {x}"])
analyses = st.sampled_from([".op", ".tran 1n 10n", ".dc v0 0 1 0.1", ".ac dec 5 1 1k"])
valid_decks = st.builds(lambda body, analysis: "\n".join(["fuzz deck", ".param rp=1k", "v0 a 0 1", *body, analysis]),
                        st.lists(st.one_of(elements, sources, harmless), max_size=12), analyses)

# Hostile lines: every spelling ngspice would act on (prefix matching, case, leading blanks) and the words
hostile_lines = st.builds(lambda blank, start, rest: f"{blank}{start}{rest}",
                          st.sampled_from(["", " ", "\t", "  \t"]),
                          st.sampled_from([".control", ".CONTROL", ".Controls", ".endc", ".ENDC x", "*#", "*# ",
                                           "* shell", "r1 a b 1k ; System", "SHELL", ".include shell.lib",
                                           "x1 a b system"]),
                          st.sampled_from(["", " echo hi", " write /tmp/x.raw", "\u00a0"]))
specials = st.sampled_from(["\n", ".", "*", "#", "+", "{", "}", "'", '"', " ", "\t", "\r", "\r\n", "\x00", "\x0c",
                            "\u2028", "\udc80", "control", ".include ", ".lib ", "shell", "-", "=", ";", "~/", ".end"])


def assert_clean(netlist: Netlist) -> None:
    """An accepted deck: nothing the policy forbids on any line, every file it names given by absolute path
    (the first line is the title, which ngspice never reads as a card)."""
    assert netlist.text.endswith(".end\n")
    for number, line in enumerate(netlist.text.splitlines()):
        assert line_problem(line) is None, line
        reference = parse_reference(line) if number else None
        if reference is not None:
            assert Path(reference.path).is_absolute(), line


def prepare_or_refuse(text: str, base: Path | None = None) -> Netlist | None:
    try:
        netlist = prepare(text, base_dir=base)
    except GaincellError:
        return None
    assert_clean(netlist)
    return netlist


@FUZZ
@given(valid_decks)
def test_valid_decks_are_prepared(text):
    assert_clean(prepare(text))


@FUZZ
@given(valid_decks, hostile_lines, st.data())
def test_a_hostile_line_anywhere_is_refused_with_its_line(text, hostile, data):
    lines = text.split("\n")
    where = data.draw(st.integers(1, len(lines)))
    lines.insert(where, hostile)
    with pytest.raises(NetlistError, match=f"netlist line {where + 1}: "):
        prepare("\n".join(lines))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.lists(st.one_of(elements, harmless), max_size=8), hostile_lines, st.data())
def test_a_hostile_line_in_an_included_file_is_refused_naming_it(fuzz_dir, body, hostile, data):
    where = data.draw(st.integers(0, len(body)))
    lines = ["* a model library", *body]
    lines.insert(where + 1, hostile)
    library = fuzz_dir / f"lib{next(_names)}.lib"
    library.write_text("\n".join(lines) + "\n")
    middle = fuzz_dir / f"mid{next(_names)}.inc"
    middle.write_text(f"* middle\n.include {library.name}\n")
    with pytest.raises(NetlistError, match=rf"{library} line {where + 2} \(included from {middle} line 2, "
                                           r"included from netlist line 2\): "):
        prepare(f"t\n.include {middle.name}\nr1 a 0 1\n.op\n", base_dir=fuzz_dir)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_netlist_or_an_error(text):
    prepare_or_refuse(text)


@FUZZ
@given(valid_decks, st.lists(st.tuples(st.integers(0, 10_000), specials), min_size=1, max_size=6))
def test_mutated_decks_are_a_netlist_or_an_error(fuzz_dir, text, edits):
    for position, piece in edits:
        position %= len(text) + 1
        text = text[:position] + piece + text[position:]
    prepare_or_refuse(text, fuzz_dir)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_as_a_netlist_file_or_an_included_file(fuzz_dir, data, included):
    path = fuzz_dir / f"bytes{next(_names)}.cir"
    path.write_bytes(data)
    if included:
        prepare_or_refuse(f"t\n.include {path}\nr1 a 0 1\n.op\n")
        return
    try:
        text = read_netlist_file(path)
    except NetlistError:
        return
    prepare_or_refuse(text)


@settings(database=None, deadline=None, max_examples=examples(70), suppress_health_check=[HealthCheck.too_slow])
@given(valid_decks, st.lists(st.tuples(st.integers(0, 10_000), st.one_of(specials, hostile_lines)), max_size=4))
def test_accepted_decks_run_no_command_in_ngspice(fuzz_dir, text, edits):
    """Decks carry payloads that create a marker when run as ngspice commands; mutations try to bring them
    to life. Whatever `prepare` accepts is run by `ngspice -b`, and the marker must never appear."""
    marker = fuzz_dir / "command-ran"
    payload = [f"* write {marker}", f"* wrdata {marker} v(a)", f"* .control write {marker}"]
    lines = text.split("\n")
    text = "\n".join(lines[:2] + payload + lines[2:])
    for position, piece in edits:
        position %= len(text) + 1
        text = text[:position] + piece.replace("/tmp/x.raw", str(marker)) + text[position:]
    netlist = prepare_or_refuse(text)
    event("accepted and run" if netlist is not None else "refused")
    if netlist is not None:
        try:
            BatchEngine().simulate(netlist, timeout=20)
        except SimulationError:
            pass
    assert not marker.exists()

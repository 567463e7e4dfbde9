"""The element layer (circuits/spice/elements.py): the one place SPICE text is written, with one number format."""
import ast
import re
from pathlib import Path

import pytest

from gaincell.circuits.spice.elements import (GROUND, Pulse, Pwl, SmallSignal, capacitor, expression, include,
                                              initial_condition, instance, number, options, param, subcircuit,
                                              transistor, value, voltage)
from gaincell.devices import PdkDevice
from gaincell.errors import NetlistError

ROOT = Path(__file__).resolve().parent.parent
WRITER = ROOT / "circuits" / "spice" / "elements.py"


def test_numbers_have_one_format_without_float_noise():
    assert number(0.1 + 0.2) == "0.3"
    assert number(7.0499999999999994e-09) == "7.05e-09"
    assert number(50e-12) == "5e-11" and number(3) == "3" and number(1e6) == "1000000"
    assert number(36571.428571428572) == "36571.4285714"
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(NetlistError, match="finite int or float"):
            number(bad)


def test_sources_write_their_waveforms():
    assert voltage("rwl", "rwl", GROUND, Pulse(0, 0.9, 1e-9, width=5e-9)) == "vrwl rwl 0 PULSE(0 0.9 1e-09 5e-11 5e-11 5e-09 1)"
    assert voltage("wbl", "wbl", GROUND, Pwl(((0, param("level_v")), (7e-9, 0.45)))) == "vwbl wbl 0 PWL(0 {level_v} 7e-09 0.45)"
    assert voltage("sn", "xc.sn", GROUND, SmallSignal(0.45, 1)) == "vsn xc.sn 0 dc 0.45 ac 1"
    assert capacitor("wire", "wbl", GROUND, 2e-15) == "cwire wbl 0 2e-15"
    assert initial_condition("xc.sn", expression(0.9, "-", "level_v")) == ".ic v(xc.sn)={0.9 - level_v}"


def test_subcircuits_and_instances_carry_parameters_by_name():
    block = subcircuit("point", ["a", "b"], {"s": 0.45}, [capacitor("1", "a", "b", param("s"))])
    assert block.splitlines() == [".subckt point a b params: s=0.45", "c1 a b {s}", ".ends point"]
    assert instance("3", ["n1", "n2"], "point", {"s": 0.3, "t": "{u}"}) == "x3 n1 n2 point params: s=0.3 t={u}"


def test_a_device_in_microns_scales_its_geometry_and_keeps_its_parameters():
    nfet = PdkDevice("sky130_fd_pr__nfet_01v8", "subckt", "um", (("nf", 1.0),))
    assert (transistor(nfet, "rn", ["d", "g", "0", "0"], "{wrn}", 1.5e-7, {"m": 3})
            == "xrn d g 0 0 sky130_fd_pr__nfet_01v8 w={(wrn)*1000000} l={(1.5e-07)*1000000} nf=1 m=3")


@pytest.mark.parametrize("bad", ["a b", "n\n.endc", "", "x;y"])
def test_a_name_or_node_that_is_not_one_word_is_refused(bad):
    with pytest.raises(NetlistError, match="is not one SPICE word"):
        voltage("dd", bad, GROUND, 1.0)


@pytest.mark.parametrize("bad", ["{s}\n.control", "1k", "s", "{s}; shell"])
def test_a_text_value_is_a_number_or_an_expression_only(bad):
    with pytest.raises(NetlistError, match="a text value must be"):
        value(bad, "parameter s")


def test_options_and_paths():
    assert options({"method": "gear", "gmin": 1e-15}) == ".options method=gear gmin=1e-15"
    assert include('/a/b"c.lib') == ".include '/a/b\"c.lib'"
    with pytest.raises(NetlistError):
        include("/a/\"b'.lib")


WRITTEN_CARD = re.compile(r"^\s*\.(subckt|ends|ic|include|inc|lib|options|save|temp|tran|noise|ac|dc|op|end|title|"
                          r"param|model)\b", re.IGNORECASE)
WRITTEN_WAVEFORM = re.compile(r"PULSE\(|PWL\(|\bparams: |\bdc \S+ ac\b", re.IGNORECASE)


def written_spice(path: Path) -> list[str]:
    """String literals and f-strings of a module that look like SPICE text being written: a card with
    arguments at the start, or a source waveform / instance parameters anywhere (short constants only:
    long ones are messages)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 60:
            text = node.value
        else:
            continue
        if (WRITTEN_CARD.search(text) and len(text.split()) > 1) or WRITTEN_WAVEFORM.search(text):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:60]!r}")
    return found


def test_spice_text_is_written_in_the_element_layer_only():
    sources = [p for folder in ("gaincell", "circuits", "fitting", "surrogate", "adapt", "energy", "benchmarks",
                                "scripts") for p in sorted((ROOT / folder).glob("**/*.py"))]
    assert written_spice(WRITER), "the scan finds nothing even in the element layer: it is broken"
    elsewhere = [hit for path in sources if path != WRITER for hit in written_spice(path)]
    assert not elsewhere, "SPICE text written outside circuits/spice/elements.py:\n" + "\n".join(elsewhere)


def test_pyspice_builds_no_netlist_of_the_package():
    """PySpice runs ngspice; netlists are built by the element layer (the packed-sweep benchmark's naive side
    uses PySpice's Circuit on purpose: it is the baseline)."""
    users = [p.relative_to(ROOT) for folder in ("gaincell", "circuits", "fitting", "surrogate", "adapt", "energy")
             for p in (ROOT / folder).glob("**/*.py") if "PySpice.Spice.Netlist" in p.read_text()]
    assert not users


def test_a_library_path_its_line_cannot_carry_is_refused_with_the_deck_s_line(tmp_path):
    """A relative `.lib` that resolves under a folder with a blank: the element layer cannot write the line, and
    the refusal names the deck's line."""
    from gaincell.circuits.spice.netlist import prepare

    folder = tmp_path / "my models"
    folder.mkdir()
    (folder / "models.lib").write_text("* models\n.lib tt\n.model nfast nmos level=1\n.endl tt\n")
    with pytest.raises(NetlistError, match=r"deck line 2: the library path .* holds a blank or a quote"):
        prepare(".title t\n.lib models.lib tt\nr1 a 0 1k\n.op\n", base_dir=folder, source_name="deck")

"""Typed subcircuit instances: ports and parameters as the shipped `.subckt` lines declare them, connected by
name; a missing or unknown port, or an undeclared parameter, is refused."""
import pytest

from gaincell.circuits.cells import cell_instance, row_inverter
from gaincell.circuits.instances import Subcircuit, declared_subcircuits, shipped_subcircuit
from gaincell.design import load_design
from gaincell.errors import NetlistError

CELL_PORTS = ("wwl", "wbl", "rwl", "rwlb", "rbl", "vdd")


def test_shipped_subcircuits_are_read_from_their_subckt_lines():
    cell = shipped_subcircuit("gaincell_signed.sub", "gcsigned")
    assert cell.ports == CELL_PORTS  # declared over a `+ params:` continuation line
    assert cell.params == ("ww", "lw", "wrn", "lrn", "wrp", "lrp", "wsn", "lsn", "wsp", "lsp", "cs",
                           "dvw", "dvrn", "dvrp", "dvsn", "dvsp")
    assert shipped_subcircuit("c2p.sub", "c2p_signed").ports == ("in", "outp", "outn", "vdd", "win", "trk", "rst")
    assert shipped_subcircuit("dac.sub", "dac_tg").params == ("wn", "wp")
    with pytest.raises(NetlistError, match="netlists/c2p.sub declares no subcircuit 'c2p_triple'"):
        shipped_subcircuit("c2p.sub", "c2p_triple")


def test_ports_are_written_in_declaration_order_whatever_order_they_are_given_in():
    inverter = Subcircuit("inv", ("in", "out", "vdd"), ("wn",))
    line = inverter.instance("3", {"vdd": "vddrow", "out": "b3", "in": "a3"}, {"wn": 4e-7})
    assert line == "x3 a3 b3 vddrow inv params: wn=4e-07"
    assert inverter.instance("i", {"in": "a", "out": "b", "vdd": "v"}) == "xi a b v inv"
    assert row_inverter("inv0", "rwl0", "rwlb0", "vddrow") == "xinv0 rwl0 rwlb0 vddrow rwl_inv"


def test_the_cell_instance_carries_the_designs_sizes():
    design = load_design("igzo-generic")
    line = cell_instance(design, "c", wwl="w", wbl="wb", rwl="r", rwlb="rb", rbl="bl", vdd="vdd")
    sizes = " ".join(f"{k}={v:.6g}" for k, v in design.cell_params().items())
    assert line == f"xc w wb r rb bl vdd gcsigned_igzo params: {sizes}"


def test_a_missing_or_unknown_port_or_parameter_is_refused():
    design = load_design("cmos-generic")
    with pytest.raises(NetlistError, match=r"instance xc of gcsigned: .* missing \['vdd'\], unknown \[\]"):
        cell_instance(design, "c", wwl="w", wbl="wb", rwl="r", rwlb="rb", rbl="bl")
    with pytest.raises(NetlistError, match=r"missing \[\], unknown \['rbll'\]"):
        cell_instance(design, "c", wwl="w", wbl="wb", rwl="r", rwlb="rb", rbl="bl", rbll="x", vdd="vdd")
    gate = shipped_subcircuit("dac.sub", "dac_tg")
    with pytest.raises(NetlistError, match="instance xg0 of dac_tg: no parameter wl .it declares wn, wp."):
        gate.instance("g0", {"a": "t0", "b": "wbl", "s": "s0", "sb": "sb0", "vdd": "vdd"}, {"wl": 1e-7})


def test_declarations_are_parsed_from_any_spice_text():
    text = "* a\n.SUBCKT amp in out\n+ params: gain=2 bias=1u\nr1 in out 1k\n.ends\n.subckt bare a b\n.ends\n"
    declared = declared_subcircuits(text)
    assert declared["amp"] == Subcircuit("amp", ("in", "out"), ("gain", "bias"))
    assert declared["bare"] == Subcircuit("bare", ("a", "b"), ())


def test_a_parameter_may_name_a_parameter_of_the_enclosing_subcircuit():
    design = load_design("cmos-generic")
    line = cell_instance(design, "c", {"dvw": "{dvw}", "dvrn": 0.01}, wwl="w", wbl="wb", rwl="r", rwlb="rb",
                         rbl="bl", vdd="vdd")
    assert " dvw={dvw} dvrn=0.01 " in line
    with pytest.raises(NetlistError, match="parameter dvw of gcsigned: a text value must be"):
        cell_instance(design, "c", {"dvw": "{dvw}\n.endc"}, wwl="w", wbl="wb", rwl="r", rwlb="rb", rbl="bl",
                      vdd="vdd")

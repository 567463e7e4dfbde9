"""Bad input gives one clear error naming the cause, and nothing is written as if it succeeded."""
import subprocess
import sys

import pytest

from gaincell.circuits.spice import Transient, run
from gaincell.errors import ConfigError, NetlistError, SimulationError, SimulationTimeout, SimulatorNotFoundError

TRAN = Transient(1e-9, 1e-6)


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_broken_netlist(backend):
    with pytest.raises(SimulationError, match="unknown subckt"):
        run("broken\nv1 a 0 1\nr1 a b 1k\nxfoo a b nosuch\n", TRAN, backend=backend)


@pytest.mark.parametrize("backend", ["shared", "batch"])
def test_unknown_model(backend):
    with pytest.raises(SimulationError, match="can't find model 'nmosx'"):
        run("um\nv1 d 0 1\nm1 d d 0 0 nmosx w=1u l=1u\n", TRAN, backend=backend)


def test_error_carries_netlist_hash_and_log():
    with pytest.raises(SimulationError) as info:
        run("broken\nv1 a 0 1\nxfoo a b nosuch\n", TRAN, backend="batch")
    assert len(info.value.netlist_hash) == 64
    assert "nosuch" in info.value.log


def test_negative_capacitance_refused_before_simulation():
    with pytest.raises(NetlistError, match="negative capacitance '-1n' on element 'C1'"):
        run("negc\nv1 a 0 1\nr1 a b 1k\nC1 b 0 -1n\n", TRAN)


def test_non_converging_circuit():
    deck = "runaway\nv1 a 0 PULSE(0 1 1u 1p 1p 1 2)\nr0 out 0 1G\nb1 0 out I = exp(400*v(out))*v(a)\nc1 out 0 1p\n"
    with pytest.raises(SimulationError, match="(?i)timestep too small"):
        run(deck, Transient(1e-9, 2e-6))


def test_analysis_given_twice_or_missing():
    with pytest.raises(NetlistError, match="already has analysis"):
        run("x\nr1 a 0 1\n.op\n", TRAN)
    with pytest.raises(NetlistError, match="no analysis line"):
        run("x\nr1 a 0 1\n")


def test_bad_parameters_name_the_field():
    with pytest.raises(ConfigError, match="stop_s"):
        Transient(1e-9, -1.0)
    with pytest.raises(ConfigError, match="backend"):
        run("x\nr1 a 0 1\n.op\n", backend="spectre")
    with pytest.raises(ConfigError, match="timeout"):
        run("x\nr1 a 0 1\n.op\n", timeout=0)


def test_timeout_stops_a_hung_simulation():
    slow = "slow\nv1 a 0 SIN(0 1 1G)\nr1 a b 1k\nc1 b 0 1p\n"
    with pytest.raises(SimulationTimeout):
        run(slow, Transient(1e-12, 1e-3, 1e-12), timeout=1.0)
    assert run("ok\nr1 a 0 1\nv1 a 0 1\n.op\n")["v(a)"][0] == pytest.approx(1.0, rel=1e-9)  # the pool recovered


def test_missing_ngspice_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SimulatorNotFoundError, match="apt-get install ngspice"):
        run("x\nr1 a 0 1\nv1 a 0 1\n.op\n", backend="batch")
    monkeypatch.setenv("NGSPICE_LIBRARY_PATH", str(tmp_path / "libngspice.so.0"))
    with pytest.raises(SimulatorNotFoundError, match="libngspice0"):
        run("x\nr1 a 0 1\nv1 a 0 1\n.op\n", backend="shared")


def test_cli_writes_nothing_on_failure(tmp_path):
    deck = tmp_path / "broken.cir"
    deck.write_text("broken\nv1 a 0 1\nxfoo a b nosuch\n.tran 1n 10n\n")
    out = tmp_path / "result.h5"
    done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", "simulate", str(deck), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "unknown subckt" in done.stderr
    assert not out.exists()

"""Typed subcircuit instances: the ports and parameters a `.subckt` line declares, and the one way the circuit
generators write an instance line, ports by name.

    inverter = shipped_subcircuit("gaincell_signed.sub", "rwl_inv")     # .subckt rwl_inv in out vdd params: ...
    inverter.instance("inv3", {"in": "rwl3", "out": "rwlb3", "vdd": "vddrow"}, {"wn": 400e-9})
    # -> "xinv3 rwl3 rwlb3 vddrow rwl_inv params: wn=4e-07" (written by spice/elements.py)

A port left out, a port or a parameter the subcircuit does not declare is a `NetlistError` naming the
subcircuit, so two nodes can never be swapped by their position in a line.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from gaincell.errors import NetlistError
from gaincell.resources import netlist_path

from .spice.elements import instance


@dataclass(frozen=True)
class Subcircuit:
    """A subcircuit's name, its ports in the order of its `.subckt` line, and the parameters it declares."""

    name: str
    ports: tuple[str, ...]
    params: tuple[str, ...] = ()

    def instance(self, name: str, nodes: Mapping[str, str], params: Mapping[str, float | str] | None = None) -> str:
        """The line of instance `x{name}`: `nodes` maps every port to the node it connects to, `params` (numbers,
        or `{name}` of an enclosing subcircuit's parameter) overrides declared parameters."""
        params = params or {}
        missing = [port for port in self.ports if port not in nodes]
        unknown = [port for port in nodes if port not in self.ports]
        if missing or unknown:
            raise NetlistError(f"instance x{name} of {self.name}: ports {', '.join(self.ports)} are connected by name; "
                               f"missing {missing}, unknown {unknown}")
        undeclared = [param for param in params if param not in self.params]
        if undeclared:
            raise NetlistError(f"instance x{name} of {self.name}: no parameter {', '.join(undeclared)} (it declares "
                               f"{', '.join(self.params) or 'none'})")
        return instance(name, [nodes[port] for port in self.ports], self.name, params)


def declared_subcircuits(text: str) -> dict[str, Subcircuit]:
    """Every `.subckt NAME PORT... [params: NAME=VALUE ...]` of a SPICE text (continuation lines joined)."""
    found = {}
    for line in re.sub(r"\n\s*\+", " ", text).splitlines():
        words = line.split()
        if not words or words[0].lower() != ".subckt":
            continue
        head, _, params = " ".join(words[1:]).partition("params:")
        name, *ports = head.split()
        found[name] = Subcircuit(name, tuple(ports), tuple(param.split("=")[0] for param in params.split()))
    return found


@lru_cache(maxsize=None)
def shipped_text(file: str) -> str:
    """The text of a shipped netlist file (netlists/FILE)."""
    return netlist_path(file).read_text()


@lru_cache(maxsize=None)
def shipped_subcircuit(file: str, name: str) -> Subcircuit:
    """Subcircuit `name` as netlists/`file` declares it."""
    declared = declared_subcircuits(shipped_text(file))
    if name not in declared:
        raise NetlistError(f"netlists/{file} declares no subcircuit {name!r} (it declares {', '.join(declared)})")
    return declared[name]

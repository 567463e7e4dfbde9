"""Wire parasitics of an array (`arrays.py`): a series resistance and a capacitance to ground per cell along
every bit line and word line, a row-driver resistance, and the RC ladder that stands for one wire."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from gaincell.errors import ConfigError

from .spice.elements import GROUND, capacitor, resistor


@dataclass(frozen=True)
class Wires:
    """Distributed wire parasitics per cell and the row-driver resistance (all >= 0; 0 = ideal)."""

    bitline_r_ohm: float = field(default=0.0, metadata={"doc": "bit-line resistance per cell segment (ohm)"})
    bitline_c_f: float = field(default=0.0, metadata={"doc": "bit-line capacitance per cell (F)"})
    wordline_r_ohm: float = field(default=0.0, metadata={"doc": "word-line resistance per cell segment (ohm)"})
    wordline_c_f: float = field(default=0.0, metadata={"doc": "word-line capacitance per cell (F)"})
    driver_r_ohm: float = field(default=0.0, metadata={"doc": "row-driver output resistance (ohm)"})

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(name, f"must be a finite value >= 0, got {value!r}")

    @property
    def couples_columns(self) -> bool:
        """Word-line wires or driver resistance make every column load every other one."""
        return self.wordline_r_ohm > 0 or self.wordline_c_f > 0 or self.driver_r_ohm > 0

    @property
    def ideal(self) -> bool:
        return not any(self.__dict__.values())


def ladder(prefix: str, start: str, nodes: list[str], r_ohm: float, c_f: float) -> list[str]:
    """A wire from `start` through `nodes` in order: a resistor before each node and a capacitor at it."""
    lines, previous = [], start
    for k, node in enumerate(nodes):
        if r_ohm > 0:
            lines.append(resistor(f"{prefix}{k}", previous, node, r_ohm))
        if c_f > 0:
            lines.append(capacitor(f"{prefix}{k}", node, GROUND, c_f))
        previous = node
    return lines

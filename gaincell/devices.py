"""What stands in a netlist for each of the design's transistors: the PDK device behind every shipped model
name, and per-role threshold shifts.

The shipped subcircuits (netlists/*.sub) are written with four generic model names, one per role:
`nmos_gen` (logic NMOS: read transistor, switches, periphery), `pmos_gen` (logic PMOS), `nmos_gen_hvt`
(silicon write transistor) and `nmos_igzo` (oxide write transistor). A `PdkDevice` says what a PDK puts in
their place: a model on an `M` line (W/L in metres, e.g. BSIM cards) or a subcircuit on an `X` line (W/L in
the PDK's unit, e.g. sky130's `sky130_fd_pr__nfet_01v8` in microns), with fixed instance parameters
(e.g. nf=1). Every value here is pasted into netlist text, so each is checked as a SPICE name or number.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError
from .fields import is_number, quantity, shown
from .spice_words import FORBIDDEN_WORD

SHIPPED_MODEL_NAMES = ("nmos_gen", "pmos_gen", "nmos_gen_hvt", "nmos_igzo")
DEVICE_KINDS = ("model", "subckt")  # an `M` line naming a model, an `X` line naming a subcircuit
GEOMETRY_UNITS = {"m": 1.0, "um": 1e6}  # the unit the device takes W and L in -> its factor from metres
GEOMETRY_PARAMS = ("w", "l", "m")  # set by the circuit generators, never fixed by a device description

SPICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
SPICE_NAME_RULE = ("1 to 64 characters from letters, digits, '_', '.' and '-', starting with a letter, digit "
                   "or '_' (pattern [A-Za-z0-9_][A-Za-z0-9_.-]*; no spaces, line breaks, quotes or * ; $ = { } ( ) ,),"
                   " without the words shell or system")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def check_spice_name(field_name: str, value) -> None:
    """Refuse anything but a SPICE identifier: such a value is pasted into netlist text."""
    if not (isinstance(value, str) and SPICE_NAME.fullmatch(value)):
        raise ConfigError(field_name, f"must be a SPICE name: {SPICE_NAME_RULE}; got {shown(value)}")
    refuse_command_word(field_name, value)


def refuse_command_word(field_name: str, value: str) -> None:
    """A value holding an ngspice command word would only fail later, when the netlist is checked: refuse it
    here by its field."""
    word = FORBIDDEN_WORD.search(value)
    if word:
        raise ConfigError(field_name, f"{shown(value)} holds the word {word.group(1)!r}, which netlists may not "
                                      "contain (ngspice runs shell commands); choose another name")


@dataclass(frozen=True)
class PdkDevice:
    """The PDK device standing in for one shipped model name."""

    name: str
    kind: str = "model"
    unit: str = "m"
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "params", _checked_params(self.params))

    def check(self, prefix: str) -> None:
        check_spice_name(f"{prefix}.name", self.name)
        if self.kind not in DEVICE_KINDS:
            raise ConfigError(f"{prefix}.kind", f"must be 'model' (an M line) or 'subckt' (an X line), got "
                                                f"{shown(self.kind)}")
        if self.unit not in GEOMETRY_UNITS:
            raise ConfigError(f"{prefix}.unit", f"must be 'm' (metres) or 'um' (microns): the unit the device "
                                                f"takes W and L in, got {shown(self.unit)}")
        for key, _ in self.params:
            if not PARAM_NAME.fullmatch(key) or key.lower() in GEOMETRY_PARAMS:
                raise ConfigError(f"{prefix}.params", f"parameter names are identifiers other than w, l and m (the "
                                                      f"generators set those), got {shown(key)}")
            refuse_command_word(f"{prefix}.params", key)

    @property
    def scale(self) -> float:
        """Factor from metres to the device's geometry unit."""
        return GEOMETRY_UNITS[self.unit]


def _checked_params(params) -> tuple[tuple[str, float], ...]:
    items = params.items() if isinstance(params, dict) else params
    if not isinstance(items, (list, tuple, type({}.items()))):
        raise ConfigError("params", f"must be a table of parameter = number, got {shown(params)}")
    checked = []
    for pair in items:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                and is_number(pair[1]) and math.isfinite(float(pair[1]))):
            raise ConfigError("params", f"entries are name = finite number, got {shown(pair)}")
        checked.append((pair[0], float(pair[1])))
    return tuple(checked)


def _shift(role: str):
    return quantity(f"threshold shift of the {role} (positive = larger |Vt|)", "V", -1.0, 1.0, default=0.0)


@dataclass(frozen=True)
class VtShift:
    """Threshold-voltage shifts per transistor of the cell, applied as a DC source in series with each gate
    (the cell subcircuit's parameters dvw, dvrn, dvrp, dvsn, dvsp)."""

    write: float = _shift("write transistor")
    read_n: float = _shift("NMOS read transistor")
    read_p: float = _shift("PMOS read transistor")
    switch_n: float = _shift("NMOS read-pulse switch")
    switch_p: float = _shift("PMOS read-pulse switch")

    def params(self) -> dict[str, float]:
        """The cell subcircuit's parameters that apply these shifts."""
        return dict(zip(VT_SHIFT_PARAMS, (self.write, self.read_n, self.read_p, self.switch_n, self.switch_p)))


VT_SHIFT_PARAMS = ("dvw", "dvrn", "dvrp", "dvsn", "dvsp")

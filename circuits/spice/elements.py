"""SPICE text, written here only: the element lines, subcircuit blocks and control cards of every netlist gaincell
builds, with one number format.

Circuit code composes these and never formats SPICE itself:

    voltage("rwl", "rwl", GROUND, Pulse(0, 0.9, delay=1e-9, width=5e-9))   # vrwl rwl 0 PULSE(0 0.9 1e-09 ...)
    capacitor("wire", "wbl", GROUND, 2e-15)                                  # cwire wbl 0 2e-15
    subcircuit("readpoint", ["rwl", "rwlb"], {"stored_v": 0.45}, [...])      # .subckt ... .ends readpoint
    instance("c", ["wwl", "wbl"], "gcsigned", {"cs": 3e-15, "dvw": "{dvw}"})  # xc wwl wbl gcsigned params: ...

A value is a number (written by `number`: 12 significant digits) or a `{...}` expression of subcircuit
parameters (`param("stored_v")`, `expression(0.9, "-", "level_v")`). Names and nodes are single words.
The netlist layer (`netlist.prepare`) still checks every finished deck against the trust policy.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gaincell.errors import NetlistError

GROUND = "0"
END = ".end"

_WORD = re.compile(r"[A-Za-z0-9_.#:\[\]<>-]+")
_EXPRESSION = re.compile(r"\{[A-Za-z0-9_.+\-*/() ]+\}")
_EXPRESSION_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[+\-*/()]")


def number(value: float | int) -> str:
    """The number format of every netlist: 12 significant digits, so float noise (0.1 + 0.2) never shows."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise NetlistError(f"a netlist number must be a finite int or float, got {value!r}")
    return f"{float(value):.12g}" if not isinstance(value, numbers.Integral) else str(int(value))


def value(item, what: str = "value") -> str:
    """A number (also one written as text, e.g. read from a shipped file), or a `{...}` expression as written;
    `what` names it in the error."""
    if isinstance(item, str):
        try:
            return number(float(item))
        except ValueError:
            pass
        if not _EXPRESSION.fullmatch(item):
            raise NetlistError(f"{what}: a text value must be a {{...}} expression of parameters, got {item!r}")
        return item
    return number(item)


def param(name: str) -> str:
    """`{name}`: the value of a parameter of the enclosing subcircuit."""
    return expression(name)


def expression(*terms) -> str:
    """`{...}` from numbers, parameter names and the operators + - * / ( ): expression(0.9, "-", "level_v")."""
    words = []
    for term in terms:
        if isinstance(term, str):
            if not _EXPRESSION_TERM.fullmatch(term):
                raise NetlistError(f"expression term {term!r} is not a parameter name or one of + - * / ( )")
            words.append(term)
        else:
            words.append(number(term))
    return "{" + " ".join(words) + "}"


def _word(what: str, text: str) -> str:
    if not isinstance(text, str) or not _WORD.fullmatch(text):
        raise NetlistError(f"{what} {text!r} is not one SPICE word (letters, digits, _ . # : [ ] < > -)")
    return text


def _line(*words: str) -> str:
    return " ".join(words)


@dataclass(frozen=True)
class Pulse:
    """PULSE(initial pulsed delay rise fall width period) of a voltage or current source (seconds)."""

    initial: float | str
    pulsed: float | str
    delay: float = 0.0
    rise: float = 50e-12
    fall: float = 50e-12
    width: float = 1.0
    period: float = 1.0

    def text(self) -> str:
        fields = (self.initial, self.pulsed, self.delay, self.rise, self.fall, self.width, self.period)
        return f"PULSE({' '.join(value(f) for f in fields)})"


@dataclass(frozen=True)
class Pwl:
    """PWL(t0 v0 t1 v1 ...): a piecewise-linear waveform through (time, value) knots."""

    knots: tuple[tuple[float, float | str], ...]

    def text(self) -> str:
        return f"PWL({' '.join(f'{value(t)} {value(v)}' for t, v in self.knots)})"


@dataclass(frozen=True)
class SmallSignal:
    """`dc X ac Y`: a DC level and a small-signal amplitude (for .ac / .noise)."""

    dc: float
    ac: float

    def text(self) -> str:
        return f"dc {number(self.dc)} ac {number(self.ac)}"


def _waveform(level) -> str:
    return level.text() if isinstance(level, (Pulse, Pwl, SmallSignal)) else value(level)


def voltage(name: str, plus: str, minus: str, level) -> str:
    """Independent voltage source `v{name}`: a level, `Pulse`, `Pwl` or `SmallSignal`."""
    return _line(_word("source", "v" + name), _word("node", plus), _word("node", minus), _waveform(level))


def current(name: str, plus: str, minus: str, level) -> str:
    """Independent current source `i{name}` (flowing from `plus` through the source to `minus`)."""
    return _line(_word("source", "i" + name), _word("node", plus), _word("node", minus), _waveform(level))


def resistor(name: str, a: str, b: str, ohms) -> str:
    return _line(_word("resistor", "r" + name), _word("node", a), _word("node", b), value(ohms))


def capacitor(name: str, a: str, b: str, farads) -> str:
    return _line(_word("capacitor", "c" + name), _word("node", a), _word("node", b), value(farads))


def transresistance(name: str, plus: str, minus: str, sensed_source: str, ohms: float) -> str:
    """Current-controlled voltage source `h{name}`: V(plus, minus) = ohms x the current of `sensed_source`."""
    return _line(_word("source", "h" + name), _word("node", plus), _word("node", minus),
                 _word("source", sensed_source), number(ohms))


def behavioral_current(name: str, plus: str, minus: str, formula: str) -> str:
    """Behavioural current source `b{name}`: I = formula (ngspice B-source syntax, e.g. `{k} * v(out)`)."""
    if not re.fullmatch(r"[A-Za-z0-9_.+\-*/(){} ]+", formula):
        raise NetlistError(f"behavioural source b{name}: {formula!r} is not a plain formula")
    return _line(_word("source", "b" + name), _word("node", plus), _word("node", minus), "I =", formula)


def instance(name: str, nodes: Iterable[str], subckt: str, params: Mapping[str, object] | None = None) -> str:
    """Subcircuit instance `x{name}` on `nodes` (in the subcircuit's port order), `params` overriding its own."""
    words = [_word("instance", "x" + name), *(_word("node", n) for n in nodes), _word("subcircuit", subckt)]
    if params:
        words.append("params: " + _assignments(params, subckt))
    return _line(*words)


def transistor(device, name: str, nodes: Iterable[str], w, l, extra: Mapping[str, object] | None = None) -> str:
    """The line of one transistor on a PDK device (`gaincell.devices.PdkDevice`: a `.model` card written as an
    `m` line, or a subcircuit as an `x` line, W/L scaled to its unit); `w`, `l` in metres."""
    letter = "m" if device.kind == "model" else "x"
    words = [_word("transistor", letter + name), *(_word("node", n) for n in nodes), _word("model", device.name),
             f"w={_scaled(w, device.scale)}", f"l={_scaled(l, device.scale)}"]
    words += [f"{key}={number(v)}" for key, v in device.params]
    words += [f"{key}={value(v)}" for key, v in (extra or {}).items()]
    return _line(*words)


def _scaled(length, scale: float) -> str:
    """A length in metres in a device's unit: `{(length)*scale}` unless the unit is the metre."""
    written = value(length)
    if scale == 1.0:
        return written
    return f"{{({written.strip('{}')})*{number(scale)}}}"


def _assignments(params: Mapping[str, object], owner: str) -> str:
    return " ".join(f"{_word('parameter', key)}={value(v, f'parameter {key} of {owner}')}" for key, v in params.items())


def subcircuit(name: str, ports: Iterable[str], params: Mapping[str, object], body: Iterable[str]) -> str:
    """A `.subckt NAME PORTS [params: ...]` block around `body` (element lines), closed by `.ends NAME`."""
    head = [".subckt", _word("subcircuit", name), *(_word("port", p) for p in ports)]
    if params:
        head.append("params: " + _assignments(params, name))
    return "\n".join([_line(*head), *body, f".ends {name}"])


def initial_condition(node: str, level) -> str:
    """`.ic v(node)=level`: the node's voltage when the transient starts."""
    return f".ic v({_word('node', node)})={value(level)}"


def comment(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise NetlistError(f"a comment is one line, got {text!r}")
    return f"* {text}"


def title(text: str) -> str:
    """The first line of a deck."""
    if "\n" in text or "\r" in text:
        raise NetlistError(f"a title is one line, got {text!r}")
    return f".title {text}"


def include(path) -> str:
    """`.include "FILE"` (in single quotes when the path holds a double one)."""
    text = str(path)
    if "\n" in text or ('"' in text and "'" in text):
        raise NetlistError(f"the path {text!r} holds a line break or both kinds of quote, which an .include line "
                           "cannot carry; move or link the file to a plainer path")
    quote = "'" if '"' in text else '"'
    return f".include {quote}{text}{quote}"


def library(path, section: str) -> str:
    """`.lib FILE SECTION`: one section (e.g. a process corner) of a model library (no blank or quote in FILE)."""
    text = str(path)
    if any(c.isspace() or c in "'\"" for c in text):
        raise NetlistError(f"the library path {text!r} holds a blank or a quote, which ngspice's .lib line cannot "
                           "carry; move or link the library to a path without them")
    return f".lib {text} {_word('library section', section)}"


def temperature(celsius: float) -> str:
    return f".temp {number(celsius)}"


def options(settings: Mapping[str, object]) -> str:
    """`.options k=v ...` (numbers in the netlist format, words as given)."""
    return ".options " + " ".join(f"{_word('option', k)}={v if isinstance(v, str) else number(v)}"
                                  for k, v in settings.items())


def save(vectors: Iterable[str]) -> str:
    return ".save " + " ".join(vectors)


def control(card: str, *fields) -> str:
    """An analysis card (`.tran`, `.ac`, ...): numbers in the netlist format, words as given."""
    return _line(card, *(f if isinstance(f, str) else number(f) for f in fields))


def fill_shipped(text: str, numbers: Mapping[str, float], transistor_line: Callable[[str], str]) -> str:
    """A shipped `.sub` file's text for one design: each `{placeholder}` of `numbers` becomes its number, and
    each transistor (`m`) line the line `transistor_line` makes of it (the design's device)."""
    for placeholder, amount in numbers.items():
        text = text.replace("{" + placeholder + "}", number(amount))
    return _TRANSISTOR_LINE.sub(lambda match: transistor_line(match.group(0)), text)


_TRANSISTOR_LINE = re.compile(r"^m[^\n]*", re.IGNORECASE | re.MULTILINE)

"""Turn a PySpice circuit or netlist text into the complete deck that a simulator runs.

The deck is normalised once, here, for every backend: absolute `.include`/`.lib` paths, the `.save` list,
options, exactly one `.end`. A netlist's own analysis lines are passed on as written, so they mean what
ngspice makes of them: a `.tran` without TMAX gets ngspice's default, min(print step, (stop - start) / 50).
gaincell's own testbenches (`analysis.Transient`) always write an explicit TMAX (see `analysis.py`).
Here too, before ngspice sees anything, the trust policy (`trust.py`: no ngspice scripting in the deck or
any file it reads) is enforced, and obviously wrong element values are refused (ngspice silently accepts a
negative capacitance, also through `.param`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from gaincell.errors import NetlistError

from .analysis import Analysis
from .elements import END, options as options_card, save as save_card
from .params import Scope, assignments, spice_number
from .trust import DeckPolicy, card_of, check_text_characters, read_netlist_file

__all__ = ["ANALYSIS_CARDS", "Netlist", "prepare", "read_netlist_file"]

ANALYSIS_CARDS = (".tran", ".op", ".dc", ".ac", ".noise", ".tf", ".sens", ".pz", ".disto")
_PASSIVE_KINDS = {"r": "resistance", "c": "capacitance", "l": "inductance"}
_VALUE_KEYS = {"r": ("r", "resistance"), "c": ("c", "capacitance"), "l": ("l", "inductance")}
_FIELD = re.compile(r"""(?:[^\s{'"]|\{[^{}]*\}|'[^']*'|"[^"]*")+""")
_OPTION_NAME = re.compile(r"[a-z][a-z0-9_]*", re.IGNORECASE)
_OPTION_VALUE = re.compile(r"[a-z0-9_.+-]+", re.IGNORECASE)
_SAVE_NAME = re.compile(r"(v\([^()\s]+\)|i\([^()\s]+\)|@\S+|[a-z0-9_.#:]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Netlist:
    """A complete SPICE deck (title line first, `.end` last) and its identity."""

    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def title(self) -> str:
        return self.text.splitlines()[0].removeprefix(".title").strip()

    def __str__(self) -> str:
        return self.text


def _check_tran(line: str, name: str, number: int) -> None:
    """A `.tran` card needs at least a print step and a stop time; it is otherwise left as written."""
    words = [t for t in line.split(";")[0].split()[1:] if t.lower() != "uic"]
    if len(words) < 2:
        raise NetlistError(f"{name} line {number}: '.tran' needs at least a step and a stop time: {line.strip()!r}")


def _logical_lines(numbered: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join `+` continuation lines onto the line they continue; comment lines are dropped."""
    joined: list[list] = []
    for number, line in numbered:
        text = line.strip()
        if not text or text.startswith("*"):
            continue
        if text.startswith("+") and joined:
            joined[-1][1] += " " + text[1:]
        else:
            joined.append([number, text])
    return [(number, text) for number, text in joined]


def _check_passive_values(numbered: list[tuple[int, str]], name: str) -> None:
    """Refuse a negative R, C or L value, written literally or through `.param` values that can be
    evaluated here (numbers, + - * /, parentheses, other parameters); anything else is left to ngspice."""
    scopes = [Scope()]  # the deck's, then one per enclosing .subckt
    placed: list[tuple[int, str, Scope]] = []
    for number, text in _logical_lines(numbered):
        card = card_of(text)
        if card == ".subckt":
            scope = Scope(scopes[-1])
            for parameter, _ in assignments(text):  # instance parameters: unknown until ngspice runs
                scope.hide(parameter)
            scopes.append(scope)
        elif card.startswith(".ends"):
            if len(scopes) > 1:
                scopes.pop()
        elif card.startswith(".param"):
            for parameter, expression in assignments(text[len(card):]):
                scopes[-1].define(parameter, expression)
        elif card[:1] in _PASSIVE_KINDS:
            placed.append((number, text, scopes[-1]))
    for number, text, scope in placed:
        fields = _FIELD.findall(text.split(";")[0])
        letter = fields[0][0].lower()
        candidates = [fields[3]] if len(fields) > 3 and "=" not in fields[3] else []
        candidates += [f.split("=", 1)[1] for f in fields[3:]
                       if "=" in f and f.split("=", 1)[0].strip().lower() in _VALUE_KEYS[letter]]
        for written in candidates:
            value = scope.value(written)
            if value is not None and value < 0:
                kind = _PASSIVE_KINDS[letter]
                literal = spice_number(written.lstrip("-+")) is not None
                shown = f"{written!r}" if literal else f"{written!r} (= {value:g})"
                raise NetlistError(f"{name} line {number}: negative {kind} {shown} on element {fields[0]!r}: "
                                   f"{kind} must be positive")


def _options_line(options: dict) -> str:
    """`.options k=v ...`; each name and value must be one plain word (they become netlist text)."""
    for key, value in options.items():
        if not _OPTION_NAME.fullmatch(str(key)) or not _OPTION_VALUE.fullmatch(str(value)):
            raise NetlistError(f"options: {key!r}={value!r} is not an ngspice option (a name and a number or "
                               "word, e.g. gmin=1e-15 or method=gear)")
    return options_card(options)


def prepare(source, analysis: Analysis | None = None, save=(), options: dict | None = None,
            base_dir: str | Path | None = None, source_name: str = "netlist") -> Netlist:
    """Build the runnable deck from a PySpice `Circuit` (or anything whose `str()` is a netlist) or text.

    analysis: appended as a control card; when None the netlist must carry its own analysis lines.
    save: vector names (`v(node)`, `i(vsource)`) to keep; empty keeps every node voltage and branch current.
    options: written as one `.options` line (e.g. {"gmin": 1e-15}).
    base_dir: where relative `.include`/`.lib` paths are resolved (default: the current directory).
    source_name: what error messages call the text (e.g. the file it came from).
    Raises `NetlistError` for text the trust policy refuses (see `trust.py`) and for wrong values.
    """
    text = source if isinstance(source, str) else str(source)
    check_text_characters(text, source_name)
    policy = DeckPolicy(source_name, Path(base_dir) if base_dir is not None else Path.cwd())
    numbered = [(number, line.rstrip()) for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1)]
    while numbered and not numbered[-1][1]:
        numbered.pop()
    while numbered and not numbered[0][1]:
        numbered.pop(0)
    if not numbered or not numbered[0][1].strip():
        raise NetlistError(f"{source_name}: the netlist is empty (its first line must be a title)")
    policy.check_title(*numbered[0])
    out = [numbered[0][1]]
    kept = [numbered[0]]
    own_analyses = 0
    for number, line in numbered[1:]:
        card = card_of(line)
        if card == ".end":
            break
        policy.check_line(number, line)
        reference = policy.reference_line(number, line)
        if reference is not None:
            line = reference
        elif card == ".tran":
            _check_tran(line, source_name, number)
        if card in ANALYSIS_CARDS:
            own_analyses += 1
        out.append(line)
        kept.append((number, line))
    _check_passive_values(kept[1:], source_name)
    if analysis is not None and own_analyses:
        raise NetlistError("the netlist already has analysis lines; pass analysis=None to run them, "
                           "or remove them to run the given analysis")
    if analysis is None and not own_analyses:
        raise NetlistError(f"the netlist has no analysis line (one of {', '.join(ANALYSIS_CARDS)}) "
                           "and no analysis was given")
    for name in save:
        if not isinstance(name, str) or not _SAVE_NAME.fullmatch(name):
            raise NetlistError(f"save: {name!r} is not a vector name like v(node) or i(vsource)")
    if save:
        out.append(save_card(save))
    if options:
        out.append(_options_line(options))
    if analysis is not None:
        out.append(analysis.card())
    out.append(END)
    for line in "\n".join(out[len(kept):]).splitlines():
        policy.check_line(None, line)  # the lines added here obey the same rules
    return Netlist("\n".join(out) + "\n")

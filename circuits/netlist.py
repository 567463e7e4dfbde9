"""Turn a PySpice circuit or netlist text into the complete deck that a simulator runs.

The deck is normalised once, here, for every backend: absolute `.include` paths, an explicit TMAX on
every `.tran`, the `.save` list, options, exactly one `.end`; obviously wrong element values are refused
before ngspice sees them (ngspice silently accepts a negative capacitance).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from gaincell.errors import NetlistError

from .analysis import Analysis

ANALYSIS_CARDS = (".tran", ".op", ".dc", ".ac", ".noise", ".tf", ".sens", ".pz", ".disto")
_NEGATIVE_PASSIVE = re.compile(r"^([rcl]\S*)\s+\S+\s+\S+\s+(-\S+)", re.IGNORECASE)
_SAVE_NAME = re.compile(r"^(v\([^()]+\)|i\([^()]+\)|@[^\s]+|[a-z0-9_.#:]+)$", re.IGNORECASE)


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


def _fix_tran(line: str) -> str:
    """Give a `.tran` card an explicit TMAX (= its print step) when it has none."""
    tokens = line.split()
    words = [t for t in tokens[1:] if t.lower() != "uic"]
    uic = len(words) != len(tokens) - 1
    if len(words) < 2:
        raise NetlistError(f"'.tran' needs at least a step and a stop time: {line!r}")
    if len(words) == 2:
        words.append("0")
    if len(words) == 3:
        words.append(words[0])
    return " ".join([tokens[0], *words] + (["uic"] if uic else []))


def _absolute_include(line: str, base_dir: Path) -> str:
    card, _, rest = line.partition(" ")
    rest = rest.strip()
    quoted = rest[:1] in "'\""
    path_text = rest.split(rest[0])[1] if quoted else rest.split()[0]
    tail = rest[len(path_text) + (2 if quoted else 0):]
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    if not path.exists():
        raise NetlistError(f"{card} file not found: {path} (from line {line!r})")
    return f"{card} {path}{tail}"


def prepare(source, analysis: Analysis | None = None, save=(), options: dict | None = None,
            base_dir: str | Path | None = None) -> Netlist:
    """Build the runnable deck from a PySpice `Circuit` (or anything whose `str()` is a netlist) or text.

    analysis: appended as a control card; when None the netlist must carry its own analysis lines.
    save: vector names (`v(node)`, `i(vsource)`) to keep; empty keeps every node voltage and branch current.
    options: written as one `.options` line (e.g. {"gmin": 1e-15}).
    base_dir: where relative `.include`/`.lib` paths are resolved (default: the current directory).
    """
    text = source if isinstance(source, str) else str(source)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    lines = [ln.rstrip() for ln in text.strip("\n").splitlines()]
    if not lines or not lines[0].strip():
        raise NetlistError("the netlist is empty (its first line must be a title)")
    out = [lines[0]]
    own_analyses = 0
    for number, line in enumerate(lines[1:], start=2):
        low = line.strip().lower()
        card = low.split()[0] if low else ""
        if card == ".end":
            break
        if card == ".control":
            raise NetlistError(f"line {number}: '.control' blocks are not supported; gaincell runs the "
                               "netlist's analysis lines itself (remove the .control ... .endc block)")
        if card in (".include", ".inc", ".lib"):
            line = _absolute_include(line.strip(), base)
        elif card == ".tran":
            line = _fix_tran(line.strip())
        if card in ANALYSIS_CARDS:
            own_analyses += 1
        match = _NEGATIVE_PASSIVE.match(line.strip())
        if match:
            kind = {"r": "resistance", "c": "capacitance", "l": "inductance"}[match.group(1)[0].lower()]
            raise NetlistError(f"line {number}: negative {kind} {match.group(2)!r} on element "
                               f"{match.group(1)!r}: {kind} must be positive")
        out.append(line)
    if analysis is not None and own_analyses:
        raise NetlistError("the netlist already has analysis lines; pass analysis=None to run them, "
                           "or remove them to run the given analysis")
    if analysis is None and not own_analyses:
        raise NetlistError(f"the netlist has no analysis line (one of {', '.join(ANALYSIS_CARDS)}) "
                           "and no analysis was given")
    for name in save:
        if not _SAVE_NAME.match(name):
            raise NetlistError(f"save: {name!r} is not a vector name like v(node) or i(vsource)")
    if save:
        out.append(".save " + " ".join(save))
    if options:
        out.append(".options " + " ".join(f"{k}={v}" for k, v in options.items()))
    if analysis is not None:
        out.append(analysis.card())
    out.append(".end")
    return Netlist("\n".join(out) + "\n")

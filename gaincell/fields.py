"""Design fields that carry their own unit, range and description.

    cs_f: float = quantity("storage capacitance", "F", 1e-18, 1e-9, default=3e-15)

One declaration serves validation (`check_quantities`, called by each design's `__post_init__`), help text
(`field_help`) and error messages (`ConfigError("cs_f", "must be a number between 1e-18 and 1e-09 F, ...")`).
A range may name another field of the same object as a bound (`high="vdd_v"`: an input amplitude cannot
exceed the supply).
"""
from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import MISSING, dataclass

from .errors import ConfigError

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3


def shown(value) -> str:
    """A repr short enough for an error message, whatever the value's size or nesting."""
    return _short.repr(value)


def is_number(value) -> bool:
    """A plain int or float (bool is an int in Python, but `true` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Quantity:
    """What a field holds: description, unit and allowed closed range (bounds may name sibling fields)."""

    doc: str
    unit: str = ""
    low: float | str | None = None
    high: float | str | None = None
    integer: bool = False

    def bounds(self, owner) -> tuple[float | None, float | None]:
        return tuple(getattr(owner, b) if isinstance(b, str) else b for b in (self.low, self.high))

    def describe(self, owner=None) -> str:
        """The field's help text: description, unit and range."""
        low, high = self.bounds(owner) if owner is not None else (self.low, self.high)
        kind = "integer" if self.integer else self.unit
        span = f"{_bound(low)} .. {_bound(high)}" if low is not None or high is not None else ""
        detail = ", ".join(part for part in (kind, span) if part)
        return f"{self.doc} ({detail})" if detail else self.doc

    def problem(self, value, owner) -> str | None:
        """Why `value` is not allowed here (None: it is)."""
        low, high = self.bounds(owner)
        if self.integer:
            if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
                return None
            return f"must be an integer in [{low}, {high}], got {shown(value)}"
        if is_number(value) and (low is None or low <= value) and (high is None or value <= high):
            return None  # NaN fails both comparisons, infinities the range
        return f"must be a number between {low:g} and {high:g} {self.unit}".rstrip() + f", got {shown(value)}"


def _bound(value) -> str:
    return "" if value is None else f"{value:g}" if is_number(value) else str(value)


def quantity(doc: str, unit: str = "", low=None, high=None, *, default=MISSING, integer: bool = False):
    """A dataclass field with its description, unit and allowed range [low, high]."""
    return dataclasses.field(default=default, metadata={"quantity": Quantity(doc, unit, low, high, integer)})


def described(doc: str, *, default=MISSING, nested: type | None = None):
    """A dataclass field that is not a number (a name, a list, or a `nested` design of its own): a
    description only."""
    return dataclasses.field(default=default, metadata={"quantity": Quantity(doc), "nested": nested})


def field_quantity(field: dataclasses.Field) -> Quantity:
    return field.metadata.get("quantity") or Quantity(field.name)


def check_quantities(owner, prefix: str = "") -> None:
    """Refuse, naming the field, every ranged field of `owner` whose value is out of its range."""
    for field in dataclasses.fields(owner):
        rule = field_quantity(field)
        if rule.low is None and rule.high is None and not rule.integer:
            continue
        problem = rule.problem(getattr(owner, field.name), owner)
        if problem:
            raise ConfigError(prefix + field.name, problem)


def field_help(cls, prefix: str = "") -> list[str]:
    """One line per field of a design class (nested designs expanded): `name: description (unit, range)`."""
    lines = []
    for field in dataclasses.fields(cls):
        lines.append(f"{prefix}{field.name}: {field_quantity(field).describe()}")
        nested = field.metadata.get("nested")
        if nested is not None:
            lines += field_help(nested, f"{prefix}{field.name}.")
    return lines

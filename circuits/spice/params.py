"""SPICE numbers and `.param` arithmetic, evaluated without `eval`: enough to see a negative R, C or L that a
deck hides behind a parameter (`.param rneg=-1k` ... `R1 a b {rneg}`).

Only numbers with SPICE scale suffixes (`1k`, `2.5meg`, `10nF`), parameter names, `+ - * /` and parentheses
are understood. Anything else (a function call, `**`, a comparison, a subcircuit parameter whose value comes
from each instance) is "unknown": `evaluate` returns None and the value is left to ngspice.
"""
from __future__ import annotations

import math
import re
from typing import Callable

SCALE = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "mil": 25.4e-6, "m": 1e-3, "u": 1e-6, "n": 1e-9,
         "p": 1e-12, "f": 1e-15, "a": 1e-18}
MAX_DEPTH = 64  # parentheses, unary signs and parameter references nested deeper than this are "unknown"
MAX_LENGTH = 2000  # longer expressions are "unknown" (ngspice still evaluates them)

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?([a-z]*)", re.IGNORECASE)
_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?[a-z]*)|(?P<name>[a-z_][a-z0-9_]*)"
                    r"|(?P<op>[-+*/()]))", re.IGNORECASE)


class Unknown(Exception):
    """The expression uses something this evaluator does not model."""


def spice_number(text: str) -> float | None:
    """`1k` -> 1000.0, `10nF` -> 1e-8, `2.5meg` -> 2.5e6, `1e-9` -> 1e-9; None if `text` is not a number.
    As in SPICE, letters after the scale suffix are ignored and a leading `f` is femto, not farad."""
    match = _NUMBER.fullmatch(text.strip())
    if not match:
        return None
    suffix = match.group(1).lower()
    mantissa = float(text.strip()[: match.start(1)])
    for name in ("meg", "mil"):
        if suffix.startswith(name):
            return mantissa * SCALE[name]
    return mantissa * SCALE.get(suffix[:1], 1.0)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise Unknown(text[position:])
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over: sum := product (('+'|'-') product)*; product := unary (('*'|'/') unary)*;
    unary := ('+'|'-') unary | atom; atom := number | name | '(' sum ')'."""

    def __init__(self, tokens, lookup: Callable[[str, int], float], depth: int):
        self.tokens, self.lookup, self.depth, self.at = tokens, lookup, depth, 0

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise Unknown("unexpected end")
        self.at += 1
        return self.tokens[self.at - 1]

    def nested(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unknown("nested too deeply")

    def sum(self) -> float:
        value = self.product()
        while self.peek() in ("+", "-"):
            value = value + self.product() if self.take()[1] == "+" else value - self.product()
        return value

    def product(self) -> float:
        value = self.unary()
        while self.peek() in ("*", "/"):
            operator = self.take()[1]
            right = self.unary()
            if operator == "/" and right == 0:
                raise Unknown("division by zero")
            value = value * right if operator == "*" else value / right
        return value

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            self.nested()
            sign = -1.0 if self.take()[1] == "-" else 1.0
            value = sign * self.unary()
            self.depth -= 1
            return value
        return self.atom()

    def atom(self) -> float:
        kind, text = self.take()
        if kind == "number":
            return spice_number(text)
        if kind == "name":
            if self.peek() == "(":
                raise Unknown(f"function {text}()")
            return self.lookup(text.lower(), self.depth + 1)
        if text == "(":
            self.nested()
            value = self.sum()
            if self.take()[1] != ")":
                raise Unknown("unbalanced parentheses")
            self.depth -= 1
            return value
        raise Unknown(text)


def unwrap(value: str) -> str:
    """The expression inside `{...}`, `'...'` or `"..."` (ngspice's expression quotes); bare text unchanged."""
    value = value.strip()
    if len(value) >= 2 and (value[0], value[-1]) in (("{", "}"), ("'", "'"), ('"', '"')):
        return value[1:-1]
    return value


def evaluate(expression: str, lookup: Callable[[str, int], float], depth: int = 0) -> float:
    """Evaluate `expression` (braces or quotes allowed around it); `lookup(name, depth)` gives a parameter's
    value or raises `Unknown`. Raises `Unknown` for anything outside the grammar or a non-finite result."""
    text = unwrap(expression)
    if len(text) > MAX_LENGTH or depth > MAX_DEPTH:
        raise Unknown("too long or nested too deeply")
    parser = _Parser(_tokens(text), lookup, depth)
    value = parser.sum()
    if parser.at != len(parser.tokens):
        raise Unknown("trailing text")
    if not math.isfinite(value):
        raise Unknown("not finite")
    return value


class Scope:
    """Parameters visible at one place of a deck: its own `.param` values, names that are unknown here
    (subcircuit parameters, set per instance) and the enclosing scope."""

    def __init__(self, parent: "Scope | None" = None):
        self.parent = parent
        self.expressions: dict[str, str] = {}
        self.opaque: set[str] = set()
        self._evaluating: set[str] = set()

    def define(self, name: str, expression: str) -> None:
        self.expressions[name.lower()] = expression

    def hide(self, name: str) -> None:
        self.opaque.add(name.lower())

    def lookup(self, name: str, depth: int) -> float:
        if name in self.opaque:
            raise Unknown(f"{name} is set per subcircuit instance")
        if name in self.expressions:
            if name in self._evaluating:
                raise Unknown(f"{name} refers to itself")
            self._evaluating.add(name)
            try:
                return evaluate(self.expressions[name], self.lookup, depth)
            finally:
                self._evaluating.discard(name)
        if self.parent is None:
            raise Unknown(f"{name} is not a .param")
        return self.parent.lookup(name, depth)

    def value(self, expression: str) -> float | None:
        """The value of `expression` here, or None where it cannot be known before ngspice runs."""
        try:
            return evaluate(expression, self.lookup)
        except (Unknown, OverflowError, ValueError):
            return None


_SPAN = re.compile(r"\{[^{}]*\}|'[^']*'|\"[^\"]*\"")
_ASSIGNMENT = re.compile(r"(?<![=<>!\w])([a-z_][a-z0-9_]*)\s*=(?!=)", re.IGNORECASE)


def assignments(text: str) -> list[tuple[str, str]]:
    """`a=1k b = {2*a} c='a+1'` -> [('a', '1k'), ('b', '{2*a}'), ('c', "'a+1'")]: each value runs up to the
    next `name=` outside braces and quotes (so `a = -1 + 3` is one value, as numparam reads it)."""
    quoted = [m.span() for m in _SPAN.finditer(text)]
    starts = [m for m in _ASSIGNMENT.finditer(text) if not any(a <= m.start() < b for a, b in quoted)]
    found = []
    for match, following in zip(starts, starts[1:] + [None]):
        end = following.start() if following else len(text)
        found.append((match.group(1), text[match.end():end].strip().rstrip(",").strip()))
    return found

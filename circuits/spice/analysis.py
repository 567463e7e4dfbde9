"""Analyses as small validated dataclasses that render to one SPICE control card.

Every transient gaincell builds carries an explicit TMAX (`max_step_s`): ngspice's default,
min(print step, (stop - start) / 50), made a 100 us retention run 1000x slower on these machines (docs/circuits.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from gaincell.errors import ConfigError

from .elements import control


def _positive(name: str, value: float) -> None:
    if not (value > 0):
        raise ConfigError(name, f"must be > 0, got {value!r}")


@dataclass(frozen=True)
class Transient:
    """`.tran` from `start_s` to `stop_s`: print step `step_s`, largest internal step `max_step_s`."""

    step_s: float
    stop_s: float
    max_step_s: float | None = None
    start_s: float = 0.0
    uic: bool = False

    def __post_init__(self):
        _positive("step_s", self.step_s)
        _positive("stop_s", self.stop_s)
        if self.max_step_s is not None:
            _positive("max_step_s", self.max_step_s)
        if not (0 <= self.start_s < self.stop_s):
            raise ConfigError("start_s", f"must be in [0, stop_s={self.stop_s}), got {self.start_s!r}")

    @property
    def tmax_s(self) -> float:
        return self.step_s if self.max_step_s is None else self.max_step_s

    def card(self) -> str:
        return control(".tran", self.step_s, self.stop_s, self.start_s, self.tmax_s, *(["uic"] if self.uic else []))


@dataclass(frozen=True)
class OperatingPoint:
    """`.op`: the DC operating point."""

    def card(self) -> str:
        return control(".op")


@dataclass(frozen=True)
class DCSweep:
    """`.dc SOURCE start stop step`: sweep one independent source."""

    source: str
    start: float
    stop: float
    step: float

    def __post_init__(self):
        if not self.source or not self.source[0].lower() in "vi":
            raise ConfigError("source", f"must name a V or I source, got {self.source!r}")
        if self.step == 0:
            raise ConfigError("step", "must be non-zero")

    def card(self) -> str:
        return control(".dc", self.source, self.start, self.stop, self.step)


@dataclass(frozen=True)
class AC:
    """`.ac` small-signal sweep; `variation` is one of dec, oct, lin."""

    variation: str
    points: int
    start_hz: float
    stop_hz: float

    def __post_init__(self):
        if self.variation not in ("dec", "oct", "lin"):
            raise ConfigError("variation", f"must be dec, oct or lin, got {self.variation!r}")
        if self.points < 1:
            raise ConfigError("points", f"must be >= 1, got {self.points!r}")
        _positive("start_hz", self.start_hz)
        if not self.stop_hz > self.start_hz:
            raise ConfigError("stop_hz", f"must be > start_hz={self.start_hz}, got {self.stop_hz!r}")

    def card(self) -> str:
        return control(".ac", self.variation, self.points, self.start_hz, self.stop_hz)


Analysis = Transient | OperatingPoint | DCSweep | AC

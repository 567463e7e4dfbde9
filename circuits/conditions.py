"""Sweeps over operating conditions: a cell testbench simulated at several process corners and temperatures,
the conditions being the sweep's leading coordinates (`gaincell.conditions`).

    sweep = conditioned(Sweep("read", CellRead(design), grid), Conditions(("tt", "ss"), (27.0, 85.0)))

Every netlist holds points of one condition only (the condition leads the pack key): it is the testbench's
own netlist for its design at that corner and temperature.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from gaincell.conditions import CONDITION_COORDS, Condition, Conditions, at_condition

from .sweep import Sweep, Testbench


@lru_cache(maxsize=256)
def _testbench_at(inner: Testbench, corner: str, temp_c: float) -> Testbench:
    return dataclasses.replace(inner, design=at_condition(inner.design, Condition(corner, temp_c)))


@dataclass(frozen=True)
class ConditionedTestbench(Testbench):
    """`inner` (a testbench with a `design` field) at the condition given by each point's condition
    coordinates; the other coordinates are `inner`'s own."""

    inner: Testbench
    conditions: Conditions

    @property
    def name(self):
        return self.inner.name

    @property
    def subckt_name(self):
        return self.inner.subckt_name

    @property
    def probes(self):
        return self.inner.probes

    @property
    def shared_probes(self):
        return self.inner.shared_probes

    @property
    def max_pack(self):
        return self.inner.max_pack

    @property
    def splittable(self):
        return self.inner.splittable

    @property
    def design(self):
        return self.inner.design

    @property
    def c2p(self):
        return getattr(self.inner, "c2p", None)

    @property
    def dac(self):
        return getattr(self.inner, "dac", None)

    def at(self, point: dict) -> Testbench:
        """`inner` for the condition of `point`."""
        condition = self.conditions.of_point(point, self.inner.design)
        return _testbench_at(self.inner, condition.corner, condition.temp_c)

    @staticmethod
    def own(point: dict) -> dict:
        """`point` without its condition coordinates."""
        return {k: v for k, v in point.items() if k not in CONDITION_COORDS}

    def pack_key(self, point):
        condition = tuple(point[k] for k in CONDITION_COORDS if k in point)
        return condition, self.inner.pack_key(self.own(point))

    def netlist(self, points):
        return self.at(points[0]).netlist([self.own(p) for p in points])

    def extract(self, vectors, point):
        return self.at(point).extract(vectors, self.own(point))

    def describe(self) -> dict:
        return {**self.inner.describe(), "conditions": dataclasses.asdict(self.conditions)}

    def coordinate_labels(self) -> dict[str, list[str]]:
        return self.conditions.labels()


def conditioned(sweep: Sweep, conditions: Conditions) -> Sweep:
    """`sweep` over `conditions` too (unchanged when there are none)."""
    if not conditions:
        return sweep
    return dataclasses.replace(sweep, testbench=ConditionedTestbench(sweep.testbench, conditions),
                               grid=conditions.grid() | dict(sweep.grid))

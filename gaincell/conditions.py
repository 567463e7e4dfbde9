"""Operating conditions (process corner, temperature) as coordinates of a characterization's sweeps.

    conditions = Conditions.checked(design, corners=["tt", "ss"], temps_c=[-40, 27, 85])
    read = read_condition("char.h5", "read", corner="ss", temp_c=85)   # one condition's slice

A characterized condition sweep carries `corner` (an integer index; its names are the CF attributes
`flag_values`/`flag_meanings` of that coordinate, so xarray reads the file as usual) and/or `temp_c`
(degrees Celsius) as its leading coordinates; a sweep made without them holds the design's own condition.
A slice is an ordinary sweep whose design record names its corner and temperature, so everything that reads
one condition (summaries, fits, surrogates) works on it unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .design import CellDesign, check_spice_name
from .design_record import DESIGN_RECORD, design_record, read_design_record
from .errors import ConfigError
from .fields import shown
from .sweep_data import SweepData

CORNER, TEMPERATURE = "corner", "temp_c"
CONDITION_COORDS = (CORNER, TEMPERATURE)
TEMP_RANGE_C = (-60.0, 200.0)  # what the compact models are meant for; beyond it they extrapolate
MAX_CONDITIONS = 64
_SECTION = re.compile(r"^\s*\.lib\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)  # `.lib NAME` opens a section


@dataclass(frozen=True)
class Condition:
    """One operating condition: a `.lib` section ('' = plain include) and a temperature."""

    corner: str
    temp_c: float

    @property
    def label(self) -> str:
        return f"{self.corner or 'nominal'} {self.temp_c:g} C"


def library_sections(design: CellDesign) -> list[str]:
    """The `.lib` sections every model library of `design` defines (the corners it can be simulated at)."""
    common = None
    for library in design.model_libraries:
        text = design.library_path(library).read_text(errors="replace")
        names = list(dict.fromkeys(_SECTION.findall(text)))
        common = names if common is None else [n for n in common if n in names]
    return common or []


@dataclass(frozen=True)
class Conditions:
    """The corners and temperatures a characterization sweeps (empty: that coordinate is absent)."""

    corners: tuple[str, ...] = ()
    temps_c: tuple[float, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.corners or self.temps_c)

    @classmethod
    def checked(cls, design: CellDesign, corners=(), temps_c=()) -> "Conditions":
        """Conditions for `design`, refused (naming the option) unless every corner is a `.lib` section of
        its libraries and every temperature lies within TEMP_RANGE_C."""
        corners, temps = tuple(corners or ()), tuple(float(t) for t in temps_c or ())
        if corners:
            if not design.corner:
                raise ConfigError("--corner", f"design {design.name!r} includes its model libraries without "
                                              f"sections (corner ''), so it has no corners; use a design whose "
                                              f"libraries have .lib sections (e.g. sky130), or only --temp")
            sections = library_sections(design)
            for corner in corners:
                check_spice_name("--corner", corner)
                if corner not in sections:
                    listed = ", ".join(sections[:12]) + (f", ... ({len(sections)} in all)" if len(sections) > 12 else "")
                    raise ConfigError("--corner", f"{shown(corner)} is not a .lib section of {design.name!r}'s "
                                                  f"model libraries; they have: {listed or '(none)'}")
        for temp in temps:
            if not TEMP_RANGE_C[0] <= temp <= TEMP_RANGE_C[1]:
                raise ConfigError("--temp", f"{temp:g} C is outside {TEMP_RANGE_C[0]:g} .. {TEMP_RANGE_C[1]:g} C")
        for option, values in (("--corner", corners), ("--temp", temps)):
            if len(set(values)) != len(values):
                raise ConfigError(option, f"lists a value twice: {', '.join(map(str, values))}")
        if len(corners or [0]) * len(temps or [0]) > MAX_CONDITIONS:
            raise ConfigError("--corner/--temp", f"at most {MAX_CONDITIONS} conditions in one file")
        return cls(corners, temps)

    def grid(self) -> dict[str, list[float]]:
        """The leading sweep coordinates: corner indices and temperatures."""
        return ({CORNER: list(range(len(self.corners)))} if self.corners else {}) | \
            ({TEMPERATURE: list(self.temps_c)} if self.temps_c else {})

    def labels(self) -> dict[str, list[str]]:
        return {CORNER: list(self.corners)} if self.corners else {}

    def of_point(self, point: dict, design: CellDesign) -> Condition:
        """The condition of a sweep point (its condition coordinates, else the design's)."""
        corner = self.corners[int(point[CORNER])] if self.corners else design.corner
        return Condition(corner, float(point[TEMPERATURE]) if self.temps_c else design.temp_c)


def at_condition(design: CellDesign, condition: Condition) -> CellDesign:
    """`design` simulated at `condition`."""
    return dataclasses.replace(design, corner=condition.corner, temp_c=condition.temp_c)


def sweep_conditions(data: SweepData) -> list[Condition]:
    """Every condition a sweep holds (one, the design's, when it has no condition coordinates)."""
    cell = read_design_record(data.attrs, f"sweep {data.name!r}").cell
    corners = data.labels.get(CORNER) if CORNER in data.coords else [cell.corner]
    temps = [float(t) for t in data.coords[TEMPERATURE]] if TEMPERATURE in data.coords else [cell.temp_c]
    return [Condition(c, t) for c in corners for t in temps]


def _choose(available: list, wanted, option: str, shown_as, where: str) -> int:
    """The index of `wanted` among `available` (None: the first), refused naming what there is."""
    if wanted is None:
        return 0
    for index, value in enumerate(available):
        if (np.isclose(value, float(wanted), rtol=0, atol=1e-9) if option == "--temp" else value == wanted):
            return index
    listed = ", ".join(shown_as(a) for a in available)
    raise ConfigError(option, f"{shown_as(wanted)} is not characterized in {where}; it holds {listed}")


def select_condition(data: SweepData, corner: str | None = None, temp_c: float | None = None) -> SweepData:
    """One condition's slice of a sweep: its condition coordinates removed, its design record naming the
    corner and temperature. None picks the only one (refused when there are several, listing them); a value
    the sweep lacks is refused listing those it has."""
    where = f"sweep {data.name!r}"
    record = read_design_record(data.attrs, where)
    corners = data.labels.get(CORNER, []) if CORNER in data.coords else [record.cell.corner]
    temps = [float(t) for t in data.coords[TEMPERATURE]] if TEMPERATURE in data.coords else [record.cell.temp_c]
    unchosen = [option for option, values, wanted in (("--corner", corners, corner), ("--temp", temps, temp_c))
                if len(values) > 1 and wanted is None]
    if unchosen:
        everything = ", ".join(c.label for c in sweep_conditions(data))
        raise ConfigError("/".join(unchosen), f"{where} holds several conditions ({everything}); choose one with "
                                              f"{' and '.join(unchosen)}")
    pick = {CORNER: _choose(corners, corner, "--corner", lambda c: repr(c or "nominal"), where),
            TEMPERATURE: _choose(temps, temp_c, "--temp", lambda t: f"{float(t):g} C", where)}
    condition = Condition(corners[pick[CORNER]], temps[pick[TEMPERATURE]])
    if not any(name in data.coords for name in CONDITION_COORDS):
        return data
    index = tuple(pick[name] if name in CONDITION_COORDS else slice(None) for name in data.coords)
    attrs = {**data.attrs, DESIGN_RECORD: design_record(at_condition(record.cell, condition), record.c2p, record.dac),
             "condition": json.dumps(dataclasses.asdict(condition))}
    return SweepData(data.name, {k: v for k, v in data.coords.items() if k not in CONDITION_COORDS},
                     {k: v[index] for k, v in data.waveforms.items()}, {k: v[index] for k, v in data.scalars.items()},
                     data.status[index], data.error[index], data.deck_index[index], data.decks, dict(data.units),
                     attrs, {k: v for k, v in data.labels.items() if k not in CONDITION_COORDS})


def read_condition(path: str | Path, name: str, corner: str | None = None, temp_c: float | None = None) -> SweepData:
    """One condition of one sweep of a characterization file (`select_condition`)."""
    from .store import read_sweep

    try:
        return select_condition(read_sweep(path, name), corner, temp_c)
    except ConfigError as exc:
        raise ConfigError(exc.parameter, exc.problem.replace(f"sweep {name!r}", f"{path}")) from None

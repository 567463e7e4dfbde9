"""One sweep in memory (`SweepData`): coordinates, waveforms and scalars per point, per-point status and the
netlists the points ran in; `gaincell.store` reads and writes it as an HDF5 group."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from gaincell.errors import GaincellError

PENDING, OK, FAILED = 0, 1, 2
STATUS_MEANING = "0 pending, 1 ok, 2 failed"
RESERVED_NAMES = ("status", "error", "deck_index", "deck", "deck_sha256", "sample", "n_samples")  # not signals
COMPLEX_TYPE = "_PFNC_DOUBLE_COMPLEX_TYPE"  # the HDF5 compound {r, i} of complex variables (nc-complex)

_SUFFIX_UNITS = {"_v": "V", "_a": "A", "_s": "s", "_c": "C", "_j": "J", "_f": "F", "_w": "W", "_hz": "Hz",
                 "_ohm": "Ohm"}


def unit_of(name: str) -> str:
    """SI unit from a name: v(...) V, i(...) A, time s, frequency Hz, else the unit suffix (`charge_c` C)."""
    if name.startswith("v("):
        return "V"
    if name.startswith("i("):
        return "A"
    if name == "time":
        return "s"
    if name == "frequency":
        return "Hz"
    for suffix, unit in _SUFFIX_UNITS.items():
        if name.endswith(suffix):
            return unit
    return ""


def is_scale(name: str) -> bool:
    """Whether a vector is an analysis' x axis: time, frequency, or a DC sweep's source (`v-sweep`)."""
    return name in ("time", "frequency") or name.removesuffix(")").endswith("-sweep")


def _as_numbers(name: str, value) -> np.ndarray:
    """A signal as float64 or, when the simulator gave complex values, complex128 (never truncated)."""
    value = np.asarray(value)
    if value.dtype.kind not in "biufc":
        raise GaincellError(f"signal {name!r}: {value.dtype} values are not numbers")
    if value.dtype.kind == "c" and is_scale(name):
        # an axis is real; ngspice writes the frequency of a complex plot with an undefined imaginary part
        value = value.real
    return value.astype(complex if value.dtype.kind == "c" else float)


@dataclass
class SweepData:
    """One sweep held in memory: coordinates, results, per-point status, provenance."""

    name: str
    coords: dict[str, np.ndarray]
    waveforms: dict[str, np.ndarray] = field(default_factory=dict)  # (*grid, sample), NaN padded
    scalars: dict[str, np.ndarray] = field(default_factory=dict)  # (*grid)
    status: np.ndarray | None = None
    error: np.ndarray | None = None
    deck_index: np.ndarray | None = None
    decks: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)  # names of integer-index coordinates (`corner`)

    def __post_init__(self):
        shape = self.shape
        if self.status is None:
            self.status = np.zeros(shape, np.int8)
        if self.error is None:
            self.error = np.full(shape, "", dtype=object)
        if self.deck_index is None:
            self.deck_index = np.full(shape, -1, np.int32)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.coords.values())

    @property
    def scale(self) -> str | None:
        """The waveforms' x axis (`time`, `frequency`, a DC sweep's source), None when they have none."""
        return next((name for name in self.waveforms if is_scale(name)), None)

    @property
    def n_samples(self) -> np.ndarray:
        """Valid samples of every point's waveforms (those of the x axis; else the longest waveform)."""
        tables = [self.waveforms[self.scale]] if self.scale else list(self.waveforms.values())
        counts = [np.sum(~np.isnan(t), axis=-1) for t in tables]
        return np.max(counts, axis=0).astype(np.int32) if counts else np.zeros(self.shape, np.int32)

    def is_complex(self, name: str) -> bool:
        table = self.waveforms.get(name, self.scalars.get(name))
        return table is not None and table.dtype.kind == "c"

    def counts(self) -> dict[str, int]:
        return {"ok": int(np.sum(self.status == OK)), "failed": int(np.sum(self.status == FAILED)),
                "pending": int(np.sum(self.status == PENDING)), "total": int(self.status.size)}

    def add_deck(self, text: str) -> int:
        self.decks.append(text)
        return len(self.decks) - 1

    def record_ok(self, index: tuple[int, ...], signals: dict[str, np.ndarray], deck: int) -> None:
        """Store one point's results: 1-D arrays become waveforms, 0-D scalars; complex stays complex."""
        for name, value in signals.items():
            if name in RESERVED_NAMES or name in self.coords or name == COMPLEX_TYPE:
                raise GaincellError(f"signal name {name!r} clashes with a reserved or coordinate name")
            value = _as_numbers(name, value)
            self.units.setdefault(name, unit_of(name))
            if value.ndim == 0:
                self.scalars.setdefault(name, np.full(self.shape, np.nan))
                table = _holding(self.scalars, name, value.dtype)
                table[index] = value
            else:
                self._waveform_table(name, len(value))
                table = _holding(self.waveforms, name, value.dtype)
                table[index] = np.nan
                table[index][: len(value)] = value
        self.status[index], self.error[index], self.deck_index[index] = OK, "", deck

    def record_failure(self, index: tuple[int, ...], message: str, deck: int = -1) -> None:
        self.status[index], self.error[index], self.deck_index[index] = FAILED, message, deck

    def _waveform_table(self, name: str, length: int) -> np.ndarray:
        width = max([length] + [t.shape[-1] for t in self.waveforms.values()])
        for key, table in self.waveforms.items():
            if table.shape[-1] < width:
                pad = np.full(self.shape + (width - table.shape[-1],), np.nan)
                self.waveforms[key] = np.concatenate([table, pad], axis=-1)
        if name not in self.waveforms:
            self.waveforms[name] = np.full(self.shape + (width,), np.nan)
        return self.waveforms[name]

    def point(self, index: tuple[int, ...]) -> dict[str, np.ndarray]:
        """One point's signals with waveform padding removed."""
        n = int(self.n_samples[index]) if self.waveforms else None
        out = {k: v[index][:n] for k, v in self.waveforms.items()}
        out.update({k: v[index] for k, v in self.scalars.items()})
        return out


def _holding(tables: dict[str, np.ndarray], name: str, dtype: np.dtype) -> np.ndarray:
    """tables[name], widened to complex (exactly) when a complex value arrives for a real table."""
    if dtype.kind == "c" and tables[name].dtype.kind != "c":
        tables[name] = tables[name].astype(complex)
    return tables[name]


def run_as_sweep(name: str, vectors: dict[str, np.ndarray], deck: str, attrs: dict) -> SweepData:
    """A single simulation stored like a one-point sweep (dimension `run` of length 1)."""
    data = SweepData(name, {"run": np.array([0])}, attrs=dict(attrs))
    data.record_ok((0,), vectors, data.add_deck(deck))
    if not vectors:
        data.attrs["note"] = ("the simulator returned this analysis without any points (and so without vectors: "
                              "ngspice names them when the first point arrives)")
    elif all(np.size(v) == 0 for v in vectors.values()):
        data.attrs["note"] = "the simulator returned this analysis without any points (every vector is empty)"
    data.attrs["netlist"] = deck
    data.attrs["netlist_sha256"] = hashlib.sha256(deck.encode()).hexdigest()
    return data

"""The characterization HDF5 store: one netCDF4-compatible group per sweep, written crash-safely.

Layout of a sweep group (opens with `xarray.open_dataset(path, group=NAME, engine="h5netcdf")`):
- one 1-D coordinate per sweep parameter (a dimension scale), e.g. `stored_v(stored_v)`;
- `sample(sample)` when the sweep keeps waveforms; every waveform (`time`, `v(sn)`, `i(vbl)`, ...) has
  dims (*params, sample), padded with NaN past its own length (`n_samples` gives the length);
- scalar results with dims (*params);
- `status` (0 pending, 1 ok, 2 failed), `error` (ngspice's message for failed points), `deck_index`
  (which netlist of `deck`/`deck_sha256` the point ran in);
- attributes: testbench, design (JSON), the first netlist text and its sha256, simulator and version,
  created/updated timestamps, spec hash (what a re-run must match to resume).

Crash safety: finished chunks are first written as small files in `FILE.parts/` (atomic rename); the
HDF5 file itself is only ever replaced whole (written to a temporary file, then `os.replace`), so a kill
at any moment leaves the previous complete file plus the parts, and a re-run resumes from both.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gaincell.errors import ConfigError, GaincellError

PENDING, OK, FAILED = 0, 1, 2
STATUS_MEANING = "0 pending, 1 ok, 2 failed"
_RESERVED = ("status", "error", "deck_index", "deck", "deck_sha256", "sample", "n_samples")
_STR = h5py.string_dtype()


_SUFFIX_UNITS = {"_v": "V", "_a": "A", "_s": "s", "_c": "C", "_j": "J", "_f": "F", "_w": "W", "_hz": "Hz",
                 "_ohm": "Ohm"}


def unit_of(name: str) -> str:
    """SI unit from a name: v(...) V, i(...) A, time s, else the unit suffix (`charge_c` C, `i_mid_a` A)."""
    if name.startswith("v("):
        return "V"
    if name.startswith("i("):
        return "A"
    if name == "time":
        return "s"
    for suffix, unit in _SUFFIX_UNITS.items():
        if name.endswith(suffix):
            return unit
    return ""


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
    def n_samples(self) -> np.ndarray:
        if "time" in self.waveforms:
            return np.sum(~np.isnan(self.waveforms["time"]), axis=-1).astype(np.int32)
        return np.zeros(self.shape, np.int32)

    def counts(self) -> dict[str, int]:
        return {"ok": int(np.sum(self.status == OK)), "failed": int(np.sum(self.status == FAILED)),
                "pending": int(np.sum(self.status == PENDING)), "total": int(self.status.size)}

    def add_deck(self, text: str) -> int:
        self.decks.append(text)
        return len(self.decks) - 1

    def record_ok(self, index: tuple[int, ...], signals: dict[str, np.ndarray], deck: int) -> None:
        """Store one point's results: 1-D arrays become waveforms, 0-D scalars."""
        for name, value in signals.items():
            if name in _RESERVED or name in self.coords:
                raise GaincellError(f"signal name {name!r} clashes with a reserved or coordinate name")
            value = np.asarray(value, dtype=float)
            self.units.setdefault(name, unit_of(name))
            if value.ndim == 0:
                table = self.scalars.setdefault(name, np.full(self.shape, np.nan))
                table[index] = value
            else:
                table = self._waveform_table(name, len(value))
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
        n = int(self.n_samples[index]) if "time" in self.waveforms else None
        out = {k: v[index][:n] for k, v in self.waveforms.items()}
        out.update({k: v[index] for k, v in self.scalars.items()})
        return out


def _attach_dims(dataset, dim_names: list[str], group) -> None:
    for axis, dim in enumerate(dim_names):
        dataset.dims[axis].attach_scale(group[dim])


def _write_attr(obj, key: str, value) -> None:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    obj.attrs[key] = value


def _write_sweep(parent: h5py.Group, data: SweepData) -> None:
    group = parent.create_group(data.name)
    dims = list(data.coords)
    for dim, values in data.coords.items():
        ds = group.create_dataset(dim, data=np.asarray(values))
        ds.make_scale(dim)
    waveform_width = max([t.shape[-1] for t in data.waveforms.values()], default=0)
    if waveform_width:
        group.create_dataset("sample", data=np.arange(waveform_width, dtype=np.int32)).make_scale("sample")
    group.create_dataset("deck", data=np.arange(len(data.decks), dtype=np.int32)).make_scale("deck")

    def variable(name, values, var_dims, **attrs):
        ds = group.create_dataset(name, data=values, compression="gzip" if values.size > 4096 else None)
        _attach_dims(ds, var_dims, group)
        for k, v in attrs.items():
            ds.attrs[k] = v

    for name, table in data.waveforms.items():
        variable(name, table, dims + ["sample"], units=data.units.get(name, ""), _FillValue=np.nan)
    for name, table in data.scalars.items():
        variable(name, table, dims, units=data.units.get(name, ""), _FillValue=np.nan)
    if waveform_width:
        variable("n_samples", data.n_samples, dims, long_name="valid samples per waveform")
    variable("status", data.status, dims, meaning=STATUS_MEANING)
    variable("error", data.error.astype(_STR), dims, long_name="ngspice message of a failed point")
    variable("deck_index", data.deck_index, dims, long_name="index into deck of the netlist run")
    variable("deck_text", np.array(data.decks, dtype=object).astype(_STR), ["deck"])
    variable("deck_sha256", np.array([hashlib.sha256(d.encode()).hexdigest() for d in data.decks],
                                     dtype=object).astype(_STR), ["deck"])
    for key, value in data.attrs.items():
        _write_attr(group, key, value)
    counts = data.counts()
    for key, value in counts.items():
        group.attrs[f"points_{key}"] = value


def _read_sweep(group: h5py.Group) -> SweepData:
    dims = [Path(d[0].name).name for d in group["status"].dims]
    coords = {d: group[d][()] for d in dims}
    data = SweepData(group.name.rsplit("/", 1)[-1], coords)
    data.status = group["status"][()]
    data.error = np.array([s.decode() if isinstance(s, bytes) else s for s in group["error"][()].ravel()],
                          dtype=object).reshape(data.shape)
    data.deck_index = group["deck_index"][()]
    data.decks = [s.decode() if isinstance(s, bytes) else s for s in group["deck_text"][()]]
    skip = set(_RESERVED) | set(dims) | {"deck_text"}
    for name, ds in group.items():
        if name in skip:
            continue
        target = data.waveforms if ds.ndim == len(dims) + 1 else data.scalars
        target[name] = ds[()]
        data.units[name] = ds.attrs.get("units", "")
    for key, value in group.attrs.items():
        if key.startswith("points_") or key in ("DIMENSION_LIST",):
            continue
        data.attrs[key] = value.decode() if isinstance(value, bytes) else value
    return data


def list_sweeps(path: str | Path) -> list[str]:
    """Names of the sweep groups in a characterization file."""
    with h5py.File(path, "r") as f:
        return [k for k, v in f.items() if isinstance(v, h5py.Group) and "status" in v]


def read_sweep(path: str | Path, name: str) -> SweepData:
    """Load one sweep (all points, all signals) from a characterization file."""
    with h5py.File(path, "r") as f:
        if name not in f:
            raise ConfigError("sweep", f"{name!r} is not in {path}; it has {', '.join(f) or 'nothing'}")
        return _read_sweep(f[name])


def save_sweeps(path: str | Path, updated: list[SweepData], file_attrs: dict | None = None) -> None:
    """Write `updated` sweeps into the file at `path`, keeping its other sweeps; atomic (temp + rename)."""
    path = Path(path)
    keep: dict[str, SweepData] = {}
    old_attrs: dict = {}
    if path.exists():
        with h5py.File(path, "r") as f:
            old_attrs = {k: v for k, v in f.attrs.items()}
            for name, obj in f.items():
                if isinstance(obj, h5py.Group) and "status" in obj and name not in {d.name for d in updated}:
                    keep[name] = _read_sweep(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in old_attrs.items():
                f.attrs[key] = value
            f.attrs["file_kind"] = "gaincell characterization"
            f.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for key, value in (file_attrs or {}).items():
                _write_attr(f, key, value)
            for data in list(keep.values()) + list(updated):
                _write_sweep(f, data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_as_sweep(name: str, vectors: dict[str, np.ndarray], deck: str, attrs: dict) -> SweepData:
    """A single simulation stored like a one-point sweep (dimension `run` of length 1)."""
    data = SweepData(name, {"run": np.array([0])}, attrs=dict(attrs))
    data.record_ok((0,), vectors, data.add_deck(deck))
    data.attrs["netlist"] = deck
    data.attrs["netlist_sha256"] = hashlib.sha256(deck.encode()).hexdigest()
    return data

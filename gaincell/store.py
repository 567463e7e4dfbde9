"""The characterization HDF5 store: one netCDF4-compatible group per sweep, written crash-safely.

Layout of a sweep group (opens with `xarray.open_dataset(path, group=NAME, engine="h5netcdf")`):
- one 1-D coordinate per sweep parameter (a dimension scale), e.g. `stored_v(stored_v)`;
- `sample(sample)` when the sweep keeps waveforms; every waveform (`time`, `v(sn)`, `i(vbl)`, ...) has
  dims (*params, sample), padded with NaN past its own length (`n_samples` gives the length);
- scalar results with dims (*params);
- complex results (`.ac`, `.noise`, AC `.sens`) are complex128 variables stored as the HDF5 compound
  {r, i} committed in the group as `_PFNC_DOUBLE_COMPLEX_TYPE` (the nc-complex convention): h5py and
  xarray's h5netcdf engine read them back as complex128;
- `status` (0 pending, 1 ok, 2 failed), `error` (ngspice's message for failed points), `deck_index`
  (which netlist of `deck`/`deck_sha256` the point ran in);
- attributes: testbench, design (JSON), the first netlist text and its sha256, simulator and version,
  created/updated timestamps, spec hash (what a re-run must match to resume).

Crash safety: finished chunks are first written as small files in `FILE.parts/` (atomic rename); the
HDF5 file itself is only ever replaced whole (written to a temporary file, then `os.replace`), so a kill
at any moment leaves the previous complete file plus the parts, and a re-run resumes from both.

Reading: any file that is not a complete characterization file (another program's HDF5, a surrogate, a text
file, an empty or truncated file, a sweep group missing datasets) raises `InputFileError` naming the file
and what is wrong.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gaincell.errors import ConfigError, GaincellError, InputFileError
from gaincell.outputs import SURROGATE, SWEEP_FILE, atomic_path, file_kind

PENDING, OK, FAILED = 0, 1, 2
STATUS_MEANING = "0 pending, 1 ok, 2 failed"
_RESERVED = ("status", "error", "deck_index", "deck", "deck_sha256", "sample", "n_samples")
_REQUIRED = ("status", "error", "deck_index", "deck_text")
_STR = h5py.string_dtype()
COMPLEX_TYPE = "_PFNC_DOUBLE_COMPLEX_TYPE"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SWEEP_FILE_HINT = "gaincell reads sweeps from files written by `gaincell simulate`, `characterize` or `validate`"
# what h5py raises for a damaged file or dataset (a GaincellError is re-raised before these are caught)
_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError)


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
            if name in _RESERVED or name in self.coords or name == COMPLEX_TYPE:
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
    if data.waveforms:  # a zero-point analysis keeps an empty sample dimension
        group.create_dataset("sample", data=np.arange(waveform_width, dtype=np.int32)).make_scale("sample")
    group.create_dataset("deck", data=np.arange(len(data.decks), dtype=np.int32)).make_scale("deck")
    if any(t.dtype.kind == "c" for t in (*data.waveforms.values(), *data.scalars.values())):
        group[COMPLEX_TYPE] = np.dtype("<c16")  # the compound {r, i}, named so netCDF readers see it

    def variable(name, values, var_dims, **attrs):
        kind = group[COMPLEX_TYPE] if values.dtype.kind == "c" else None
        ds = group.create_dataset(name, data=values, dtype=kind, compression="gzip" if values.size > 4096 else None)
        _attach_dims(ds, var_dims, group)
        for k, v in attrs.items():
            ds.attrs[k] = v

    def fill(table):
        return np.complex128(complex(np.nan, np.nan)) if table.dtype.kind == "c" else np.nan

    for name, table in data.waveforms.items():
        variable(name, table, dims + ["sample"], units=data.units.get(name, ""), _FillValue=fill(table))
    for name, table in data.scalars.items():
        variable(name, table, dims, units=data.units.get(name, ""), _FillValue=fill(table))
    if data.waveforms:
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


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def open_hdf5(path: str | Path, expected: str) -> h5py.File:
    """`path` opened read-only; `InputFileError` when it is missing, empty, not HDF5 or damaged (`expected`
    says what the command reads, e.g. "a gaincell characterization file")."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    if path.is_dir():
        raise InputFileError(f"{path} is a folder, not {expected}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise InputFileError(f"{path} cannot be read ({exc.strerror})") from None
    if not head:
        raise InputFileError(f"{path}: not {expected}: the file is empty (0 bytes)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        why = ("it is not an HDF5 file (no HDF5 signature: a text file or another format?)" if head != HDF5_SIGNATURE
               else f"it is a damaged HDF5 file (truncated or corrupted?): {exc}")
        raise InputFileError(f"{path}: not {expected}: {why}") from None


def _sweep_groups(f: h5py.File) -> list[str]:
    return [k for k, v in f.items() if isinstance(v, h5py.Group) and "status" in v]


@contextlib.contextmanager
def open_sweep_file(path: str | Path):
    """A characterization file opened for reading; anything else raises `InputFileError` saying what it is."""
    path = Path(path)
    with open_hdf5(path, "a gaincell characterization file") as f:
        kind = _text(f.attrs.get("file_kind", ""))
        if kind != SWEEP_FILE:
            if kind == SURROGATE:
                why = "it is a gaincell surrogate (written by `gaincell fit`; `gaincell inspect` describes it)"
            elif kind:
                why = f"its file_kind is {kind!r}"
            elif _sweep_groups(f):
                why = "it has groups that look like sweeps but no file_kind attribute (written by another program?)"
            else:
                why = "it has no sweep groups (file_kind attribute missing)"
            raise InputFileError(f"{path}: not a gaincell characterization file: {why}; {SWEEP_FILE_HINT}")
        yield f


def _read_sweep(group: h5py.Group, path: Path) -> SweepData:
    """One sweep group, checked for the datasets and shapes the layout promises."""
    where = f"{path}: sweep {group.name.rsplit('/', 1)[-1]!r}"
    try:
        return _parse_sweep(group, where)
    except GaincellError:
        raise
    except _READ_ERRORS as exc:
        raise InputFileError(f"{where} cannot be read (truncated or corrupted?): {exc}") from None


def _parse_sweep(group: h5py.Group, where: str) -> SweepData:
    missing = [name for name in _REQUIRED if not isinstance(group.get(name), h5py.Dataset)]
    if missing:
        raise InputFileError(f"{where} is incomplete: dataset(s) {', '.join(missing)} missing (a gaincell sweep "
                             f"holds {', '.join(_REQUIRED)} and one coordinate per dimension)")

    def refuse(problem: str):
        return InputFileError(f"{where} is malformed: {problem}")

    status = group["status"]
    if status.ndim == 0 or status.dtype.kind not in "iu":
        raise refuse(f"'status' must be an integer array over the sweep's coordinates; it is {status.dtype} "
                     f"of shape {status.shape}")
    dims = []
    for axis, scales in enumerate(status.dims):
        if len(scales) != 1:
            raise refuse(f"axis {axis} of 'status' has no coordinate attached (an HDF5 dimension scale)")
        dims.append(Path(scales[0].name).name)
    coords = {d: group[d][()] for d in dims}
    for axis, (dim, values) in enumerate(coords.items()):
        if values.ndim != 1 or len(values) != status.shape[axis] or values.dtype.kind not in "biuf" \
                or not np.all(np.isfinite(values)):
            raise refuse(f"coordinate {dim!r} ({values.dtype}, shape {values.shape}) must be finite numbers, one "
                         f"per entry of 'status' along axis {axis} ({status.shape[axis]})")
    data = SweepData(group.name.rsplit("/", 1)[-1], coords)
    data.status = status[()]
    if not np.isin(data.status, (PENDING, OK, FAILED)).all():
        raise refuse(f"'status' holds values other than {STATUS_MEANING}")
    for name in ("error", "deck_index"):
        if group[name].shape != data.shape:
            raise refuse(f"{name!r} has shape {group[name].shape}, the coordinates give {data.shape}")
    data.error = np.array([_text(s) for s in group["error"][()].ravel()], dtype=object).reshape(data.shape)
    data.deck_index = group["deck_index"][()]
    data.decks = [_text(s) for s in np.ravel(group["deck_text"][()])]
    skip = set(_RESERVED) | set(dims) | {"deck_text"}
    widths = set()
    for name, ds in group.items():
        if name in skip or not isinstance(ds, h5py.Dataset):
            continue
        if ds.dtype.kind not in "biufc" or ds.shape[: len(dims)] != data.shape or ds.ndim > len(dims) + 1:
            raise refuse(f"variable {name!r} ({ds.dtype}, shape {ds.shape}) is not numbers over the coordinates "
                         f"{data.shape} (plus a sample axis for waveforms)")
        values = ds[()]
        if ds.ndim == len(dims) + 1:
            widths.add(ds.shape[-1])
            data.waveforms[name] = values.astype(complex if values.dtype.kind == "c" else float)
        else:
            data.scalars[name] = values.astype(complex if values.dtype.kind == "c" else float)
        data.units[name] = _text(ds.attrs.get("units", ""))
    if len(widths) > 1:
        raise refuse(f"its waveforms have different sample lengths {sorted(widths)}")
    for key, value in group.attrs.items():
        if key.startswith("points_") or key in ("DIMENSION_LIST",):
            continue
        data.attrs[key] = value.decode() if isinstance(value, bytes) else value
    return data


def list_sweeps(path: str | Path) -> list[str]:
    """Names of the sweep groups in a characterization file."""
    with open_sweep_file(path) as f:
        return _sweep_groups(f)


def read_sweep(path: str | Path, name: str) -> SweepData:
    """Load one sweep (all points, all signals) from a characterization file."""
    path = Path(path)
    with open_sweep_file(path) as f:
        if name not in _sweep_groups(f):
            found = f"it has no group {name!r}" if name not in f else f"its {name!r} is not a sweep group"
            raise ConfigError("sweep", f"{found}; the sweeps of {path} are {', '.join(_sweep_groups(f)) or '(none)'}")
        return _read_sweep(f[name], path)


def save_sweeps(path: str | Path, updated: list[SweepData], file_attrs: dict | None = None,
                replace_other_kind: bool = False) -> None:
    """Write `updated` sweeps into the file at `path`, keeping its other sweeps; atomic (temp + rename).

    An existing file that is not a characterization file is refused (`InputFileError`), or, with
    `replace_other_kind` (the command's --force), replaced; a damaged characterization file is always refused."""
    path = Path(path)
    keep: dict[str, SweepData] = {}
    old_attrs: dict = {}
    if path.exists():
        try:
            with open_sweep_file(path) as f:
                old_attrs = {k: v for k, v in f.attrs.items()}
                for name in _sweep_groups(f):
                    if name not in {d.name for d in updated}:
                        keep[name] = _read_sweep(f[name], path)
        except InputFileError as exc:
            if not replace_other_kind or (path.is_file() and file_kind(path) == SWEEP_FILE):
                raise InputFileError(f"{exc} (refusing to write sweeps into it)") from None
            keep, old_attrs = {}, {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in old_attrs.items():
                f.attrs[key] = value
            f.attrs["file_kind"] = SWEEP_FILE
            f.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for key, value in (file_attrs or {}).items():
                _write_attr(f, key, value)
            for data in list(keep.values()) + list(updated):
                _write_sweep(f, data)


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

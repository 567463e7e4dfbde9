"""The characterization HDF5 store: one netCDF4-compatible group per sweep (a `gaincell.sweep_data.SweepData`
in memory), written crash-safely.

Layout of a sweep group (opens with `xarray.open_dataset(path, group=NAME, engine="h5netcdf")`):
- one 1-D coordinate per sweep parameter (a dimension scale), e.g. `stored_v(stored_v)`; an index coordinate
  (the process `corner` of `gaincell.conditions`) names its values in the CF attributes `flag_values` and
  `flag_meanings` (space-separated names of indices 0, 1, ...);
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
import io
import json
import time
from pathlib import Path

import h5py
import numpy as np

from gaincell.errors import ConfigError, GaincellError, InputFileError
from gaincell.hdf5_trust import check_trusted
from gaincell.interrupts import signals_deferred
from gaincell.outputs import SURROGATE, SWEEP_FILE, atomic_write_bytes, file_kind, utf8_text
from gaincell.sweep_data import COMPLEX_TYPE, FAILED, OK, PENDING, RESERVED_NAMES, STATUS_MEANING, SweepData

_REQUIRED = ("status", "error", "deck_index", "deck_text")
_STR = h5py.string_dtype()
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SWEEP_FILE_HINT = "gaincell reads sweeps from files written by `gaincell simulate`, `characterize` or `validate`"
# what h5py raises for a damaged file or dataset (a GaincellError is re-raised before these are caught)
_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError)


def _attach_dims(dataset, dim_names: list[str], group) -> None:
    for axis, dim in enumerate(dim_names):
        dataset.dims[axis].attach_scale(group[dim])


def _write_attr(obj, key: str, value) -> None:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    obj.attrs[key] = utf8_text(value) if isinstance(value, str) else value


def _write_sweep(parent: h5py.Group, data: SweepData) -> None:
    group = parent.create_group(data.name)
    dims = list(data.coords)
    for dim, values in data.coords.items():
        ds = group.create_dataset(dim, data=np.asarray(values))
        ds.make_scale(dim)
        if dim in data.labels:  # an index coordinate's names, the CF way (xarray keeps them as attributes)
            ds.attrs["flag_values"] = np.arange(len(data.labels[dim]), dtype=np.int32)
            ds.attrs["flag_meanings"] = " ".join(data.labels[dim])
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


@contextlib.contextmanager
def open_hdf5(path: str | Path, expected: str):
    """`path` opened read-only for the block (Ctrl-C and SIGTERM held back to its end); `InputFileError` when it
    is missing, empty, not HDF5, damaged or points into other files (`gaincell.hdf5_trust`; `expected` says what
    the command reads, e.g. "a gaincell characterization file")."""
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
    with signals_deferred():  # h5py would swallow an interrupt raised inside its clean-up
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            why = ("it is not an HDF5 file (no HDF5 signature: a text file or another format?)"
                   if head != HDF5_SIGNATURE else f"it is a damaged HDF5 file (truncated or corrupted?): {exc}")
            raise InputFileError(f"{path}: not {expected}: {why}") from None
        with f:
            check_trusted(f, path, InputFileError)
            yield f


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
    data = SweepData(group.name.rsplit("/", 1)[-1], coords, labels=_coordinate_labels(group, coords, refuse))
    data.status = status[()]
    if not np.isin(data.status, (PENDING, OK, FAILED)).all():
        raise refuse(f"'status' holds values other than {STATUS_MEANING}")
    for name in ("error", "deck_index"):
        if group[name].shape != data.shape:
            raise refuse(f"{name!r} has shape {group[name].shape}, the coordinates give {data.shape}")
    data.error = np.array([_text(s) for s in group["error"][()].ravel()], dtype=object).reshape(data.shape)
    data.deck_index = group["deck_index"][()]
    data.decks = [_text(s) for s in np.ravel(group["deck_text"][()])]
    skip = set(RESERVED_NAMES) | set(dims) | {"deck_text"}
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


def _coordinate_labels(group: h5py.Group, coords: dict[str, np.ndarray], refuse) -> dict[str, list[str]]:
    """The names of index coordinates (`flag_meanings`: one name per index 0, 1, ...)."""
    labels = {}
    for dim, values in coords.items():
        if "flag_meanings" not in group[dim].attrs:
            continue
        names = _text(group[dim].attrs["flag_meanings"]).split()
        if values.dtype.kind not in "iu" or sorted(values.tolist()) != list(range(len(names))):
            raise refuse(f"coordinate {dim!r} has {len(names)} names (flag_meanings) but values {values.tolist()}, "
                         f"not the indices 0..{len(names) - 1}")
        labels[dim] = names
    return labels


def list_sweeps(path: str | Path) -> list[str]:
    """Names of the sweep groups in a characterization file."""
    with open_sweep_file(path) as f:
        return _sweep_groups(f)


@contextlib.contextmanager
def new_hdf5(path: str | Path):
    """A new HDF5 file, built in memory and written to `path` atomically when the block ends without error.

    Nothing reaches the disk before the file is complete, so a full disk is one clear `OutputError`
    (`gaincell.outputs.disk_full`), never h5py failing while it flushes or closes a half-written file."""
    image = io.BytesIO()
    with signals_deferred(), h5py.File(image, "w") as f:
        yield f
    atomic_write_bytes(path, image.getbuffer())


def unfinished_sweeps(path: str | Path) -> dict[str, tuple[int, int]]:
    """{sweep name: (points not simulated yet, points)} for the sweeps of a characterization file that an
    interrupted run left unfinished."""
    with open_sweep_file(path) as f:
        counts = {name: (int(np.sum(f[name]["status"][()] == PENDING)), int(f[name]["status"].size))
                  for name in _sweep_groups(f)}
    return {name: count for name, count in counts.items() if count[0]}


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
    with new_hdf5(path) as f:
        for key, value in old_attrs.items():
            f.attrs[key] = value
        f.attrs["file_kind"] = SWEEP_FILE
        f.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for key, value in (file_attrs or {}).items():
            _write_attr(f, key, value)
        for data in list(keep.values()) + list(updated):
            _write_sweep(f, data)

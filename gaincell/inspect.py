"""What a gaincell HDF5 file holds (`gaincell inspect`), plots of selected sweep points (`gaincell plot`) and
export to formats other tools read (`gaincell export`: ngspice raw, CSV)."""
from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
from matplotlib.ticker import EngFormatter

from .errors import ConfigError
from .store import FAILED, OK, PENDING, SweepData, list_sweeps, read_sweep, unit_of


def _span(values: np.ndarray, unit: str) -> str:
    fmt = EngFormatter(unit=unit)
    values = np.asarray(values, dtype=float)
    return f"{len(values)}: {fmt(values.min())} .. {fmt(values.max())}" if len(values) > 1 else fmt(values[0])


def point_label(data: SweepData, index: tuple[int, ...]) -> str:
    """`stored_v=450 mV, pulse_s=15 ns` for a grid index."""
    return ", ".join(f"{name}={EngFormatter(unit=unit_of(name))(float(values[i]))}"
                     for (name, values), i in zip(data.coords.items(), index))


def parts_folder(path: Path, sweep: str) -> Path:
    return path.with_name(path.name + ".parts") / sweep


def with_unmerged_parts(path: Path, data: SweepData) -> tuple[SweepData, int]:
    """The sweep as a resumed run would see it: the file plus chunks saved in FILE.parts/ but not merged."""
    from gaincell.circuits.sweep import apply_part

    files = sorted(parts_folder(path, data.name).glob("*.npz"))
    for part in files:
        apply_part(data, part)
    return data, len(files)


def describe(path: str | Path, max_listed: int = 10) -> str:
    """A readable summary of any HDF5 file gaincell writes (characterization, run, validation, surrogate)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file", f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise ConfigError("file", f"{path} is not a readable HDF5 file: {exc}") from None
    if "schema_version" in attrs:
        return _describe_surrogate(path)
    lines = [f"{path}: {attrs.get('file_kind', 'HDF5 file')}"
             + "".join(f", {k} {attrs[k]}" for k in ("gaincell_version", "updated") if k in attrs)]
    sweeps = list_sweeps(path)
    unmerged = sorted(p.name for p in path.with_name(path.name + ".parts").glob("*") if p.is_dir())
    for name in list(dict.fromkeys(sweeps + unmerged)):
        lines += _describe_sweep(path, name, sweeps, max_listed)
    if not sweeps and not unmerged:
        lines.append("  no sweeps")
    return "\n".join(lines)


def _describe_sweep(path: Path, name: str, in_file: list[str], max_listed: int) -> list[str]:
    if name not in in_file:
        return [f"sweep {name!r}: only unmerged chunk files in {parts_folder(path, name)} (a re-run merges them)"]
    data = read_sweep(path, name)
    before = data.counts()
    data, n_parts = with_unmerged_parts(path, data)
    a = data.attrs
    lines = [f"sweep {name!r}: testbench {a.get('testbench', '?')}, simulator {a.get('simulator', '?')}, "
             f"netlist sha256 {str(a.get('netlist_sha256', '?'))[:16]}, created {a.get('created', '?')}",
             "  coordinates: " + "; ".join(f"{k} ({_span(v, data.units.get(k) or unit_of(k))})"
                                           for k, v in data.coords.items())]
    if data.waveforms:
        lines.append(f"  waveforms (up to {next(iter(data.waveforms.values())).shape[-1]} samples): "
                     + ", ".join(f"{k} [{data.units.get(k, '')}]" for k in data.waveforms))
    if data.scalars:
        lines.append("  scalars: " + ", ".join(f"{k} [{data.units.get(k, '')}]" for k in data.scalars))
    counts = data.counts()
    lines.append(f"  points: {counts['total']} total, {counts['ok']} completed, {counts['failed']} failed, "
                 f"{counts['pending']} missing")
    if n_parts:
        lines.append(f"  {n_parts} chunk file(s) in {parts_folder(path, name)} not yet merged into the file "
                     f"({counts['ok'] + counts['failed'] - before['ok'] - before['failed']} of the completed/failed "
                     "points); re-running the sweep merges them and continues with the missing ones")
    for status, title in ((FAILED, "failed"), (PENDING, "missing")):
        where = [tuple(int(i) for i in ix) for ix in np.argwhere(data.status == status)]
        for index in where[:max_listed]:
            detail = f": {str(data.error[index]).strip().splitlines()[0][:160]}" if status == FAILED else ""
            lines.append(f"    {title} {index} ({point_label(data, index)}){detail}")
        if len(where) > max_listed:
            lines.append(f"    ... and {len(where) - max_listed} more {title}")
    return lines


def _describe_surrogate(path: Path) -> str:
    from gaincell.surrogate.file import Surrogate

    surrogate = Surrogate.load(path)
    lines = [f"{path}: gaincell surrogate (schema 1) of design {surrogate.design.get('name', '?')!r}, created "
             f"{surrogate.created}, from {surrogate.source_path} (sha256 {surrogate.source_sha256[:16]})"]
    for name, part in surrogate.components.items():
        lines.append(f"  {name}: {part.model_id} ({part.source})")
        lines.append("    " + ", ".join(f"{k} = {v:.6g}" + (f" +- {e:.2g}" if np.isfinite(e) else "")
                                       for (k, v), e in zip(part.params.items(), part.stderr)))
        if part.validity:
            lines.append("    validity: " + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in part.validity.items()))
        if "rms_rel_full_scale" in part.residuals:
            lines.append(f"    residual RMS {100 * part.residuals['rms_rel_full_scale']:.3f} % of full scale "
                         f"over {part.residuals.get('n_points', '?')} points")
    return "\n".join(lines)


def select_points(data: SweepData, points: list[int] | None) -> list[tuple[int, ...]]:
    """Grid indices from flat point numbers (row-major over the coordinates); default: the first completed."""
    completed = [tuple(int(i) for i in ix) for ix in np.argwhere(data.status == OK)]
    if not points:
        if not completed:
            raise ConfigError("point", f"sweep {data.name!r} has no completed point")
        return completed[:1]
    chosen = []
    for number in points:
        if not 0 <= number < data.status.size:
            raise ConfigError("point", f"must be in 0..{data.status.size - 1} (flat index over {data.shape}); got {number}")
        index = tuple(int(i) for i in np.unravel_index(number, data.shape))
        if data.status[index] != OK:
            raise ConfigError("point", f"{number} ({point_label(data, index)}) did not complete: status "
                                       f"{int(data.status[index])} (0 missing, 2 failed)")
        chosen.append(index)
    return chosen


def sweep_figure(path: str | Path, sweep: str, signals: list[str], points: list[int] | None = None):
    """A waveform Figure of `signals` at the chosen points of one sweep."""
    from .plotting import waveform_figure

    data = read_sweep(path, sweep)
    unknown = [s for s in signals if s not in data.waveforms]
    if unknown or not signals:
        raise ConfigError("signal", f"{', '.join(unknown) or 'none given'}: sweep {sweep!r} has the waveforms "
                                    f"{', '.join(k for k in data.waveforms if k != 'time') or '(none)'}")
    times, values = {}, {}
    for index in select_points(data, points):
        point = data.point(index)
        for signal in signals:
            name = f"{signal} @ {point_label(data, index)}" if len(data.status.flat) > 1 else signal
            times[name], values[name] = point["time"], point[signal]
    units = {name: data.units.get(name.split(" @ ")[0], "") for name in values}
    return waveform_figure(times, values, f"{Path(path).name}: sweep {sweep}", units)


def export(path: str | Path, sweep: str, fmt: str, out: str | Path, points: list[int] | None = None,
           signals: list[str] | None = None) -> Path:
    """Write a sweep's completed points as an ngspice raw file (one plot per point) or CSV."""
    from gaincell.circuits.rawfile import write_raw

    data = read_sweep(path, sweep)
    indices = ([tuple(int(i) for i in ix) for ix in np.argwhere(data.status == OK)] if not points
               else select_points(data, points))
    names = signals or [k for k in data.waveforms if k != "time"]
    out = Path(out)
    if fmt == "raw":
        if "time" not in data.waveforms:
            raise ConfigError("format", f"sweep {sweep!r} holds no waveforms; export it as csv")
        out.write_bytes(b"")
        for index in indices:
            point = data.point(index)
            write_raw(out, {"time": point["time"]} | {n: point[n] for n in names},
                      title=f"gaincell {sweep} {point_label(data, index)}", append=True)
        return out
    if fmt != "csv":
        raise ConfigError("format", f"must be raw or csv; got {fmt!r}")
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        if "time" in data.waveforms:
            writer.writerow(["point", *data.coords, "time", *names])
            for index in indices:
                point = data.point(index)
                head = [int(np.ravel_multi_index(index, data.shape))] + [data.coords[k][i] for k, i in zip(data.coords, index)]
                for row in zip(point["time"], *(point[n] for n in names)):
                    writer.writerow(head + [repr(float(x)) for x in row])
        else:
            names = signals or list(data.scalars)
            writer.writerow(["point", *data.coords, *names])
            for index in indices:
                writer.writerow([int(np.ravel_multi_index(index, data.shape))]
                                + [data.coords[k][i] for k, i in zip(data.coords, index)]
                                + [repr(float(data.scalars[n][index])) for n in names])
    return out

"""What a gaincell HDF5 file holds (`gaincell inspect`), plots of selected sweep points (`gaincell plot`) and
export to formats other tools read (`gaincell export`: ngspice raw, CSV).

Complex results (`.ac`, AC `.sens`, `.pz`) are listed as complex, plotted as a Bode plot (magnitude in dB and
phase in degrees, against a logarithmic frequency axis when the x axis is frequency) and exported with their
real and imaginary parts (CSV columns `re(v(out))`, `im(v(out))`; a complex ngspice raw file). A file that
is not one gaincell writes is refused with `InputFileError` naming it and what it is.
"""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
from matplotlib.ticker import EngFormatter

from ..circuits.spice.parts import PART_GLOB, apply_part, parts_folder
from ..errors import ConfigError, InputFileError
from ..outputs import SURROGATE, atomic_path
from ..store import list_sweeps, open_hdf5, read_sweep
from ..sweep_data import FAILED, OK, PENDING, SweepData, unit_of

RAW_PLOT_NAMES = {"time": "Transient Analysis", "frequency": "AC Analysis"}


def _span(values: np.ndarray, unit: str) -> str:
    fmt = EngFormatter(unit=unit)
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "no values"
    return f"{len(values)}: {fmt(values.min())} .. {fmt(values.max())}" if len(values) > 1 else fmt(values[0])


def point_label(data: SweepData, index: tuple[int, ...]) -> str:
    """`stored_v=450 mV, pulse_s=15 ns` for a grid index."""
    return ", ".join(f"{name}={_coordinate_value(data, name, values[i])}"
                     for (name, values), i in zip(data.coords.items(), index))


def _coordinate_value(data: SweepData, name: str, value) -> str:
    """One coordinate's value as text: its label for a labelled index (a corner's name), else with its unit."""
    labels = data.labels.get(name)
    if labels is not None and 0 <= int(value) < len(labels):
        return labels[int(value)]
    return EngFormatter(unit=unit_of(name))(float(value))


def with_unmerged_parts(path: Path, data: SweepData) -> tuple[SweepData, int]:
    """The sweep as a resumed run would see it: the file plus chunks saved in FILE.parts/ but not merged."""
    files = sorted(parts_folder(path, data.name).glob(PART_GLOB))
    for part in files:
        try:
            apply_part(data, part)
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"{part}: not a readable chunk file of sweep {data.name!r} ({exc}); move it "
                                 "away to drop its points") from None
    return data, len(files)


def describe(path: str | Path, max_listed: int = 10) -> str:
    """A readable summary of any HDF5 file gaincell writes (characterization, run, validation, surrogate)."""
    path = Path(path)
    with open_hdf5(path, "a gaincell file (characterization or surrogate)") as f:
        attrs = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    kind = attrs.get("file_kind")
    if (isinstance(kind, str) and kind == SURROGATE) or "schema_version" in attrs:
        return _describe_surrogate(path)
    sweeps = list_sweeps(path)  # refuses anything but a characterization file, saying what it is
    lines = [f"{path}: {attrs['file_kind']}"
             + "".join(f", {k} {attrs[k]}" for k in ("gaincell_version", "updated") if k in attrs)]
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
             "  coordinates: " + "; ".join(f"{k} ({', '.join(data.labels[k])})" if k in data.labels
                                           else f"{k} ({_span(v, data.units.get(k) or unit_of(k))})"
                                           for k, v in data.coords.items())]
    if "note" in a:
        lines.append(f"  note: {a['note']}")

    def listed(name):
        return f"{name} [{data.units.get(name, '')}{', complex' if data.is_complex(name) else ''}]"

    if data.waveforms:
        axis = f", x axis {data.scale}" if data.scale else ""
        lines.append(f"  waveforms (up to {next(iter(data.waveforms.values())).shape[-1]} samples{axis}): "
                     + ", ".join(map(listed, data.waveforms)))
    if data.scalars:
        lines.append("  scalars: " + ", ".join(map(listed, data.scalars)))
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
            detail = f": {(str(data.error[index]).strip().splitlines() or ['(no message recorded)'])[0][:160]}" if status == FAILED else ""
            lines.append(f"    {title} {index} ({point_label(data, index)}){detail}")
        if len(where) > max_listed:
            lines.append(f"    ... and {len(where) - max_listed} more {title}")
    return lines


def _describe_surrogate(path: Path) -> str:
    from gaincell.hardware import describe as describe_hardware
    from gaincell.surrogate.file import Surrogate

    surrogate = Surrogate.load(path)
    lines = [f"{path}: gaincell surrogate of design {surrogate.design.name!r}, created "
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
    lines += ["  " + line for line in describe_hardware(surrogate.hardware)]
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


def bode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude in dB (20 log10 |z|; -inf for 0) and unwrapped phase in degrees of complex values."""
    with np.errstate(divide="ignore"):
        magnitude_db = 20 * np.log10(np.abs(values))
    return magnitude_db, np.degrees(np.unwrap(np.angle(values)))


def sweep_figure(path: str | Path, sweep: str, signals: list[str], points: list[int] | None = None):
    """A Figure of `signals` against the sweep's x axis (time, frequency, ...) at the chosen points. Complex
    signals make a Bode plot: one panel of magnitudes in dB, one of phases in degrees; against frequency the
    x axis is logarithmic."""
    data = read_sweep(path, sweep)
    scale = data.scale
    unknown = [s for s in signals if s not in data.waveforms or s == scale]
    if unknown or not signals:
        raise ConfigError("signal", f"{', '.join(unknown) or 'none given'}: sweep {sweep!r} has the waveforms "
                                    f"{', '.join(k for k in data.waveforms if k != scale) or '(none)'}")
    if scale is None:
        raise ConfigError("sweep", f"{sweep!r} has no time, frequency or sweep axis to draw against; "
                                   "`gaincell export --format csv` writes its values")
    from ..plotting import DB, DEGREES

    xs, values, units = {}, {}, {}
    complex_signals = [s for s in signals if data.is_complex(s)]
    for index in select_points(data, points):
        point = data.point(index)
        if len(point[scale]) == 0:
            raise ConfigError("point", f"{point_label(data, index)} of sweep {sweep!r} has no samples (the "
                                       "analysis returned no points)")
        at = f" @ {point_label(data, index)}" if len(data.status.flat) > 1 else ""
        for signal in signals:
            if signal in complex_signals:
                magnitude_db, phase_deg = bode(point[signal])
                drawn = {f"|{signal}| (dB){at}": (magnitude_db, DB), f"phase({signal}) (deg){at}": (phase_deg, DEGREES)}
            else:
                drawn = {f"{signal}{at}": (point[signal], data.units.get(signal, ""))}
            for name, (y, unit) in drawn.items():
                xs[name], values[name], units[name] = point[scale], y, unit
    # real signals first, then every magnitude, then every phase (one panel per unit)
    order = sorted(values, key=lambda name: (units[name] == DB) + 2 * (units[name] == DEGREES))
    values = {name: values[name] for name in order}
    title = f"{Path(path).name}: sweep {sweep}"
    if complex_signals:
        title += " (complex signals: Bode plot, magnitude in dB and phase in degrees)"
    from ..plotting import waveform_figure  # matplotlib: imported once there is something to draw

    figure = waveform_figure(xs, values, title, units, x_label=scale, x_unit=data.units.get(scale) or unit_of(scale))
    figure.x_log = scale == "frequency" and all(np.all(np.asarray(x) > 0) for x in xs.values())
    return figure


def _real_columns(data: SweepData, names: list[str]) -> list[str]:
    """CSV column names: a complex signal gives `re(name)` and `im(name)`."""
    return [column for n in names for column in ((f"re({n})", f"im({n})") if data.is_complex(n) else (n,))]


def _real_values(data: SweepData, names: list[str], values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The values of `_real_columns`, in the same order."""
    return [part for n in names for part in ((np.real(values[n]), np.imag(values[n])) if data.is_complex(n)
                                            else (values[n],))]


def export(path: str | Path, sweep: str, fmt: str, out: str | Path, points: list[int] | None = None,
           signals: list[str] | None = None) -> Path:
    """Write a sweep's completed points as an ngspice raw file (one plot per point; complex where the sweep
    holds complex signals) or CSV (complex signals as real and imaginary columns)."""
    from gaincell.circuits.spice.rawfile import write_raw

    if fmt not in ("raw", "csv"):
        raise ConfigError("format", f"must be raw or csv; got {fmt!r}")
    data = read_sweep(path, sweep)
    indices = ([tuple(int(i) for i in ix) for ix in np.argwhere(data.status == OK)] if not points
               else select_points(data, points))
    scale = data.scale
    available = [k for k in data.waveforms if k != scale] if data.waveforms else list(data.scalars)
    names = list(signals) if signals else available
    unknown = [n for n in names if n not in available]
    if unknown:
        what = "waveforms" if data.waveforms else "scalars"
        raise ConfigError("signal", f"{', '.join(unknown)}: sweep {sweep!r} has the {what} "
                                    f"{', '.join(available) or '(none)'}")
    out = Path(out)
    if fmt == "raw":
        if scale is None:
            raise ConfigError("format", f"sweep {sweep!r} holds no waveforms with a time or frequency axis; export "
                                        "it as csv")
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"")  # the plots are appended one per point
            for index in indices:
                point = data.point(index)
                write_raw(tmp, {scale: point[scale]} | {n: point[n] for n in names},
                          kinds={scale: scale} if scale in RAW_PLOT_NAMES else None,
                          title=f"gaincell {sweep} {point_label(data, index)}",
                          plot_name=RAW_PLOT_NAMES.get(scale, "DC transfer characteristic"), append=True)
        return out
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)

        def head(index):  # the point's flat number and coordinates
            coordinates = [values[i] for values, i in zip(data.coords.values(), index)]
            return [int(np.ravel_multi_index(index, data.shape)), *coordinates]

        if data.waveforms:
            x_name = scale or "sample"
            writer.writerow(["point", *data.coords, x_name, *_real_columns(data, names)])
            for index in indices:
                point = data.point(index)
                x = point[scale] if scale else np.arange(int(data.n_samples[index]))
                for row in zip(x, *_real_values(data, names, point)):
                    writer.writerow(head(index) + [repr(float(v)) for v in row])
        else:
            writer.writerow(["point", *data.coords, *_real_columns(data, names)])
            for index in indices:
                writer.writerow(head(index) + [repr(float(v)) for v in _real_values(data, names, data.point(index))])
    return out

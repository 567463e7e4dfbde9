"""Read and write ngspice raw files (binary and ASCII), the format of `ngspice -b -r FILE`.

PySpice 1.5 cannot read raw files from ngspice 39, so this small reader is the batch backend's output
path; the writer lets waveform viewers open what gaincell stores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gaincell.errors import OutputError, SimulationError


@dataclass
class RawPlot:
    """One plot (one analysis) of a raw file: its vectors in file order."""

    title: str
    name: str
    flags: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    # every column in file order: ngspice writes some names twice (without `keep#branch` every branch
    # current of a CPL line is `i(p1)`), `vectors` keeps the last of each name
    columns: list[tuple[str, np.ndarray]] = field(default_factory=list)


def _header(lines: list[str]) -> dict[str, str]:
    info = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip().lower()] = value.strip()
    return info


def _next_line(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\n", pos)
    end = len(data) if end < 0 else end
    return data[pos:end].decode("latin-1").rstrip("\r"), end + 1


def read_raw(path: str | Path) -> list[RawPlot]:
    """Parse every plot of an ngspice raw file; complex data comes back as complex128 (the scale real).

    A plot without points is a `RawPlot` without vectors: ngspice writes its header but no variable list
    (it names the variables when the first point arrives). A damaged file raises `SimulationError`."""
    data = Path(path).read_bytes()
    try:
        return _parse_raw(data)
    except (ValueError, KeyError, IndexError) as exc:
        raise SimulationError(f"{path}: not a readable ngspice raw file ({exc})") from None


def _parse_raw(data: bytes) -> list[RawPlot]:
    plots, pos = [], 0
    while data[pos:].strip():
        header_lines, variables, key = [], [], ""
        while pos < len(data):
            line, pos = _next_line(data, pos)
            key = line.split(":")[0].strip().lower()
            if key in ("variables", "binary", "values"):
                break
            header_lines.append(line)
        info = _header(header_lines)
        n_points = int(info["no. points"])
        if key == "variables":
            for _ in range(int(info["no. variables"])):
                line, after = _next_line(data, pos)
                parts = line.split()
                if len(parts) < 2 or not parts[0].isdigit():
                    break  # a plot without points names no variables
                variables.append((parts[1], parts[2] if len(parts) > 2 else ""))
                pos = after
            line, after = _next_line(data, pos)
            key = line.split(":")[0].strip().lower()
            if key in ("binary", "values"):
                pos = after
        plot = RawPlot(info.get("title", ""), info.get("plotname", ""), info.get("flags", ""))
        plots.append(plot)
        if n_points == 0 or not variables:
            continue
        n_vars = len(variables)
        is_complex = "complex" in info.get("flags", "").lower()
        width = 2 if is_complex else 1
        if key == "binary":
            count = n_points * n_vars * width
            values = np.frombuffer(data, dtype="<f8", count=count, offset=pos).reshape(n_points, n_vars * width)
            pos += count * 8
        elif key == "values":
            values, pos = _read_ascii_values(data, pos, n_points, n_vars, is_complex)
        else:
            raise ValueError(f"plot {plot.name!r} has {n_points} points but no Binary: or Values: section")
        if is_complex:
            values = values[:, 0::2] + 1j * values[:, 1::2]
        for column, (name, kind) in enumerate(variables):
            # a scale (time, frequency: the first vector) is real; ngspice leaves its imaginary part undefined
            # in a complex plot. A pole-zero plot has no scale: its first vector is a (complex) pole.
            is_scale = column == 0 and kind in ("time", "frequency")
            plot.vectors[name] = np.array(values[:, column].real if is_complex and is_scale else values[:, column])
            plot.kinds[name] = kind
            plot.columns.append((name, plot.vectors[name]))
    return plots


def _read_ascii_values(data: bytes, pos: int, n_points: int, n_vars: int, is_complex: bool):
    width = 2 if is_complex else 1
    values = np.empty((n_points, n_vars * width))
    tokens = []
    while len(tokens) < n_points * (n_vars + 1):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        tokens.extend(data[pos:end].decode("latin-1").split())
        pos = end + 1
        if end == len(data):
            break
    it = iter(tokens)
    for point in range(n_points):
        next(it)  # point index
        for var in range(n_vars):
            parts = next(it).split(",")
            values[point, var * width:(var + 1) * width] = [float(p) for p in parts[:width]]
    return values, pos


def write_raw(path: str | Path, vectors: dict[str, np.ndarray], kinds: dict[str, str] | None = None,
              title: str = "gaincell", plot_name: str = "Transient Analysis", append: bool = False) -> None:
    """Write one plot as a binary ngspice raw file; the first vector is the scale (e.g. time). A plot with a
    complex vector is written complex, as ngspice writes an .ac plot (every value a real, imaginary pair; the
    scale's imaginary part 0). With `append`, add it after the plots already in the file (ngspice's
    multi-plot raw format)."""
    names = list(vectors)
    if not names:
        raise SimulationError("write_raw: no vectors to write")
    n_points = len(vectors[names[0]])
    kinds = kinds or {}
    for what, text in [("title", title), ("plot name", plot_name)] + [("vector name", n) for n in names]:
        if not text or any(ord(c) < 32 for c in text) or (what == "vector name" and any(c.isspace() for c in text)):
            raise OutputError(f"the {what} {text!r} cannot go into a raw file's header (it holds a line break, tab, "
                              "control character or, in a vector name, a space); rename it or export as CSV")
    is_complex = any(np.iscomplexobj(vectors[n]) for n in names)
    header = [f"Title: {title}", "Date: -", f"Plotname: {plot_name}", f"Flags: {'complex' if is_complex else 'real'}",
              f"No. Variables: {len(names)}", f"No. Points: {n_points}", "Variables:"]
    for index, name in enumerate(names):
        kind = kinds.get(name) or ("time" if name == "time" else "current" if name.startswith("i(") else "voltage")
        header.append(f"\t{index}\t{name}\t{kind}")
    header.append("Binary:")
    # (points, vectors) row-major; little-endian complex128 is the (real, imaginary) pair ngspice expects
    table = np.column_stack([np.asarray(vectors[n], dtype="<c16" if is_complex else "<f8") for n in names])
    with open(path, "ab" if append else "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode() + table.tobytes())

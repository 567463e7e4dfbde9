"""Retention against temperature (and corner): the table and the figure of a characterization file that holds
several conditions (`gaincell.conditions`).

    rows = retention_rows("char.h5")
    print(format_retention_table(rows))
    plot_retention(rows, "char-retention.png", hold_curves("char.h5", rows))
    write_retention_report("char.h5", "char")      # both, beside the file: char-retention.txt / .png
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from gaincell.conditions import Condition, read_condition, sweep_conditions  # noqa: E402
from gaincell.plotting import write_png  # noqa: E402
from gaincell.store import read_sweep  # noqa: E402
from gaincell.sweep_data import OK  # noqa: E402


@dataclass
class RetentionRow:
    """The retention of one condition: per stored level, the 1/e and 10 % loss times (NaN where failed)."""

    condition: Condition
    stored_v: np.ndarray
    tau_1e_s: np.ndarray
    t_loss10_s: np.ndarray
    extrapolated: np.ndarray  # True where the hold ended first and the time is extrapolated


def retention_rows(path: str | Path) -> list[RetentionRow]:
    """One row per condition of the file's retention sweep, in the file's order (corner, then temperature)."""
    rows = []
    for condition in sweep_conditions(read_sweep(path, "retention")):
        sweep = read_condition(path, "retention", condition.corner, condition.temp_c)
        ok = sweep.status == OK
        scalars = {k: np.where(ok, sweep.scalars[k], np.nan) for k in ("tau_1e_s", "t_loss10_s", "extrapolated")}
        rows.append(RetentionRow(condition, sweep.coords["stored_v"], scalars["tau_1e_s"], scalars["t_loss10_s"],
                                 scalars["extrapolated"] == 1))
    return rows


def format_retention_table(rows: list[RetentionRow]) -> str:
    """tau_1e per stored level (columns) per condition (rows); `*` marks an extrapolated time."""
    seconds = EngFormatter(unit="s", places=3)
    levels = rows[0].stored_v
    lines = ["retention: time to 1/e of the stored value above the hold level (tau_1e); * = extrapolated past "
             "the simulated hold",
             f"{'corner':10s} {'temp':>7s} " + " ".join(f"{EngFormatter(unit='V', places=3)(v):>12s}" for v in levels)]
    for row in rows:
        cells = [(seconds(t) if np.isfinite(t) else "failed") + ("*" if x else " ")
                 for t, x in zip(row.tau_1e_s, row.extrapolated)]
        lines.append(f"{row.condition.corner or 'nominal':10s} {row.condition.temp_c:>5g} C "
                     + " ".join(f"{c:>12s}" for c in cells))
    return "\n".join(lines) + "\n"


def plot_retention(rows: list[RetentionRow], path: str | Path, curves: dict[str, tuple] | None = None) -> Path:
    """tau_1e against temperature per stored level (lines per corner, log scale; hollow markers where
    extrapolated) and, when given, `curves` (label -> (time, storage node)) on a logarithmic time axis."""
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12 if curves else 7, 4.4), squeeze=False)
    ax = axes[0, 0]
    corners = list(dict.fromkeys(row.condition.corner for row in rows))
    styles, markers = ["-", "--", ":", "-."], "osv^D"
    levels = rows[0].stored_v
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(levels)))
    for c, corner in enumerate(corners):
        mine = [row for row in rows if row.condition.corner == corner]
        temps = np.array([row.condition.temp_c for row in mine])
        for k, level in enumerate(levels):
            tau = np.array([row.tau_1e_s[k] for row in mine])
            guessed = np.array([row.extrapolated[k] for row in mine])
            label = f"{corner or 'nominal'}, {level:.3g} V" if len(corners) > 1 else f"stored {level:.3g} V"
            ax.plot(temps, tau, styles[c % len(styles)], color=colors[k], lw=1.2, label=label)
            for hollow in (False, True):
                pick = guessed == hollow
                ax.plot(temps[pick], tau[pick], markers[c % len(markers)], ms=5, color=colors[k],
                        mfc="white" if hollow else colors[k])
    ax.set_yscale("log")
    ax.set(title="retention time (1/e) vs temperature (hollow: extrapolated)", xlabel="temperature (C)",
           ylabel="tau_1e")
    ax.yaxis.set_major_formatter(EngFormatter(unit="s"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if curves:
        ax = axes[0, 1]
        for label, (time, node) in curves.items():
            keep = time > 0
            ax.plot(time[keep], node[keep], lw=1.2, label=label)
        ax.set_xscale("log")
        ax.set(title=f"storage node while holding, stored {levels[-1]:.3g} V", xlabel="time")
        ax.xaxis.set_major_formatter(EngFormatter(unit="s"))
        ax.yaxis.set_major_formatter(EngFormatter(unit="V"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return write_png(fig, path, dpi=110)


def hold_curves(path: str | Path, rows: list[RetentionRow]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The storage node at the highest stored level while holding, per condition (label -> (time, v))."""
    curves = {}
    for row in rows:
        sweep = read_condition(path, "retention", row.condition.corner, row.condition.temp_c)
        top = len(sweep.coords["stored_v"]) - 1
        if sweep.status[top] == OK:
            n = int(sweep.n_samples[top])
            curves[row.condition.label] = (sweep.waveforms["time"][top, :n], sweep.waveforms["v(sn)"][top, :n])
    return curves


def write_retention_report(path: str | Path, stem: str | Path) -> tuple[Path, Path]:
    """STEM-retention.txt (the table) and STEM-retention.png (the figure) of a characterization file."""
    from gaincell.outputs import atomic_write_text

    rows = retention_rows(path)
    stem = Path(stem)
    table = atomic_write_text(stem.with_name(stem.name + "-retention.txt"), format_retention_table(rows))
    png = plot_retention(rows, stem.with_name(stem.name + "-retention.png"), hold_curves(path, rows))
    return table, png

"""Waveform figures (PNG) with SI units and engineering notation on the axes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from .store import unit_of  # noqa: E402


def plot_waveforms(path: str | Path, time_s: np.ndarray, signals: dict[str, np.ndarray], title: str = "",
                   units: dict[str, str] | None = None) -> Path:
    """One panel per unit (V, A, ...) of signals against time; written to `path` as PNG."""
    units = units or {}
    by_unit: dict[str, list[str]] = {}
    for name in signals:
        by_unit.setdefault(units.get(name) or unit_of(name), []).append(name)
    fig, axes = plt.subplots(len(by_unit), 1, figsize=(8, 2.6 * len(by_unit)), sharex=True, squeeze=False)
    for ax, (unit, names) in zip(axes[:, 0], by_unit.items()):
        for name in names:
            ax.plot(time_s, signals[name], label=name, lw=1.2)
        ax.yaxis.set_major_formatter(EngFormatter(unit=unit))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].xaxis.set_major_formatter(EngFormatter(unit="s"))
    axes[-1, 0].set_xlabel("time")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

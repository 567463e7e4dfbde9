"""Characterization of one cell design: write, retention and read/multiply sweeps (energies included)
into one characterization HDF5 file, and the figures that summarise it.

    gaincell characterize --design cmos-generic --out char.h5

Sweeps (group names in the file): `write` (DAC level -> stored value, write energy), `retention` (stored
value vs time to `retention_stop_s`), `read` (charge, current and read energy vs stored voltage x pulse
width x input amplitude: 16 x 8 x 6 points). With `Conditions` (process corners, temperatures) every sweep
has them as leading coordinates (`gaincell.conditions`); the figures are then given per condition.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gaincell.conditions import Condition, Conditions, read_condition, sweep_conditions
from gaincell.design import CellDesign
from gaincell.periphery import C2PDesign, DacDesign, Grid
from gaincell.store import list_sweeps, read_sweep
from gaincell.sweep_data import OK, unit_of

from .c2p import c2p_sweeps
from .conditions import conditioned
from .dac import dac_sweep
from .cells import CellRead, CellRetention, CellWrite
from .sweep import Sweep, SweepReport, run_sweep

# What a write may leave off its DAC level (feedthrough as the word line falls): the documented error.
WRITE_ERROR_BOUND_V = 0.020


def characterization_sweeps(design: CellDesign, grid: Grid = Grid(), c2p: bool = False, dac: bool = False,
                            c2p_design: C2PDesign = C2PDesign(), dac_design: DacDesign = DacDesign(),
                            conditions: Conditions = Conditions()) -> list[Sweep]:
    """The write, retention and read sweeps of a design; with `c2p` the converters' transfer sweeps
    (`c2p`, `c2p_signed`) of `c2p_design`, with `dac` the conversions (`dac`) of `dac_design` (a design
    file's [c2p], [dac] and [grid] tables: `gaincell.design.load_setup`); each over `conditions` too."""
    return [conditioned(sweep, conditions) for sweep in _nominal_sweeps(design, grid, c2p, dac, c2p_design,
                                                                         dac_design)]


def _nominal_sweeps(d: CellDesign, grid: Grid, c2p: bool, dac: bool, c2p_design: C2PDesign,
                    dac_design: DacDesign) -> list[Sweep]:
    converters = (c2p_sweeps(d, c2p_design) if c2p else []) + ([dac_sweep(d, dac_design)] if dac else [])
    designs = (c2p_design, dac_design)  # recorded with the cell's sweeps: the fit's hardware configuration reads them
    return [
        Sweep("write", CellWrite(d), {"level_v": d.dac_voltages}, periphery=designs),
        Sweep("retention", CellRetention(d, stop_s=grid.retention_stop_s),
              {"stored_v": [f * d.vdd_v for f in grid.retention_levels]}, periphery=designs),
        Sweep("read", CellRead(d), {
            "stored_v": np.linspace(0.0, d.vdd_v, grid.stored_levels),
            "pulse_s": np.linspace(d.t_max_s / grid.pulse_levels, d.t_max_s, grid.pulse_levels),
            "vin_v": read_amplitudes(d, grid.vin_levels)}, periphery=designs),
    ] + converters


def read_amplitudes(d: CellDesign, levels: int) -> np.ndarray:
    """The read sweep's input amplitudes: VDD/2 .. the design's read amplitude `v_in_v` (the one the layer's
    pulse-width encoding uses, so a single level is that one)."""
    return np.linspace(d.zero_v, d.v_in_v, levels) if levels > 1 else np.array([d.v_in_v])


def characterize(design: CellDesign, out: str | Path, grid: Grid = Grid(), workers: int | None = None,
                 progress: bool = True, restart: bool = False, backend: str = "shared",
                 c2p: bool = False, dac: bool = False, c2p_design: C2PDesign = C2PDesign(),
                 dac_design: DacDesign = DacDesign(), conditions: Conditions = Conditions()) -> list[SweepReport]:
    """Run every characterization sweep of `design` into `out` (resuming what is already there; `c2p`, `dac`,
    the periphery designs and `conditions` as in `characterization_sweeps`)."""
    return [run_sweep(sweep, out, workers=workers, progress=progress, restart=restart, backend=backend)
            for sweep in characterization_sweeps(design, grid, c2p, dac, c2p_design, dac_design, conditions)]


def _r_squared(x: np.ndarray, y: np.ndarray) -> float:
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return float(1 - np.sum(residual**2) / np.sum((y - y.mean()) ** 2))


def zero_crossing(stored_v: np.ndarray, current: np.ndarray) -> float:
    """Stored voltage where the read current changes sign (linear interpolation; NaN if it never does)."""
    sign_change = np.nonzero(np.diff(np.sign(current)) != 0)[0]
    if not sign_change.size:
        return float("nan")
    k = sign_change[0]
    return float(np.interp(0.0, current[k:k + 2], stored_v[k:k + 2]) if current[k] < current[k + 1]
                 else np.interp(0.0, current[k:k + 2][::-1], stored_v[k:k + 2][::-1]))


def summarize(path: str | Path, corner: str | None = None, temp_c: float | None = None) -> dict[str, float]:
    """The figures that characterize a cell, computed from a characterization file (SI units), at one of its
    conditions (None: the only one; `gaincell.conditions.select_condition`)."""
    figures: dict[str, float] = {}

    def condition_sweep(name: str):
        return read_condition(path, name, corner, temp_c)

    read = condition_sweep("read")
    stored, pulses, vins = (read.coords[k] for k in ("stored_v", "pulse_s", "vin_v"))
    s = read.scalars
    full = (slice(None), len(pulses) - 1, len(vins) - 1)  # longest pulse, highest input
    current = s["i_mid_a"][full]
    figures["read_current_min_a"] = float(np.min(current))
    figures["read_current_max_a"] = float(np.max(current))
    figures["zero_crossing_v"] = zero_crossing(stored, current)
    strong = np.abs(current) > 0.05 * np.max(np.abs(current))
    r2 = [_r_squared(pulses, s["charge_c"][k, :, -1]) for k in np.nonzero(strong)[0]] if len(pulses) > 1 else []
    figures["charge_vs_pulse_1_minus_r2_max"] = float(1 - np.min(r2)) if r2 else float("nan")  # one width: no line
    figures["read_disturb_max_v"] = float(np.nanmax(s["sn_disturb_v"]))
    figures["e_read_mean_j"] = float(np.mean(s["e_read_j"][full]))
    figures["e_read_max_j"] = float(np.max(s["e_read_j"][full]))
    figures["e_read_per_s_mean_w"] = figures["e_read_mean_j"] / float(pulses[-1])

    write = condition_sweep("write")
    ok = write.status == OK
    figures["write_error_max_abs_v"] = float(np.max(np.abs(write.scalars["error_v"][ok])))
    figures["e_write_mean_j"] = float(np.mean(write.scalars["e_write_j"][ok]))

    retention = condition_sweep("retention")
    tau = retention.scalars["tau_1e_s"]
    levels = retention.coords["stored_v"]
    figures["retention_tau_1e_at_max_level_s"] = float(tau[-1])
    figures["retention_tau_1e_min_s"] = float(np.min(tau))
    figures["retention_t_loss10_min_s"] = float(np.min(retention.scalars["t_loss10_s"]))
    figures["retention_extrapolated"] = float(np.max(retention.scalars["extrapolated"]))
    figures["retention_max_level_v"] = float(levels[-1])
    available = set(list_sweeps(path))
    periphery = {name: condition_sweep(name) for name in ("c2p", "c2p_signed", "dac") if name in available}
    for name, sweep in periphery.items():
        figures[f"e_{name}_conversion_mean_j"] = float(np.nanmean(sweep.scalars["e_conversion_j"]))
    if "dac" in periphery:
        figures["dac_settle_max_s"] = float(np.nanmax(periphery["dac"].scalars["settle_s"]))
        figures["dac_write_error_max_abs_v"] = float(np.nanmax(np.abs(periphery["dac"].scalars["error_v"])))
    sweeps = [read, write, retention, *periphery.values()]
    figures["failed_points"] = float(sum(int(np.sum(sweep.status == 2)) for sweep in sweeps))
    return figures


def file_conditions(path: str | Path) -> list[Condition]:
    """The conditions a characterization file holds (those of its read sweep)."""
    return sweep_conditions(read_sweep(path, "read"))


def summarize_conditions(path: str | Path) -> dict[Condition, dict[str, float]]:
    """`summarize` at every condition of the file."""
    return {c: summarize(path, c.corner, c.temp_c) for c in file_conditions(path)}


def format_conditions(summaries: dict[Condition, dict[str, float]]) -> str:
    """Per-condition summaries side by side: one row per figure, one column per condition."""
    from matplotlib.ticker import EngFormatter

    if len(summaries) == 1:
        return format_summary(next(iter(summaries.values())))
    columns = list(summaries)
    lines = [f"{'condition':34s} " + " ".join(f"{c.label:>12s}" for c in columns)]
    for name in summaries[columns[0]]:
        unit = unit_of(name)
        cells = [summaries[c].get(name, float("nan")) for c in columns]
        texts = [EngFormatter(unit=unit, places=3)(v) if unit and np.isfinite(v) else f"{v:.4g}" for v in cells]
        lines.append(f"{name:34s} " + " ".join(f"{t:>12s}" for t in texts))
    return "\n".join(lines)


SUMMARY_LABELS = {  # what each `summarize` figure is, in words (the report's table)
    "read_current_min_a": "read current, lowest stored level (longest pulse, highest input)",
    "read_current_max_a": "read current, highest stored level",
    "zero_crossing_v": "stored voltage where the read current crosses zero",
    "charge_vs_pulse_1_minus_r2_max": "charge vs pulse width: worst 1 - R^2 of a straight line",
    "read_disturb_max_v": "largest storage-node disturbance by a read",
    "e_read_mean_j": "energy per read, mean", "e_read_max_j": "energy per read, largest",
    "e_read_per_s_mean_w": "read power during the pulse, mean",
    "write_error_max_abs_v": "largest write error", "e_write_mean_j": "energy per write, mean",
    "retention_tau_1e_at_max_level_s": "retention 1/e time of the highest level",
    "retention_tau_1e_min_s": "retention 1/e time, shortest of the levels",
    "retention_t_loss10_min_s": "time to lose 10 % of the stored excess, shortest",
    "retention_extrapolated": "retention fitted beyond the simulated time (1: yes)",
    "retention_max_level_v": "highest stored level of the retention sweep",
    "e_c2p_conversion_mean_j": "charge-to-pulse conversion energy, mean (unsigned)",
    "e_c2p_signed_conversion_mean_j": "charge-to-pulse conversion energy, mean (signed)",
    "e_dac_conversion_mean_j": "write-DAC conversion energy, mean", "dac_settle_max_s": "write-DAC settling time, longest",
    "dac_write_error_max_abs_v": "write-DAC largest error of the written value", "failed_points": "failed simulation points",
}


def summary_rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    """(what it is, value with its unit) per figure."""
    from matplotlib.ticker import EngFormatter

    rows = []
    for name, value in figures.items():
        unit = unit_of(name)
        rows.append((SUMMARY_LABELS.get(name, name),
                     EngFormatter(unit=unit, places=4)(value) if unit and np.isfinite(value) else f"{value:.6g}"))
    return rows


def format_summary(figures: dict[str, float]) -> str:
    """The summary as a small table with engineering units, one `name  value` line per figure."""
    names = list(figures)
    return "\n".join(f"{name:34s} {text}" for name, (_, text) in zip(names, summary_rows(figures)))

"""Fit reports: a figure (the read current and the retention, SPICE against the fit, and the residuals) and a
text summary."""
from __future__ import annotations

import numpy as np

from gaincell.hardware import describe as describe_hardware
from gaincell.surrogate.file import Surrogate

from .fit import FitOutcome


POINT_NAMES = {"stored_v": ("stored", 1.0, "V"), "pulse_s": ("pulse", 1e9, "ns"), "vin_v": ("V_in", 1.0, "V")}


def describe_point(point: dict) -> str:
    """'stored 0.431 V, pulse 6.12 ns, V_in 0.300 V' for a read point {stored_v, pulse_s, vin_v}."""
    return ", ".join(f"{POINT_NAMES[k][0]} {v * POINT_NAMES[k][1]:.3g} {POINT_NAMES[k][2]}" if k in POINT_NAMES
                     else f"{k} {v:.4g}" for k, v in point.items())


def text_report(surrogate: Surrogate) -> str:
    """Parameters with standard errors, residual statistics and worst point of every component."""
    lines = [f"gaincell fit report: surrogate of {surrogate.source_path or 'reference data'} (sha256 {surrogate.source_sha256[:16]})"]
    design = surrogate.design
    if design is not None and (design.corner or design.temp_c != 27.0):
        lines.append(f"condition: corner {design.corner or '(plain include)'}, {design.temp_c:g} C")
    for name, part in surrogate.components.items():
        lines.append(f"\n[{name}] {part.model_id}   source: {part.source}")
        for pname, value, err in zip(part.param_names, part.values, part.stderr):
            rel = f" ({abs(err / value) * 100:.3g} %)" if np.isfinite(err) and value else ""
            lines.append(f"  {pname:22s} {value: .6e} +- {err:.2e}{rel}" if np.isfinite(err)
                         else f"  {pname:22s} {value: .6e}")
        res = part.residuals
        if "rms_rel_full_scale" in res:
            lines.append(f"  RMS error {res['rms']:.3e} = {100 * res['rms_rel_full_scale']:.3f} % of full scale "
                         f"({res['full_scale']:.3e}); worst {100 * res['max_rel_full_scale']:.3f} % at "
                         f"{describe_point(res['worst_point'])}; {res['n_points']} points")
        elif "rms" in res:
            lines.append(f"  RMS error {res['rms']:.3e}; {res.get('n_points', '?')} points")
        if "tau_1e_s" in res:
            lines.append(f"  1/e time at the reference level {res['tau_1e_s']:.5e} +- {res['tau_1e_stderr_s']:.2e} s "
                         f"(raw curve: {res['raw_tau_1e_s']:.5e} s)")
        if part.validity:
            lines.append(f"  valid for {part.validity}")
    lines += [""] + describe_hardware(surrogate.hardware)
    return "\n".join(lines) + "\n"


def fit_figure(outcomes: dict[str, FitOutcome]):
    """The fit against SPICE (PNG or interactive HTML through gaincell's plotting layer): the read current per
    input amplitude at the longest pulse (SPICE dots, fit lines), the charge residual of every point per input
    amplitude, and the retention fit of every stored level."""
    from gaincell.plotting import PERCENT, Figure, Panel, Trace

    multiply = outcomes["multiply"]
    x = multiply.inputs
    current, fitted = multiply.data / x["pulse_s"], multiply.result.best_fit / x["pulse_s"]
    residual = 100 * (multiply.result.best_fit - multiply.data) / np.max(np.abs(multiply.data))
    longest = x["pulse_s"] == x["pulse_s"].max()
    traces, residuals = [], []
    for index, vin in enumerate(np.unique(x["vin_v"])):  # SPICE dots and their fit line share a colour
        pick = longest & (x["vin_v"] == vin)
        order = np.argsort(x["stored_v"][pick])
        stored = x["stored_v"][pick][order]
        traces += [Trace(f"SPICE, V_in {vin:.2f} V", stored, current[pick][order], "markers", color=index),
                   Trace(f"fit, V_in {vin:.2f} V", stored, fitted[pick][order], color=index)]
        every = x["vin_v"] == vin
        residuals.append(Trace(f"V_in {vin:.2f} V", x["stored_v"][every], residual[every], "markers", color=index))
    panels = [Panel(traces, "A", "read current", f"read current vs stored voltage, longest pulse "
                    f"({multiply.component.model_id})", "V", "stored voltage"),
              Panel(residuals, PERCENT, "fit - SPICE", "charge residual of every grid point (% of full scale)", "V",
                    "stored voltage")]
    decay = outcomes.get("decay")
    if decay is not None:
        curves, limit = retention_curves(decay)
        retention = []
        for index, (level, t, data, fit) in enumerate(curves):
            shown = t <= limit
            retention += [Trace(f"SPICE, stored {level:.3g} V", t[shown], data[shown], "markers", color=index),
                          Trace(f"fit, stored {level:.3g} V", t[shown], fit[shown], color=index)]
        panels.append(Panel(retention, "V", "storage node",
                            f"retention of every stored level ({decay.component.model_id})", "s", "time"))
    return Figure("surrogate fit: SPICE against the compact model", panels, share_x=False)


def retention_curves(decay: FitOutcome) -> tuple[list[tuple[float, np.ndarray, np.ndarray, np.ndarray]], float]:
    """The decay fit's curves, one per stored level: (level, times, SPICE, fit), and the time by which every level
    has decayed (to 2 % of its start; the sweep's tail beyond it shows nothing)."""
    t, levels = decay.inputs["t_s"], decay.inputs["stored_v"]
    curves, limit = [], 0.0
    for level in np.unique(levels):
        pick = levels == level
        order = np.argsort(t[pick])
        times, data, fit = t[pick][order], decay.data[pick][order], decay.result.best_fit[pick][order]
        curves.append((float(level), times, data, fit))
        hold = decay.component.config.get("hold_v", 0.0)
        above = np.nonzero(np.abs(data - hold) > 0.02 * abs(data[0] - hold))[0]
        limit = max(limit, float(times[above[-1]]) if above.size else float(times[-1]))
    return curves, 1.2 * limit if limit > 0 else float(t.max())

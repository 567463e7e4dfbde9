"""Validation of a surrogate against fresh SPICE at random points the fit never saw."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead
from gaincell.design import CellDesign
from gaincell.errors import ConfigError, SimulationError, SurrogateError
from gaincell.sweep_data import OK
from gaincell.surrogate.file import Surrogate

from .reference import PAPER_REFERENCE
from .report import describe_point


@dataclass
class ValidationReport:
    """Errors of the surrogate's multiply component on fresh SPICE points (relative to the fit's full scale)."""

    n_points: int
    rms_rel_full_scale: float
    max_rel_full_scale: float
    worst_point: dict
    full_scale_c: float
    inputs: dict = field(default_factory=dict, repr=False)  # the points' stored_v, pulse_s, vin_v
    measured_c: np.ndarray | None = field(default=None, repr=False)  # SPICE charge per point
    predicted_c: np.ndarray | None = field(default=None, repr=False)  # the surrogate's

    def __str__(self) -> str:
        return (f"{self.n_points} fresh SPICE points: RMS error {100 * self.rms_rel_full_scale:.3f} % of full scale "
                f"({self.full_scale_c:.4g} C), worst {100 * self.max_rel_full_scale:.3f} % at "
                f"{describe_point(self.worst_point)}")


def parity_figure(report: ValidationReport):
    """The surrogate's charge against fresh SPICE's at every validation point (on the diagonal: exact), and its
    error per point in % of the fit's full scale against the stored voltage, one colour per input amplitude."""
    from gaincell.plotting import Figure, Panel, Trace

    measured, predicted, inputs = report.measured_c, report.predicted_c, report.inputs
    span = np.array([min(measured.min(), predicted.min()), max(measured.max(), predicted.max())])
    parity, errors = [Trace("exact (surrogate = SPICE)", span, span, color=0)], []
    for index, vin in enumerate(np.unique(inputs["vin_v"]), 1):
        pick = inputs["vin_v"] == vin
        name = f"V_in {vin:.3g} V"
        parity.append(Trace(name, measured[pick], predicted[pick], "markers", color=index))
        errors.append(Trace(name, inputs["stored_v"][pick],
                            100 * (predicted[pick] - measured[pick]) / report.full_scale_c, "markers", color=index))
    return Figure(f"surrogate vs fresh SPICE at {report.n_points} random read points", [
        Panel(parity, "C", "surrogate charge", "charge per read: surrogate against SPICE", "C", "SPICE charge"),
        Panel(errors, "", "error (% of full scale)", "surrogate - SPICE per point", "V", "stored voltage")],
        share_x=False)


def random_read_grid(surrogate: Surrogate, counts=(7, 5, 3), seed: int = 0) -> dict[str, np.ndarray]:
    """Random stored voltages, pulse widths and input amplitudes inside the multiply component's validity
    ranges (a random cartesian grid: off the characterization grid with probability one)."""
    rng = np.random.default_rng(seed)
    grid = {}
    for name, count in zip(("stored_v", "pulse_s", "vin_v"), counts):
        low, high = surrogate["multiply"].validity.get(name, [np.nan, np.nan])
        if not np.isfinite(low):
            raise SurrogateError(f"the surrogate's multiply component has no validity range for {name}")
        low = max(low, 1e-10) if name == "pulse_s" else low
        grid[name] = np.array([low]) if high == low else np.sort(rng.uniform(low, high, count))
    return grid


def validate_cell(surrogate: Surrogate, design: CellDesign | None, out: str | Path, counts=(7, 5, 3), seed: int = 0,
                  workers: int | None = None, progress: bool = True) -> ValidationReport:
    """Simulate the design's read at random points and compare the surrogate's predicted charge. `design`
    None means the surrogate's own; another one is refused, naming the fields that differ."""
    if surrogate.design == PAPER_REFERENCE:
        raise ConfigError("surrogate", "the paper-reference surrogate was fitted to the paper's IV data, not to a "
                                       "design gaincell can simulate; validate a surrogate from `gaincell fit`")
    if design is not None and design != surrogate.design:
        differences = "; ".join(surrogate.design.differences(design))
        raise ConfigError("design", f"the surrogate was fitted to design {surrogate.design.name!r}, which differs "
                                    f"from the design given ({differences}): validate it against the design it "
                                    "was fitted to (leave --design out)")
    design = surrogate.design
    grid = random_read_grid(surrogate, counts, seed)
    data = run_sweep(Sweep("validate_read", CellRead(design), grid), out, workers=workers, progress=progress,
                     restart=True).data
    mesh = np.meshgrid(*grid.values(), indexing="ij")
    ok = data.status == OK
    if not np.any(ok):
        raise SimulationError(f"none of the {ok.size} validation points of {out} simulated; see the sweep's errors")
    inputs = {name: m[ok] for name, m in zip(grid, mesh)}
    measured = data.scalars["charge_c"][ok]
    predicted = surrogate.evaluate("multiply", **inputs)
    full_scale = float(surrogate["multiply"].residuals.get("full_scale", np.max(np.abs(measured))))
    error = predicted - measured
    worst = int(np.argmax(np.abs(error)))
    return ValidationReport(int(measured.size), float(np.sqrt(np.mean(error**2)) / full_scale),
                            float(np.abs(error[worst]) / full_scale), {k: float(v[worst]) for k, v in inputs.items()},
                            full_scale, inputs, measured, np.asarray(predicted, dtype=float))

"""Fit drivers: a characterization file in, a `Surrogate` out (plus the lmfit results for reports).

    surrogate, results = fit_characterization("char.h5")
    surrogate.save("surrogate.h5")
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import lmfit
import numpy as np

from gaincell.conditions import read_condition
from gaincell.compact import (C2P, EKV, EXPONENTIAL, FIGURES_MODEL, LEAKAGE, MAX_CHARGE_C, MAX_VOLTAGE_V, POLY,
                              STRETCHED, FitStart, spec, tau_1e)
from gaincell.design import CellDesign
from gaincell.design_record import DesignRecord, read_design_record
from gaincell.errors import ConfigError, FitError, InputFileError
from gaincell.hardware import from_design
from gaincell.paper import PAPER_READOUT_CURRENT_A, PAPER_S_SAT_CURRENT_A
from gaincell.periphery import C2PDesign
from gaincell.store import list_sweeps, unfinished_sweeps
from gaincell.sweep_data import OK, SweepData
from gaincell.surrogate.file import Component, Surrogate, sha256_of

from .models import lmfit_model

MULTIPLY_MODELS = {"poly": POLY, "ekv": EKV}


@dataclass
class FitOutcome:
    """A component and what produced it: the lmfit result and the data it was fitted to."""

    component: Component
    result: lmfit.model.ModelResult | None
    inputs: dict[str, np.ndarray]
    data: np.ndarray


def _residual_stats(data: np.ndarray, fitted: np.ndarray, inputs: dict[str, np.ndarray]) -> dict:
    residual = fitted - data
    full_scale = float(np.max(np.abs(data)))
    worst = int(np.argmax(np.abs(residual)))
    rms = float(np.sqrt(np.mean(residual**2)))
    return {"rms": rms, "rms_rel_full_scale": rms / full_scale if full_scale else float("nan"),
            "max_abs": float(np.abs(residual[worst])), "max_rel_full_scale": float(np.abs(residual[worst]) / full_scale),
            "full_scale": full_scale, "n_points": int(data.size),
            "worst_point": {k: float(v[worst]) for k, v in inputs.items()}}


def residual_correlation_factor(residual: np.ndarray) -> float:
    """How much to widen least-squares uncertainties when residuals are correlated (a smooth model error
    rather than noise): sqrt(expected sign runs of white residuals / observed runs), at least 1."""
    signs = np.sign(residual[residual != 0])
    if signs.size < 3:
        return 1.0
    runs = 1 + int(np.sum(signs[1:] != signs[:-1]))
    return float(np.sqrt(max(1.0, (signs.size / 2 + 1) / runs)))


def _component_from_result(model_id: str, config: dict, result, inputs, data, source: str) -> Component:
    names = list(result.params)
    widen = residual_correlation_factor(result.best_fit - data)
    covariance = np.full((len(names), len(names)), np.nan)
    if result.covar is not None:  # lmfit's covariance covers the varied parameters only
        where = [names.index(n) for n in result.var_names]
        covariance[np.ix_(where, where)] = result.covar * widen**2
    stderr = [np.nan if result.params[n].stderr is None else result.params[n].stderr * widen for n in names]
    config = {**config, "uncertainty_widening": widen}
    validity = {k: [float(np.min(v)), float(np.max(v))] for k, v in inputs.items()}
    return Component(model_id, names, [result.params[n].value for n in names], stderr, covariance, config,
                     validity, _residual_stats(data, result.best_fit, inputs), source)


def fit_model(model_id: str, config: dict, inputs: dict[str, np.ndarray], data: np.ndarray, start: FitStart,
              source: str) -> FitOutcome:
    """Least-squares fit of one model id to data from `start` (the model spec's, `gaincell.compact`); the
    component carries stderr, covariance, residuals. Fixed parameters keep their initial value."""
    model = lmfit_model(model_id, config)
    params = model.make_params(**start.initial)
    for name, (low, high) in start.bounds.items():
        params[name].set(min=low, max=high)
    for name in start.fixed:
        params[name].set(vary=False)
    result = model.fit(data, params, **inputs)
    if not result.success:
        raise FitError(f"the {model_id} fit did not converge: {result.message}")
    return FitOutcome(_component_from_result(model_id, config, result, inputs, data, source), result, inputs, data)


def sweep_design(sweep: SweepData) -> DesignRecord:
    """The design a sweep was simulated with (its design record)."""
    return read_design_record(sweep.attrs, f"sweep {sweep.name!r}")


def _ok_points(sweep: SweepData, signal: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    grids = np.meshgrid(*sweep.coords.values(), indexing="ij")
    ok = sweep.status == OK
    inputs = {name: grid[ok] for name, grid in zip(sweep.coords, grids)}
    return inputs, sweep.scalars[signal][ok]


def require_plausible(sweep: SweepData, signal: str, values: np.ndarray, limit: float, unit: str) -> None:
    """FitError naming the sweep and signal when a value is not finite or beyond +-`limit`: a fit of such data
    converges to nothing and reports meaningless errors."""
    bad = ~np.isfinite(values) | (np.abs(values) > limit)
    if bad.any():
        raise FitError(f"sweep {sweep.name!r}: {signal} = {values[bad][0]:g} {unit} (and {int(bad.sum()) - 1} more "
                       f"point(s)) is outside the plausible +-{limit:g} {unit}; gaincell's SPICE runs do not give "
                       "such values (an edited or damaged file?)")


def fit_multiply(read: SweepData, design: CellDesign, model: str = "poly", order: int = 5,
                 vin_order: int | None = 3) -> FitOutcome:
    """Fit the read surface (charge per read vs stored voltage, pulse width, input amplitude). The polynomial's
    orders are capped at one less than the swept stored levels and input amplitudes (a sweep of 3 amplitudes
    gets vin_order 2 at most: the component's config records the orders used)."""
    if model not in MULTIPLY_MODELS:
        raise ConfigError("model", f"must be one of {', '.join(MULTIPLY_MODELS)}, got {model!r}")
    inputs, charge = _ok_points(read, "charge_c")
    require_plausible(read, "charge_c", charge, MAX_CHARGE_C, "C")
    if charge.size < 10:
        raise FitError(f"only {charge.size} successful read points: too few to fit")
    model_id = MULTIPLY_MODELS[model]
    if model_id == POLY:
        if not 1 <= order <= 5:
            raise ConfigError("order", f"must be 1..5, got {order}")
        # a polynomial through no more levels than its degree interpolates them and swings between them
        stored_levels, vin_levels = (np.unique(inputs[name]).size for name in ("stored_v", "vin_v"))
        order = min(order, stored_levels - 1)
        vin_order = min(order if vin_order is None else vin_order, vin_levels - 1, order)
        if order < 1:
            raise FitError(f"the read sweep has {stored_levels} stored level(s) among its successful points: "
                           "at least 2 are needed to fit the multiply")
        config = {"order": order, "vin_order": vin_order, "y0_v": design.zero_v, "vin0_v": design.v_in_v}
    else:
        config = {"vdd_v": design.vdd_v}
    return fit_model(model_id, config, inputs, charge, spec(model_id).start(config), "fit of sweep 'read' (charge_c)")


DECAY_MODELS = {"leakage": LEAKAGE, "stretched": STRETCHED, "exponential": EXPONENTIAL}


def fit_decay(retention: SweepData, design: CellDesign, model: str = "leakage") -> FitOutcome:
    """Fit the decay on the retention curves of every stored level at once (the leakage depends on the level,
    and the layer ages every level with this model). The reference level is the stored value closest to
    VDD/2 above the hold level (the "zero" of the encoding); the component's residuals also carry `tau_1e_s`
    (1/e time at the reference level, uncertainty propagated from the covariance) and the raw curve's own
    1/e time."""
    if model not in DECAY_MODELS:
        raise ConfigError("decay_model", f"must be one of {', '.join(DECAY_MODELS)}, got {model!r}")
    hold = design.hold_wbl_v
    ok = np.nonzero(retention.status == OK)[0]
    if not ok.size:
        raise FitError("no successful retention curve to fit")
    levels = retention.coords["stored_v"]
    ref = int(ok[np.argmin(np.abs(levels[ok] - (hold + design.vdd_v / 2)))])
    raw_tau = float(retention.scalars["tau_1e_s"][ref])
    times, stored, data = [], [], []
    for level in ok:
        wave = retention.point((level,))
        # evenly in time where the node decays (to 4 tau), sparser in the tail: the SPICE steps are dense early
        end, tau = float(wave["time"][-1]), float(retention.scalars["tau_1e_s"][level])
        tau = tau if np.isfinite(tau) and tau > 0 else raw_tau
        grid = np.linspace(0, min(end, 4 * tau), 400)
        if end > 4 * tau:
            grid = np.concatenate([grid, np.linspace(4 * tau, end, 51)[1:]])
        times.append(grid)
        stored.append(np.full(grid.size, levels[level]))
        data.append(np.interp(grid, wave["time"], wave["v(sn)"]))
    inputs = {"t_s": np.concatenate(times), "stored_v": np.concatenate(stored)}
    data = np.concatenate(data)
    require_plausible(retention, "v(sn)", data, MAX_VOLTAGE_V, "V")
    config = {"hold_v": hold, "ref_v": float(levels[ref])}
    model_id = DECAY_MODELS[model]
    outcome = fit_model(model_id, config, inputs, data, spec(model_id).start(config, tau_s=raw_tau),
                        f"fit of sweep 'retention': v(sn) of the stored levels {', '.join(f'{levels[i]:.4g}' for i in ok)} V")
    part = outcome.component
    tau, tau_err = _propagate(lambda p: tau_1e(model_id, config, p), part)
    part.residuals.update({"tau_1e_s": tau, "tau_1e_stderr_s": tau_err, "raw_tau_1e_s": raw_tau})
    return outcome


def _propagate(function, part: Component) -> tuple[float, float]:
    """Value and standard error of function(params) by linear propagation of the covariance."""
    params = part.params
    value = function(params)
    names = [n for k, n in enumerate(part.param_names) if np.isfinite(part.covariance[k, k])]
    gradient = []
    for name in names:
        step = 1e-6 * (abs(params[name]) or 1e-12)
        gradient.append((function({**params, name: params[name] + step}) - value) / step)
    where = [part.param_names.index(n) for n in names]
    covariance = part.covariance[np.ix_(where, where)]
    g = np.asarray(gradient)
    return value, float(np.sqrt(g @ covariance @ g)) if names else float("nan")


def figures(values: dict[str, float], stderr: dict[str, float] | None = None, source: str = "",
            validity: dict | None = None) -> Component:
    """A component of plain figures (energies, times) with optional uncertainties."""
    names = list(values)
    return Component(FIGURES_MODEL, names, [values[n] for n in names],
                     [(stderr or {}).get(n, np.nan) for n in names], None, {}, validity or {}, {}, source)


def _more_figures(component: Component, values: dict[str, float], note: str) -> Component:
    """A figures component with `values` added (keys ending in ':stderr' are their uncertainties)."""
    plain = {k: v for k, v in values.items() if not k.endswith(":stderr")}
    stderr = dict(zip(component.param_names, component.stderr)) | {
        k.removesuffix(":stderr"): v for k, v in values.items() if k.endswith(":stderr")}
    return figures(component.params | plain, stderr, component.source + note)


def c2p_paper_default(t_max_s: float) -> Component:
    """The paper's charge-to-pulse transfer until a C2P circuit is characterized: S_sat = 80 uA x T_max,
    no offset; stage-2 output full scale 40 uA x T_max (its readout clamps A / 40 to [-1, 1])."""
    return Component(C2P, ["q_sat_c", "offset_c", "t_max_s"], [PAPER_S_SAT_CURRENT_A * t_max_s, 0.0, t_max_s],
                     config={"output_full_scale_c": PAPER_READOUT_CURRENT_A * t_max_s},
                     source="paper default (Leroux et al. 2025 code: S_sat = 80, output clamp A/40); no C2P fit yet")


def fit_c2p(unsigned: SweepData, signed: SweepData) -> tuple[FitOutcome, dict[str, float], dict[str, float]]:
    """Fit the characterized converters: `c2p/clipped-linear` on the stage-1 transfer (width vs charge), the
    readout's full scale (the same model on the positive branch of the signed converter) into the config,
    and their energy per conversion and conversion time (figures, stderr = spread over the swept charges)."""
    record = sweep_design(unsigned)
    c2p = record.c2p or C2PDesign()
    t_max = record.cell.t_max_s
    results = []
    for sweep, branch in ((unsigned, 1.0), (signed, 1.0), (signed, -1.0)):
        inputs, width = _ok_points(sweep, "width_s")
        sign = sweep.scalars["sign"][sweep.status == OK] if "sign" in sweep.scalars else np.ones_like(width)
        keep = (branch * inputs["charge_c"] >= 0) & ((sign == branch) | (width == 0)) if sweep is signed else \
            np.ones(width.size, bool)
        if np.count_nonzero(keep) < 5:
            raise FitError(f"only {np.count_nonzero(keep)} usable points in sweep {sweep.name!r}: too few to fit")
        charge, width = branch * inputs["charge_c"][keep], width[keep]
        results.append(fit_model(C2P, {}, {"q_c": charge}, width,
                                 spec(C2P).start({}, charge=charge, width=width, t_max_s=t_max),
                                 f"fit of sweep {sweep.name!r} (width_s vs charge_c)"))
    stage1, positive, negative = results
    part = stage1.component
    part.config.update({"output_full_scale_c": positive.component.param("q_sat_c"),
                        "output_full_scale_negative_c": negative.component.param("q_sat_c"),
                        "output_offset_c": positive.component.param("offset_c"),
                        "output_full_scale_stderr_c": float(positive.component.stderr[0]),
                        "readout_residuals": positive.component.residuals,
                        "counter_levels": c2p.counter_levels, "converter": dataclasses.asdict(c2p)})
    ok = unsigned.status == OK
    ok_signed = signed.status == OK
    conversion = c2p.gap_s + t_max
    energy = {"e_c2p_conversion_j": float(np.mean(unsigned.scalars["e_conversion_j"][ok])),
              "e_c2p_signed_conversion_j": float(np.mean(signed.scalars["e_conversion_j"][ok_signed]))}
    spread = {"e_c2p_conversion_j": float(np.std(unsigned.scalars["e_conversion_j"][ok])),
              "e_c2p_signed_conversion_j": float(np.std(signed.scalars["e_conversion_j"][ok_signed]))}
    return stage1, {**energy, **{f"{k}:stderr": v for k, v in spread.items()}}, {"t_c2p_conversion_s": conversion}


def fit_dac(sweep: SweepData) -> tuple[dict[str, float], dict[str, float]]:
    """The write DAC's figures from its conversion sweep: energy per conversion (mean over every pair of
    levels: random data; `:stderr` = spread) and the worst settling time."""
    ok = sweep.status == OK
    if not np.any(ok):
        raise FitError(f"sweep {sweep.name!r} has no completed conversions to take DAC figures from")
    energy, settle = sweep.scalars["e_conversion_j"][ok], float(np.max(sweep.scalars["settle_s"][ok]))
    write_time = sweep_design(sweep).cell.write_time_s
    if settle >= write_time:
        raise FitError(f"the DAC of sweep {sweep.name!r} does not settle within the write pulse ({settle:.3g} s "
                            f">= write_time_s {write_time:.3g} s): a lower r_string_ohm or a longer write is needed")
    return ({"e_dac_write_j": float(np.mean(energy)), "e_dac_write_j:stderr": float(np.std(energy))},
            {"t_dac_settle_s": settle})


def energy_from_sweeps(read: SweepData, write: SweepData) -> Component:
    """Energy per action from the characterization: read per cell (full pulse, mean over stored values, and
    per second of pulse) and write per cell; the spread over levels is given as the uncertainty."""
    full = read.scalars["e_read_j"][:, -1, -1]
    pulse = float(read.coords["pulse_s"][-1])
    writes = write.scalars["e_write_j"][write.status == OK]
    return figures({"e_read_cell_j": float(np.mean(full)), "e_read_cell_per_s_w": float(np.mean(full) / pulse),
                    "e_write_cell_j": float(np.mean(writes))},
                   {"e_read_cell_j": float(np.std(full)), "e_read_cell_per_s_w": float(np.std(full) / pulse),
                    "e_write_cell_j": float(np.std(writes))},
                   "characterization: mean (stderr = spread over stored levels) of e_read_j at the longest "
                   "pulse and highest input, and of e_write_j")



def fit_characterization(path: str | Path, model: str = "poly", order: int = 5, decay_model: str = "leakage",
                         corner: str | None = None, temp_c: float | None = None
                         ) -> tuple[Surrogate, dict[str, FitOutcome]]:
    """Fit every component from a characterization file into a surrogate, at one of its conditions (`corner`,
    `temp_c`; None: the only one, see `gaincell.conditions.select_condition`)."""
    path = Path(path)
    unfinished = unfinished_sweeps(path)
    if unfinished:
        listed = ", ".join(f"{name!r} ({left} of {total} points)" for name, (left, total) in unfinished.items())
        raise InputFileError(f"{path}: sweeps not finished: {listed} were not simulated yet (an interrupted "
                             "`gaincell characterize`); run the same characterize command again to finish them")

    def condition_sweep(name: str) -> SweepData:
        return read_condition(path, name, corner, temp_c)

    read, write, retention = (condition_sweep(name) for name in ("read", "write", "retention"))
    record = sweep_design(read)
    design, c2p_design, dac_design = record.cell, record.c2p, record.dac
    outcomes = {"multiply": fit_multiply(read, design, model, order), "decay": fit_decay(retention, design, decay_model)}
    t_max = design.t_max_s
    energy = energy_from_sweeps(read, write)
    timing = {"t_max_s": t_max, "write_time_s": design.write_time_s}
    c2p = c2p_paper_default(t_max)
    available = set(list_sweeps(path))
    if {"c2p", "c2p_signed"} <= available:  # a characterized converter replaces the paper's values
        c2p_sweep = condition_sweep("c2p")
        c2p_design = sweep_design(c2p_sweep).c2p or c2p_design
        outcomes["c2p"], c2p_energy, c2p_timing = fit_c2p(c2p_sweep, condition_sweep("c2p_signed"))
        c2p = outcomes["c2p"].component
        energy = _more_figures(energy, c2p_energy, "; C2P: mean energy per conversion of sweeps 'c2p' / "
                               "'c2p_signed' (stderr = spread over the swept charges)")
        timing |= c2p_timing
    if "dac" in available:  # a characterized write DAC replaces the paper's DAC figure
        dac_sweep = condition_sweep("dac")
        dac_design = sweep_design(dac_sweep).dac or dac_design
        dac_energy, dac_timing = fit_dac(dac_sweep)
        energy = _more_figures(energy, dac_energy, "; DAC: mean energy per conversion over every pair of levels "
                               "of sweep 'dac' (stderr = spread)")
        timing |= dac_timing
    components = {
        "multiply": outcomes["multiply"].component,
        "decay": outcomes["decay"].component,
        "c2p": c2p,
        "energy": energy,
        "timing": figures(timing, source="design" + ("; t_c2p_conversion_s: C2P window gap + T_max"
                                                     if "t_c2p_conversion_s" in timing else "")
                          + ("; t_dac_settle_s: worst settling of sweep 'dac'" if "t_dac_settle_s" in timing else "")),
    }
    hardware = from_design(design, c2p_design, dac_design, timing)  # the converters and array the layer computes
    surrogate = Surrogate(components, design, str(path.resolve()), sha256_of(path), hardware=hardware,
                          c2p_design=c2p_design, dac_design=dac_design)
    from .variation import fit_variation, has_monte_carlo

    if has_monte_carlo(path):  # Monte Carlo cells in the file: the cell-to-cell spread (fitting/variation.py)
        surrogate.variation = fit_variation(path)
    return surrogate, outcomes

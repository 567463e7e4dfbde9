"""The compact model of a gain cell: model ids and their equations, numpy only (the torch forms the layer runs,
`polyval` and the straight-through quantizers, are in `surrogate.transfers`).

fitting/ fits these equations to SPICE sweeps; surrogate/ stores the fitted parameters under the model ids
and compiles them into the attention layer. A surrogate file names a component's model by id
(`multiply/poly`, `decay/stretched-exponential`, ...); `evaluate(model_id, config, params, **inputs)`
computes it from the file alone. All quantities are SI: currents in A, charges in C, voltages in V, times in s.

Multiply (the read): the charge a cell delivers for an input pulse of width `pulse_s` and amplitude `vin_v`
with `stored_v` on its storage node is `pulse_s * I(stored_v, vin_v)` (linear in pulse width, as the SPICE
runs show to 1 - R^2 ~ 1e-11), with
- `multiply/poly` (paper Eq. 3): I = sum_{i+j <= order} c_ij y^i u^j, y = stored_v - y0_v, u = vin_v - vin0_v
  (vin0_v = 0 is the paper's form; vin0_v = the nominal input makes c_i0 the curve at that input);
  `vin_order = 0` gives the paper's cubic at a fixed input amplitude. Coefficient c_ij is named `c{i}{j}`
  (`poly_name`, `poly_exponents`);
- `multiply/ekv-complementary`: a physically motivated alternative, the NMOS minus the PMOS read branch,
  each an EKV-style smooth square law k * ln(1 + exp((V_ov) / s))^2, scaled by (1 + a_vin (vin - vdd)).
Decay (retention): the storage node's excess over the hold level `hold_v` decays as exp(-t / tau_s)
(`decay/exponential`) or exp(-(t / tau)^beta) with tau = tau_s ((v0 - hold) / (ref_v - hold))^gamma
(`decay/stretched-exponential`; tau_s is the 1/e time at the reference level `ref_v`), or, the default, as
a node discharged by a subthreshold current that is constant far above the hold level and fades near it
(`decay/subthreshold-leakage`, the ODE `leakage_rate`): the shape the SPICE retention curves have.
`tau_1e` is the one retention time constant of every decay model.
C2P (charge-to-pulse): pulse width = t_max_s * clamp((q - offset_c) / q_sat_c, 0, 1) (`c2p/clipped-linear`).
Quantizers: `quantize` (evenly spaced levels of the DACs and pulse generators), `quantize_readout` (the
signed counter's steps); they work on numpy arrays and torch tensors alike.
Each model id is one typed spec (`ModelSpec`, `MODELS`): its inputs, config keys and parameter names, its
equation, each parameter's plausible range with its meaning and unit (`Plausible`: what a surrogate file may
hold) and where its fit starts (`FitStart`: initial values, bounds, fixed parameters, from scales of the data).
The token clock lives with the hardware configuration (`gaincell.hardware.token_time_s`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConfigError, FitError

FIGURES_MODEL = "figures/v1"  # a component of plain named figures (energies, times), not an equation
POLY, EKV = "multiply/poly", "multiply/ekv-complementary"
EXPONENTIAL, STRETCHED, LEAKAGE = "decay/exponential", "decay/stretched-exponential", "decay/subthreshold-leakage"
C2P = "c2p/clipped-linear"


# ---------------------------------------------------------------------------------------------------
# Multiply

def poly_terms(order: int, vin_order: int | None = None) -> list[tuple[int, int]]:
    """Exponents (i, j) of y^i vin^j with i + j <= order and j <= vin_order (default: order)."""
    vin_order = order if vin_order is None else vin_order
    return [(i, j) for i in range(order + 1) for j in range(min(order - i, vin_order) + 1)]


def poly_name(i: int, j: int) -> str:
    """The parameter name of the coefficient of y^i vin^j."""
    return f"c{i}{j}"


def poly_exponents(name: str) -> tuple[int, int]:
    """(i, j) of a coefficient named `c{i}{j}`."""
    return int(name[1]), int(name[2])


def poly_current(y, vin, coefficients: dict[str, float]):
    """sum c_ij y^i vin^j over coefficients named `c{i}{j}`."""
    total = 0.0
    for name, value in coefficients.items():
        i, j = poly_exponents(name)
        total = total + value * y**i * vin**j
    return total


def poly_at_input(config: dict, params: dict[str, float], vin_v: float) -> list[float]:
    """A `multiply/poly` read current at a fixed input amplitude as coefficients of y^0, y^1, ... (A)."""
    u = vin_v - config.get("vin0_v", 0.0)
    coefficients = [0.0] * (int(config["order"]) + 1)
    for name, value in params.items():
        i, j = poly_exponents(name)
        coefficients[i] += value * u**j
    return coefficients


def _softplus_squared(x):
    return np.logaddexp(0.0, x) ** 2


def ekv_current(stored_v, vin_v, vdd_v, kn, kp, vtn, vtp, s, a_vin):
    """NMOS-minus-PMOS read current of the complementary cell (A)."""
    n_branch = kn * _softplus_squared((stored_v - vtn) / s)
    p_branch = kp * _softplus_squared((vdd_v - stored_v - vtp) / s)
    return (n_branch - p_branch) * (1.0 + a_vin * (vin_v - vdd_v))


def _poly_charge(config, params, stored_v, pulse_s, vin_v):
    y = np.asarray(stored_v) - config["y0_v"]
    return np.asarray(pulse_s) * poly_current(y, np.asarray(vin_v) - config.get("vin0_v", 0.0), params)


def _ekv_charge(config, params, stored_v, pulse_s, vin_v):
    return np.asarray(pulse_s) * ekv_current(np.asarray(stored_v), np.asarray(vin_v), config["vdd_v"], **params)


# ---------------------------------------------------------------------------------------------------
# Decay

def decay_excess(t_s, tau_s, beta=1.0):
    """Remaining fraction of the stored excess after t_s."""
    return np.exp(-((np.asarray(t_s) / tau_s) ** beta))


def level_tau(stored_v, hold_v, ref_v, tau_s, gamma):
    """Time constant at a stored level: tau_s at `ref_v`, scaled by (excess / ref excess)^gamma (a constant
    leakage current gives gamma = 1: a fuller node takes proportionally longer to lose a fraction of its charge)."""
    ratio = np.maximum(np.asarray(stored_v) - hold_v, 1e-6) / (ref_v - hold_v)
    return tau_s * ratio**gamma


def _decay(config, params, t_s, stored_v):
    hold = config["hold_v"]
    tau = level_tau(stored_v, hold, config["ref_v"], params["tau_s"], params.get("gamma", 0.0))
    return hold + (np.asarray(stored_v) - hold) * decay_excess(t_s, tau, params.get("beta", 1.0))


def leakage_rate(excess_v, rate_v_per_s, vt_v, dibl_per_v=0.0):
    """-dx/dt of the subthreshold-leakage decay at excess x over the hold level: rate (1 + dibl x)
    (1 - exp(-x / vt)), nearly constant far above the hold level (with a drain-induced slope `dibl`) and
    fading as the drain-source voltage x approaches a thermal voltage `vt`."""
    return rate_v_per_s * (1.0 + dibl_per_v * excess_v) * -np.expm1(-excess_v / vt_v)


def leakage_excess(t_s, excess_v, rate_v_per_s, vt_v, dibl_per_v=0.0, grid_points: int = 4000):
    """Stored excess after t_s under `leakage_rate`, solved by one integral: T(x) = time to fall from the
    largest start to x; x(t; x0) = T^-1(T(x0) + t)."""
    x0 = np.maximum(np.asarray(excess_v, dtype=float), 1e-9)
    x = np.geomspace(np.max(x0), 1e-9, grid_points)  # from the top down to ~0, dense near 0
    inverse = 1.0 / np.maximum(leakage_rate(x, rate_v_per_s, vt_v, dibl_per_v), 1e-300)
    clock = np.concatenate([[0.0], np.cumsum(0.5 * (inverse[1:] + inverse[:-1]) * -np.diff(x))])
    start = np.interp(-x0, -x, clock)  # T(x0); x decreases along the grid, so interpolate on -x
    return np.interp(start + np.asarray(t_s), clock, x)


def _leakage(config, params, t_s, stored_v):
    hold = config["hold_v"]
    return hold + leakage_excess(t_s, np.asarray(stored_v) - hold, params["rate_v_per_s"], params["vt_v"],
                                 params["dibl_per_v"])


def decay_factor(model_id: str, config: dict, params: dict, age_s):
    """Remaining fraction of the reference level's excess after `age_s` (what multiplies a stored product)."""
    ref = np.full(np.shape(age_s), config["ref_v"])
    return (evaluate(model_id, config, params, t_s=age_s, stored_v=ref) - config["hold_v"]) / (config["ref_v"]
                                                                                               - config["hold_v"])


def tau_1e(model_id: str, config: dict, params: dict) -> float:
    """Time for the reference level's excess to fall to 1/e (s): the retention time constant."""
    if model_id == LEAKAGE:
        x0 = config["ref_v"] - config["hold_v"]
        x = np.linspace(x0, x0 / np.e, 2001)
        rate = leakage_rate(x, params["rate_v_per_s"], params["vt_v"], params["dibl_per_v"])
        return float(np.trapezoid(1.0 / rate, -x))
    return float(params["tau_s"])


# ---------------------------------------------------------------------------------------------------
# Charge-to-pulse converter and quantizers

def c2p_pulse(q_c, q_sat_c, offset_c, t_max_s):
    """Pulse width of the charge-to-pulse converter (HardSigmoid of the column charge)."""
    return t_max_s * np.clip((np.asarray(q_c) - offset_c) / q_sat_c, 0.0, 1.0)


def _c2p(config, params, q_c):
    return c2p_pulse(q_c, **params)


def _round(x):
    return x.round() if hasattr(x, "round") else np.round(x)  # numpy arrays and scalars, torch tensors


def quantize(x, levels: int, low: float, high: float):
    """Round to `levels` evenly spaced values over [low, high] (a DAC's or pulse generator's levels)."""
    step = (high - low) / (levels - 1)
    return _round((x - low) / step) * step + low


def quantize_readout(x, steps: int):
    """The signed counter's readout of x in [-1, 1]: sign and magnitude in 1 / `steps` units."""
    return _round(x * steps) / steps


# ---------------------------------------------------------------------------------------------------
# Model ids

@dataclass(frozen=True)
class Plausible:
    """The physically plausible range [low, high] of one parameter, and what the parameter is (in its unit)."""

    meaning: str
    unit: str
    low: float
    high: float

    def allows(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def describe(self) -> str:
        return f"{self.meaning} must lie in [{self.low:g}, {self.high:g}]{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class FitStart:
    """Where a fit of a model starts: initial values, bounds (low, high; None = open) and parameters held fixed."""

    initial: dict[str, float]
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()


# Wide on purpose: a range catches a zero, a sign error or a unit slip (1e30, 1e-30), never an unusual cell.
# A gain cell stores fC..pC and reads uA; its converters integrate pC in ns; it retains for us..years. No
# charge is below one electron's, no pulse or time constant below a femtosecond.
ELECTRON_C = 1.602e-19
MAX_CHARGE_C = 1e-6
MAX_VOLTAGE_V = 10.0  # no level of a gain cell (VDD <= 5 V) is beyond +-10 V: a larger one is a unit slip
MAX_COEFFICIENT = 1e3  # A/V^n: no gain cell's read-current polynomial has a larger coefficient
_RETENTION = Plausible("the retention time constant", "s", 1e-15, 1e12)


def _poly_start(config: dict) -> FitStart:
    """Linear least squares: any start converges; a positive slope is the signed cell's."""
    names = [poly_name(i, j) for i, j in poly_terms(config["order"], config.get("vin_order"))]
    return FitStart({name: 0.0 for name in names} | {poly_name(1, 0): 2e-5})


def _ekv_start(config: dict) -> FitStart:
    return FitStart({"kn": 2e-6, "kp": 2e-6, "vtn": 0.35, "vtp": 0.4, "s": 0.05, "a_vin": 1.0},
                    {"s": (1e-3, 0.5), "kn": (0, 1e-3), "kp": (0, 1e-3)})


def _decay_start(model_id: str):
    """From the reference level's raw 1/e time `tau_s` (read off its curve) and its excess over the hold level."""
    def start(config: dict, tau_s: float) -> FitStart:
        excess = config["ref_v"] - config["hold_v"]
        return {
            LEAKAGE: FitStart({"rate_v_per_s": 0.8 * excess / tau_s, "vt_v": 0.05, "dibl_per_v": 0.0},
                              {"rate_v_per_s": (0, None), "vt_v": (1e-3, 1.0), "dibl_per_v": (-0.9 / excess, 50.0)}),
            STRETCHED: FitStart({"tau_s": tau_s, "beta": 1.0, "gamma": 0.0},
                                {"tau_s": (tau_s / 1e3, tau_s * 1e3), "beta": (0.2, 5.0)}, ("gamma",)),
            EXPONENTIAL: FitStart({"tau_s": tau_s}, {"tau_s": (tau_s / 1e3, tau_s * 1e3)}),
        }[model_id]
    return start


def _c2p_start(config: dict, charge, width, t_max_s: float) -> FitStart:
    """From a line through the unclipped conversions (the clamp's flat parts give no gradient)."""
    ramp = (width > 0.05 * t_max_s) & (width < 0.95 * t_max_s)
    if np.count_nonzero(ramp) < 2:
        raise FitError(f"only {np.count_nonzero(ramp)} conversions between 5 % and 95 % of T_max: the sweep does "
                       "not resolve the converter's ramp")
    slope, intercept = np.polyfit(charge[ramp], width[ramp], 1)
    return FitStart({"q_sat_c": t_max_s / slope, "offset_c": -intercept / slope, "t_max_s": float(np.max(width))})


@dataclass(frozen=True)
class ModelSpec:
    """A model id: its inputs, the config keys it needs, how its parameter names follow from its config, how to
    evaluate it, each parameter's plausible range (`ranges`; "*" for every parameter) and where its fit starts
    (`start(config, **scales from the data)`)."""

    model_id: str
    inputs: tuple[str, ...]
    output: str
    config_keys: tuple[str, ...]
    param_names: Callable[[dict], list[str]]
    function: Callable  # function(config, params: dict, **inputs)
    ranges: dict[str, Plausible]
    start: Callable[..., FitStart]

    def plausible(self, parameter: str) -> Plausible | None:
        """The range a parameter must lie in (None: any finite value)."""
        return self.ranges.get(parameter, self.ranges.get("*"))


_LEAKAGE_RANGES = {
    "rate_v_per_s": Plausible("the storage node's leakage discharge rate", "V/s", 1e-15, 1e12),
    "vt_v": Plausible("the voltage over which the leakage fades near the hold level", "V", 1e-4, 10.0),
    "dibl_per_v": Plausible("the drain-induced slope of the leakage", "1/V", -1e3, 1e3)}
_STRETCHED_RANGES = {
    "tau_s": _RETENTION, "beta": Plausible("the stretch exponent", "", 1e-3, 10.0),
    "gamma": Plausible("the exponent of the time constant's dependence on the stored level", "", -10.0, 10.0)}
_EKV_RANGES = {
    "kn": Plausible("the NMOS read branch's strength", "A", 0.0, 1.0),
    "kp": Plausible("the PMOS read branch's strength", "A", 0.0, 1.0),
    "vtn": Plausible("the NMOS threshold", "V", -10.0, 10.0),
    "vtp": Plausible("the PMOS threshold", "V", -10.0, 10.0),
    "s": Plausible("the subthreshold slope voltage", "V", 1e-4, 10.0),
    "a_vin": Plausible("the read current's sensitivity to the input amplitude", "1/V", -1e3, 1e3)}
_C2P_RANGES = {
    "q_sat_c": Plausible("the C2P saturation charge (the column charge that gives the full T_max pulse; the "
                         "attention divides by it)", "C", ELECTRON_C, MAX_CHARGE_C),
    "offset_c": Plausible("the charge where the C2P ramp starts", "C", -MAX_CHARGE_C, MAX_CHARGE_C),
    "t_max_s": Plausible("the longest C2P output pulse", "s", 1e-15, 1e-3)}
_POLY_RANGES = {"*": Plausible("a read-current coefficient of the multiply polynomial", "A/V^n", -MAX_COEFFICIENT,
                               MAX_COEFFICIENT)}

MODELS: dict[str, ModelSpec] = {spec.model_id: spec for spec in (
    ModelSpec(POLY, ("stored_v", "pulse_s", "vin_v"), "charge_c", ("order", "y0_v"),
              lambda c: [poly_name(i, j) for i, j in poly_terms(c["order"], c.get("vin_order"))], _poly_charge,
              _POLY_RANGES, _poly_start),
    ModelSpec(EKV, ("stored_v", "pulse_s", "vin_v"), "charge_c", ("vdd_v",),
              lambda c: ["kn", "kp", "vtn", "vtp", "s", "a_vin"], _ekv_charge, _EKV_RANGES, _ekv_start),
    ModelSpec(EXPONENTIAL, ("t_s", "stored_v"), "v_sn", ("hold_v", "ref_v"), lambda c: ["tau_s"], _decay,
              {"tau_s": _RETENTION}, _decay_start(EXPONENTIAL)),
    ModelSpec(STRETCHED, ("t_s", "stored_v"), "v_sn", ("hold_v", "ref_v"), lambda c: ["tau_s", "beta", "gamma"],
              _decay, _STRETCHED_RANGES, _decay_start(STRETCHED)),
    ModelSpec(LEAKAGE, ("t_s", "stored_v"), "v_sn", ("hold_v", "ref_v"),
              lambda c: ["rate_v_per_s", "vt_v", "dibl_per_v"], _leakage, _LEAKAGE_RANGES, _decay_start(LEAKAGE)),
    ModelSpec(C2P, ("q_c",), "pulse_s", (), lambda c: ["q_sat_c", "offset_c", "t_max_s"], _c2p, _C2P_RANGES,
              _c2p_start),
)}


def spec(model_id: str) -> ModelSpec:
    if model_id not in MODELS:
        raise ConfigError("model_id", f"unknown model {model_id!r}; known: {', '.join(MODELS)}")
    return MODELS[model_id]


def evaluate(model_id: str, config: dict, params: dict[str, float], **inputs):
    """Evaluate a model from its id, config and parameter values (what a surrogate file stores)."""
    model = spec(model_id)
    missing = set(model.inputs) - set(inputs)
    if missing:
        raise ConfigError(sorted(missing)[0], f"is an input of {model_id} and was not given")
    return model.function(config, params, **{k: inputs[k] for k in model.inputs})

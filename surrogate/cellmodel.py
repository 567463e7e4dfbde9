"""The surrogate compiled into the few numbers the torch attention needs (`CellModel`).

Units inside the attention are normalised so that no physical constant appears in the inner loop:
- q is the read pulse width as a fraction of T_max (0..1), k and v are stored voltages (V);
- `multiply_k(k)` is the charge one cell delivers for a full T_max pulse divided by the C2P saturation
  charge q_sat, so stage 1 gives S / q_sat directly and the C2P is `clamp(S - offset, 0, 1)`;
- `multiply_v(v)` is the same charge divided by the readout full-scale charge, so stage 2 gives the
  readout's [-1, 1] scale directly.
The equations are gaincell.compact's. The multiply is the fitted curve at the design's read input amplitude,
collapsed into a polynomial in
y = stored_v - y0 (exact for `multiply/poly`; other models are re-expanded in a degree-7 least-squares
polynomial whose residual is recorded in `notes`). `linear` is the least-squares line of that curve over the
stored range (the paper's intermediate model, slope about 19.3 uA/V for its cell).

`variation` (when the surrogate has one): its `Variation` in these units (`variation.LayerVariation`): the
coefficient covariance in multiply_k units (A -> x t_max / q_sat), re-centred on this y0 when the variation's
polynomial has another centre, the offset and read noise over q_sat, and the retention spread with the decay
model's effective stretch exponent at tau_1e (1 for exponential decay).

Validity policy: the layer clamps q to [0, 1] and k, v to the stored range, so at run time the multiply is
never evaluated outside that box. At construction the box is compared with the surrogate's `validity`
(stored_v, pulse_s, vin_v): a box reaching outside it raises `SurrogateError` naming the input and both
ranges, unless `allow_extrapolation=True`, which turns the error into a `UserWarning`.

Every compiled layer is probed where it is built (`probe_compiled`: every constant and what the layer evaluates
checked for non-finite values, naming the component at fault); `probe_layer` compiles and probes a surrogate
(`gaincell attention` and the tests call it). Loading a surrogate file does not (it needs no torch).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from gaincell.compact import POLY, decay_factor, evaluate, poly_at_input, tau_1e
from gaincell.hardware import PAPER_HARDWARE, HardwareConfig, token_time_s
from gaincell.errors import ConfigError, GaincellError, SurrogateError

from .file import Surrogate
from .variation import LayerVariation

TOKEN_PERIOD_RANGE_S = (1e-15, 1e6)  # time between two tokens: as the surrogate's figures (a femtosecond .. 11 days)


@dataclass(frozen=True)
class CellModel:
    """Torch-ready constants of one surrogate (see the module docstring for the units)."""

    name: str
    y0_v: float
    cubic: tuple[float, ...]  # multiply_k coefficients of y^0, y^1, ... (charge / q_sat per full pulse)
    line: tuple[float, float]  # the least-squares line (intercept, slope) in the same units
    v_over_k: float  # q_sat / output full scale: multiply_v = v_over_k * multiply_k
    offset: float  # C2P offset / q_sat
    stored_range_v: tuple[float, float]
    t_max_s: float
    token_period_s: float
    decay_model: tuple[str, dict, dict] | None = None  # (model id, config, params) of the retention
    notes: dict = field(default_factory=dict)
    variation: LayerVariation | None = field(default=None, compare=False)
    hardware: HardwareConfig = PAPER_HARDWARE  # the converters' levels, array, window and read phases
    _aged: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # aged_expansion results

    @classmethod
    def from_surrogate(cls, surrogate: "Surrogate | str", *, token_period_s: float | None = None, layers: int = 1,
                       read_phases: int = 1, stored_range_v: tuple[float, float] | None = None,
                       allow_extrapolation: bool = False, multiply: str = "multiply",
                       hardware: HardwareConfig | None = None, where: str | None = None) -> "CellModel":
        """Compile a surrogate (object or path). `token_period_s` is the time between two tokens written
        to the same array (default: the time of a token through `layers` layers with `read_phases` query heads
        per KV head, `gaincell.hardware.token_time_s`); `hardware`: the surrogate's configuration unless given
        (e.g. with a user's overrides). The compiled layer is probed (`probe_compiled`); `where` names the
        surrogate in its errors."""
        if not isinstance(surrogate, Surrogate):
            where = str(surrogate) if where is None else where
            surrogate = Surrogate.load(surrogate)
        design = surrogate.design
        vin = design.v_in_v
        t_max = float(surrogate["timing"].params.get("t_max_s", design.t_max_s))
        lo, hi = stored_range_v if stored_range_v is not None else (0.0, design.vdd_v)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ConfigError("stored_range_v", f"must be two finite voltages, low < high; got {stored_range_v}")
        if multiply not in surrogate.components:
            raise ConfigError("multiply", f"the surrogate has no component {multiply!r}; it has "
                                          f"{', '.join(surrogate.components)}")
        part = surrogate[multiply]
        # charge is pulse x current by construction (linear in pulse width, measured to 1 - R^2 ~ 1e-11), so
        # only the longest pulse is compared with the fitted range, not the shortest
        pulses = part.validity.get("pulse_s", [0.0, t_max])
        _check_validity(part.validity, {"stored_v": (lo, hi), "pulse_s": (min(pulses[0], t_max), t_max),
                                        "vin_v": (vin, vin)},
                        multiply, allow_extrapolation)
        coefficients, y0, notes = _as_polynomial(part, vin, lo, hi)
        c2p = surrogate["c2p"].params
        q_sat = c2p["q_sat_c"]
        full_scale = float(surrogate["c2p"].config.get("output_full_scale_c", q_sat / 2))
        per_q_sat = np.asarray(coefficients) * t_max / q_sat
        y = np.linspace(lo - y0, hi - y0, 1001)
        slope, intercept = np.polyfit(y, np.polyval(per_q_sat[::-1], y), 1)
        hardware = surrogate.hardware if hardware is None else hardware
        if token_period_s is None:
            token_period_s = token_time_s(hardware, layers, read_phases)
        low, high = TOKEN_PERIOD_RANGE_S
        if not low <= token_period_s <= high:
            raise ConfigError("token_period_s", f"must be a time in seconds in [{low:g}, {high:g}]; got "
                                                f"{token_period_s}")
        decay = surrogate["decay"]
        notes |= {"multiply_component": multiply, "read_vin_v": vin,
                  "decay_tau_1e_s": tau_1e(decay.model_id, decay.config, decay.params)}
        variation = None
        if surrogate.variation is not None:
            beta = retention_beta(decay.model_id, decay.config, decay.params, notes["decay_tau_1e_s"])
            variation = LayerVariation.from_variation(surrogate.variation, y0, t_max / q_sat, beta, q_sat)
        cell = cls(design.name, y0, tuple(float(c) for c in per_q_sat),
                   (float(intercept), float(slope)), q_sat / full_scale, c2p["offset_c"] / q_sat, (lo, hi),
                   t_max, float(token_period_s), (decay.model_id, dict(decay.config), decay.params), notes,
                   variation, hardware)
        probe_compiled(cell, surrogate, f"surrogate of design {design.name!r}" if where is None else where)
        return cell

    def decay_table(self, length: int, token_period_s: float | None = None) -> np.ndarray:
        """Remaining fraction of a stored product after 0, 1, ..., length - 1 token periods."""
        period = self.token_period_s if token_period_s is None else token_period_s
        if self.decay_model is None:
            return np.ones(length)
        model_id, config, params = self.decay_model
        return np.asarray(decay_factor(model_id, config, params, np.arange(length) * period), dtype=float)

    def aged_expansion(self, ages_s, span_s: float | None = None) -> "AgedExpansion":
        """The multiply of a cell written `ages_s` ago (one age per table entry), expanded in separable terms
        (`AgedExpansion`): the stored voltage decays by the retention model, then the fitted curve (and its line)
        reads it. The terms are found for ages 0..`span_s` (None: the whole decay, AGED_SPAN_TAU x tau_1e), so
        the same span gives the same terms whatever ages are tabulated."""
        if self.decay_model is None:
            raise ConfigError("decay", f"the cell {self.name!r} has no retention model to age its stored voltages")
        span = AGED_SPAN_TAU * tau_1e(*self.decay_model) if span_s is None else float(span_s)
        ages = np.asarray(ages_s, dtype=float)
        key = (ages.tobytes(), span)
        if key not in self._aged:  # a layer's few rings: an SVD each, not one per call
            if len(self._aged) >= 8:
                self._aged.clear()
            self._aged[key] = AgedExpansion.build(self, ages, span)
        return self._aged[key]

    def polynomial(self, linear: bool = False) -> tuple[float, ...]:
        """Coefficients (of y^0, y^1, ...) of multiply_k, or of its least-squares line."""
        return self.line if linear else self.cubic


AGED_GRID_POINTS = 257  # stored voltages the aged multiply is tabulated at (linear interpolation between them)
AGED_TOLERANCE = 5e-3  # largest error of the expansion, as a fraction of the multiply's full scale (below the fit's own)
AGED_MAX_TERMS = 16
AGED_BASIS_AGES = 1024  # ages (evenly and geometrically spaced) the terms are found from; tables are projected
AGED_SPAN_TAU = 20.0  # the whole decay, in retention time constants


@dataclass(frozen=True)
class AgedExpansion:
    """What a cell reads after holding its stored voltage v for an age a: F(v, a) = f(v_held(v, a)), f the
    fitted multiply (or its least-squares line), v_held the retention model's voltage (it leaks toward the
    hold level, at a rate that may depend on the level). The layer needs F as a sum of separable terms,
        F(v, a) = sum_j values[j](v) tables[j](a),
    so that stage 1 stays matrix products (one per term, each times its table by age). The terms are the
    leading singular vectors of F on a grid of stored voltages x the ages, as few as keep the largest error
    within AGED_TOLERANCE of the multiply's full scale (the exponential decay of the paper with a cubic needs at
    most 4; a level-dependent leakage a few more); `values` are tabulated on `grid_v` (linear interpolation).
    The terms depend on the span of ages they are found for, not on the ages tabulated: a ring's tables are
    prefixes of a longer ring's. The curve and its line share the tables (`line_values`: the paper's linear-gradient option reads them).
    `product_error`: the error of the paper's form f(v) d(a) (every product times the reference level's decay
    factor) over the span; where it is within tolerance the layer runs that form."""

    grid_v: np.ndarray  # (G,) stored voltages
    values: np.ndarray  # (terms, G) multiply_k of the curve
    line_values: np.ndarray  # (terms, G) multiply_k of the least-squares line
    tables: np.ndarray  # (terms, ages)
    error: float  # largest |expansion - F| over the grid and the tabulated ages / full scale
    product_error: float  # largest |f(v) d(a) - F| over the grid and the span / full scale

    @property
    def terms(self) -> int:
        return self.tables.shape[0]

    @classmethod
    def build(cls, cell: "CellModel", ages_s: np.ndarray, span_s: float) -> "AgedExpansion":
        grid = np.linspace(*cell.stored_range_v, AGED_GRID_POINTS)
        model_id, config, params = cell.decay_model

        def read(ages):  # F of the curve and of the line, stacked: (2G, ages)
            held = evaluate(model_id, config, params, t_s=ages[None, :], stored_v=grid[:, None]) - cell.y0_v
            return np.concatenate([np.polyval(cell.cubic[::-1], held), np.polyval(cell.line[::-1], held)])

        span_s = max(span_s, 1e-300)
        basis_ages = np.concatenate([np.linspace(0, span_s, AGED_BASIS_AGES),
                                     np.geomspace(span_s * 1e-6, span_s, AGED_BASIS_AGES)])
        sampled = read(basis_ages)
        scale = float(np.abs(sampled).max()) or 1.0
        # the left singular vectors, leading first, from the (2G x 2G) Gram matrix: a fraction of the SVD's time
        u = np.linalg.eigh(sampled @ sampled.T)[1][:, ::-1]
        terms = 1
        while terms < min(AGED_MAX_TERMS, u.shape[1]) and np.abs(
                u[:, :terms] @ (u[:, :terms].T @ sampled) - sampled).max() > AGED_TOLERANCE * scale:
            terms += 1
        basis = u[:, :terms]
        product = read(np.zeros(1)) * decay_factor(model_id, config, params, basis_ages)[None, :]
        product_error = float(np.abs(product - sampled).max()) / scale
        tables, error = np.empty((terms, len(ages_s))), 0.0
        for chunk in np.array_split(np.arange(len(ages_s)), max(1, -(-len(ages_s) // 4096))):
            exact = read(ages_s[chunk])
            tables[:, chunk] = basis.T @ exact
            error = max(error, float(np.abs(basis @ tables[:, chunk] - exact).max()) / scale)
        g = len(grid)
        return cls(grid, basis[:g].T.copy(), basis[g:].T.copy(), tables, error, product_error)


def retention_beta(model_id: str, config: dict, params: dict, tau_s: float) -> float:
    """The decay's local stretch exponent d ln(-ln d) / d ln(age) at tau_1e: scaling a cell's decay exponent
    by exp(beta x) scales its tau_1e by exp(-x) (exactly for exponential and stretched-exponential decay)."""
    ages = tau_s * np.exp([-1e-3, 1e-3])
    with np.errstate(all="ignore"):
        slope = np.diff(np.log(-np.log(np.asarray(decay_factor(model_id, config, params, ages), float)))) / 2e-3
    beta = float(slope[0])
    if not (math.isfinite(beta) and beta > 0):
        raise SurrogateError(f"component 'decay' ({model_id}) has no usable slope at tau_1e = {tau_s:g} s for the "
                             "retention variation")
    return beta


def _check_validity(validity: dict, used: dict[str, tuple[float, float]], component: str, allow: bool) -> None:
    for name, (lo, hi) in used.items():
        if name not in validity:
            continue
        vlo, vhi = validity[name]
        tol = 1e-9 * max(abs(vlo), abs(vhi), 1e-12)
        if lo < vlo - tol or hi > vhi + tol:
            message = (f"the attention layer would evaluate {component} at {name} in [{lo:g}, {hi:g}], outside the "
                       f"surrogate's validity [{vlo:g}, {vhi:g}]")
            if not allow:
                raise SurrogateError(message + "; narrow the range (stored_range_v) or pass allow_extrapolation=True")
            warnings.warn(message + " (extrapolating, allow_extrapolation=True)", UserWarning, stacklevel=3)


def _as_polynomial(part, vin: float, lo: float, hi: float) -> tuple[list[float], float, dict]:
    """Current per unit pulse (A) as polynomial coefficients in y = stored_v - y0 at the read input vin."""
    if part.model_id == POLY:
        return poly_at_input(part.config, part.params, vin), float(part.config["y0_v"]), {}
    y0 = 0.5 * (lo + hi)
    stored = np.linspace(lo, hi, 2001)
    current = evaluate(part.model_id, part.config, part.params, stored_v=stored, pulse_s=np.ones_like(stored),
                       vin_v=np.full_like(stored, vin))
    fit = np.polynomial.polynomial.Polynomial.fit(stored - y0, current, 7, domain=[lo - y0, hi - y0],
                                                  window=[lo - y0, hi - y0])
    residual = float(np.sqrt(np.mean((fit(stored - y0) - current) ** 2)) / np.max(np.abs(current)))
    return list(fit.coef), y0, {"polynomial_refit": f"{part.model_id} re-expanded as a degree-7 polynomial",
                                "polynomial_refit_rms_rel": residual}


PROBE_AGES_S = np.concatenate([[0.0], np.geomspace(1e-9, 1e6, 16)])


def probe_layer(surrogate: Surrogate, where="surrogate") -> None:
    """Compile `surrogate` as the attention layer would, extrapolation allowed (the probe only looks for non-finite
    numbers), and probe it (`probe_compiled`); a compilation that fails is refused too, naming `where`."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            CellModel.from_surrogate(surrogate, allow_extrapolation=True, where=where)
    except SurrogateError:
        raise
    except (GaincellError, ArithmeticError, ValueError, KeyError, np.linalg.LinAlgError) as exc:
        raise SurrogateError(f"{where}: the attention layer cannot be built from it: {exc}") from None


MAX_TRANSFER = 1e30  # |f(k)| in C2P units: a tile of 4096 keys x 256 dims of them still sums finitely in float32


def probe_compiled(cell: CellModel, surrogate: Surrogate, where: str) -> None:
    """Check a compiled surrogate where the layer is built: every constant finite, decay factors in [0, 1], and
    what the layer evaluates (the multiply and its line over the stored range, the aged multiply's terms over a
    short ring) finite in float32 and small enough to sum; refuse, naming the component, with a
    `SurrogateError`."""
    def refuse(message: str):
        return SurrogateError(f"{where}: {message}")

    decay = surrogate["decay"]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        factors = np.concatenate([cell.decay_table(64), decay_factor(decay.model_id, decay.config, decay.params,
                                                                     PROBE_AGES_S)])
    constants = {"multiply": (*cell.cubic, *cell.line), "c2p": (cell.v_over_k, cell.offset),
                 "timing": (cell.t_max_s, cell.token_period_s)}
    for component, values in constants.items():
        if not np.all(np.isfinite(values)):
            raise refuse(f"component {component!r} compiles to non-finite attention constants {values}")
    if not (np.all(np.isfinite(factors)) and np.all((factors >= 0) & (factors <= 1 + 1e-9))):
        raise refuse(f"component 'decay' ({decay.model_id}) gives decay factors {factors.min():g} .. {factors.max():g} "
                     f"for ages 0 .. {PROBE_AGES_S[-1]:g} s; a stored product's remaining fraction must stay in [0, 1]")
    stored = np.linspace(*cell.stored_range_v, 101) - cell.y0_v
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        read = [np.polyval(np.asarray(c[::-1], np.float32), stored.astype(np.float32)) * np.float32(scale)
                for c in (cell.cubic, cell.line) for scale in (1.0, cell.v_over_k)]
        aged = cell.aged_expansion(np.arange(8) * cell.token_period_s) if cell.decay_model is not None else None
    values = np.concatenate([np.ravel(r) for r in read] + ([aged.values.ravel(), aged.tables.ravel()] if aged else []))
    if not (np.all(np.isfinite(values)) and np.abs(values).max() <= MAX_TRANSFER):
        raise refuse(f"the attention layer built from it evaluates non-finite or overflowing values (largest "
                     f"|value| {np.abs(values).max():g}) although its constants are finite (components multiply, c2p, "
                     "decay, timing)")

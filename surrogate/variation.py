"""Cell-to-cell variation and read noise of a gain-cell design (`Variation`).

`Variation` is the surrogate's optional `variation` component (HDF5 group `variation`, schema version 3): the
spread, across Monte Carlo cells, of the fitted multiply (the per-cell read-current polynomial in
y = stored_v - y0_v at the design's read input and longest pulse, A per V^i; mean and covariance of its
coefficients), of the retention (sigma of ln tau_1e), of the charge-to-pulse converter's offset (C), and the
read noise: the rms charge noise of one cell read over one full T_max pulse (C). White noise integrated over a
pulse of a fraction p of T_max has rms read_noise_c * sqrt(p), so a column read by pulses p_i has
read_noise_c * sqrt(sum p_i).

The frozen per-cell draws the layer makes from it are `surrogate.varied.CellDraws` (torch); this module is
numpy-only, so reading a surrogate file does not load torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import numpy as np

from gaincell.compact import MAX_CHARGE_C, MAX_COEFFICIENT, MAX_VOLTAGE_V
from gaincell.errors import SurrogateError

GROUP = "variation"
MAX_LN_SIGMA = 10.0
ATTRIBUTES = ("y0_v", "retention_ln_sigma", "offset_sigma_c", "read_noise_c", "cells", "source")


@dataclass(frozen=True)
class Variation:
    """Per-cell spread of a design's fitted behaviour and its read noise (units: see the module docstring)."""

    y0_v: float  # centre of the multiply polynomial (stored volts)
    multiply_mean: tuple[float, ...]  # per-cell read-current polynomial in (stored_v - y0_v), A per V^i (mean)
    multiply_covariance: np.ndarray  # (n, n) covariance of those coefficients across cells
    retention_ln_sigma: float  # sigma of ln(tau_1e) across cells
    offset_sigma_c: float  # sigma of the C2P offset across converters (coulombs)
    read_noise_c: float  # rms charge noise of one cell read over a full T_max pulse (coulombs)
    cells: int  # Monte Carlo cells behind the figures
    source: str  # provenance

    def __post_init__(self):
        def refuse(problem: str):
            return SurrogateError(f"variation: {problem}")

        if not (_finite_number(self.y0_v) and abs(self.y0_v) <= MAX_VOLTAGE_V):
            raise refuse(f"y0_v = {_shown(self.y0_v)} must be a finite number of volts in [-{MAX_VOLTAGE_V:g}, "
                         f"{MAX_VOLTAGE_V:g}]")
        try:
            mean = tuple(float(c) for c in self.multiply_mean)
            covariance = np.array(self.multiply_covariance, dtype=float)
        except (TypeError, ValueError) as exc:
            raise refuse(f"multiply_mean and multiply_covariance must be numbers ({exc})") from None
        n = len(mean)
        if not 1 <= n <= 10 or not all(math.isfinite(c) for c in mean):
            raise refuse(f"multiply_mean must hold 1 to 10 finite coefficients (A per V^i); got {self.multiply_mean!r}")
        if covariance.shape != (n, n) or not np.all(np.isfinite(covariance)):
            raise refuse(f"multiply_covariance must be a finite ({n}, {n}) matrix (one row per coefficient of "
                         f"multiply_mean); got shape {covariance.shape}")
        size = max(float(np.abs(covariance).max()), 1e-300)
        if np.abs(covariance - covariance.T).max() > 1e-9 * size:
            raise refuse("multiply_covariance must be symmetric")
        if np.linalg.eigvalsh(covariance).min() < -1e-9 * size:
            raise refuse("multiply_covariance must be positive semi-definite (a covariance has no negative variance)")
        sigmas = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        for what, values in (("multiply_mean", mean), ("the sigma (sqrt of multiply_covariance's diagonal) of",
                                                       sigmas)):
            worst = int(np.argmax(np.abs(values)))
            if abs(values[worst]) > MAX_COEFFICIENT:
                raise refuse(f"{what} coefficient {worst} = {values[worst]:g} A/V^{worst} is implausible: a "
                             f"read-current coefficient must lie in [-{MAX_COEFFICIENT:g}, {MAX_COEFFICIENT:g}] A/V^i "
                             "(real cells: ~1e-5; a unit slip?)")
        for name, high in (("retention_ln_sigma", MAX_LN_SIGMA), ("offset_sigma_c", MAX_CHARGE_C),
                           ("read_noise_c", MAX_CHARGE_C)):
            value = getattr(self, name)
            if not (_finite_number(value) and 0 <= value <= high):
                raise refuse(f"{name} = {_shown(value)} must be a finite sigma in [0, {high:g}]")
        if isinstance(self.cells, bool) or not isinstance(self.cells, (int, np.integer)) or self.cells < 1:
            raise refuse(f"cells = {self.cells!r} must be a positive integer (the Monte Carlo cells behind it)")
        if not isinstance(self.source, str):
            raise refuse(f"source must be a string; got {type(self.source).__name__}")
        covariance.setflags(write=False)
        for name, value in (("y0_v", float(self.y0_v)), ("multiply_mean", mean), ("multiply_covariance", covariance),
                            ("cells", int(self.cells))):
            object.__setattr__(self, name, value)
        for name in ("retention_ln_sigma", "offset_sigma_c", "read_noise_c"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Variation):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) if n == "multiply_covariance"
                   else getattr(self, n) == getattr(other, n) for n in self.__dataclass_fields__)

    __hash__ = None

    def recentred(self, y0_v: float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance) of the coefficients of the same polynomials written in (stored_v - y0_v)."""
        n = len(self.multiply_mean)
        shift = y0_v - self.y0_v  # stored - self.y0 = y' + shift with y' = stored - y0_v
        change = np.zeros((n, n))  # new coefficient j = sum_i c_i binom(i, j) shift^(i - j)
        for i in range(n):
            for j in range(i + 1):
                change[j, i] = math.comb(i, j) * shift ** (i - j)
        return change @ np.asarray(self.multiply_mean), change @ self.multiply_covariance @ change.T

    def write(self, parent: h5py.Group) -> None:
        """Store as the group `variation` of `parent` (attributes and two datasets)."""
        group = parent.create_group(GROUP)
        group.attrs.update({name: getattr(self, name) for name in ATTRIBUTES})
        group.create_dataset("multiply_mean", data=np.asarray(self.multiply_mean, dtype=float))
        group.create_dataset("multiply_covariance", data=self.multiply_covariance)

    @classmethod
    def read(cls, group, where: str) -> "Variation":
        """Read the group written by `write`; anything missing or malformed raises SurrogateError naming it."""
        if not isinstance(group, h5py.Group):
            raise SurrogateError(f"{where}: {GROUP!r} must be a group (the variation component)")
        try:
            values = {name: group.attrs[name] for name in ATTRIBUTES}
            mean, covariance = group["multiply_mean"][()], group["multiply_covariance"][()]
        except KeyError as exc:
            raise SurrogateError(f"{where}: the variation group lacks {exc}") from None
        source = values.pop("source")
        values["source"] = source.decode() if isinstance(source, bytes) else str(source)
        try:
            return cls(multiply_mean=tuple(np.atleast_1d(mean)), multiply_covariance=covariance, **values)
        except SurrogateError as exc:
            raise SurrogateError(f"{where}: {exc}") from None


def _shown(value) -> str:
    """A number as the file holds it (1000.0, not np.float64(1000.0)); anything else as its repr."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class LayerVariation:
    """A `Variation` in the attention layer's normalised units (see `cellmodel`): the multiply coefficients'
    covariance in multiply_k units (charge / q_sat per full pulse) about the cell's y0, the offset and read noise
    over q_sat, and the retention spread as the sigma of a per-cell factor on the decay exponent."""

    multiply_factor: np.ndarray  # (n, n): coefficient deviations = factor @ standard normals
    retention_ln_sigma: float
    retention_beta: float  # d ln(-ln d) / d ln age at tau_1e (1 for exponential decay): exponent factor exp(beta sigma z)
    offset_sigma: float  # over q_sat
    read_noise: float  # over q_sat, one cell, one full pulse
    source: str

    @classmethod
    def from_variation(cls, variation: Variation, y0_v: float, per_q_sat: float, retention_beta: float,
                       q_sat_c: float) -> "LayerVariation":
        _, covariance = variation.recentred(y0_v)
        values, vectors = np.linalg.eigh(covariance * per_q_sat ** 2)
        factor = vectors * np.sqrt(np.clip(values, 0.0, None))
        return cls(factor, variation.retention_ln_sigma, float(retention_beta), variation.offset_sigma_c / q_sat_c,
                   variation.read_noise_c / q_sat_c, variation.source)

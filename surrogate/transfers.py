"""The element-wise hardware transfers of gain-cell attention: the converters' levels (`Quantization`) and
the clamp, quantize and fitted-polynomial transfer of q, k and v (`Transfer`, `transfers`), applied with only
the input saved for the backward pass (`ElementwiseTransfer`; `functional.hardware_inputs` picks it or the
fused Triton form). With the aged-voltage decay (`cellmodel.AgedExpansion`) k and v go through the expansion's
tabulated terms instead (`Tabulated`, `TabulatedTransfer`): one output per term, stacked in front."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gaincell.compact import quantize, quantize_readout
from gaincell.errors import ConfigError

from .cellmodel import AgedExpansion, CellModel


def polyval(coefficients: tuple[float, ...], y: torch.Tensor) -> torch.Tensor:
    """Horner evaluation of sum c_i y^i on a tensor (differentiable): the multiply's torch form."""
    result = torch.full_like(y, coefficients[-1])
    for c in coefficients[-2::-1]:
        result = result * y + c
    return result


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """`quantized` in the forward pass, the gradient of x in the backward pass."""
    return x + (quantized - x).detach()


def quantize_ste(x: torch.Tensor, levels: int, low: float, high: float) -> torch.Tensor:
    """`quantize` in the forward pass; the gradient passes straight through."""
    return straight_through(x, quantize(x, levels, low, high))


def level_voltages(levels: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    """The `levels` values `compact.quantize` rounds to over [low, high], computed as it computes them (its step)."""
    return torch.arange(levels, dtype=like.dtype, device=like.device) * ((high - low) / (levels - 1)) + low


def level_index(x: torch.Tensor, levels: int, low: float, high: float) -> torch.Tensor:
    """The index 0 .. levels - 1 of each quantized value x (one of `level_voltages`)."""
    return ((x - low) / ((high - low) / (levels - 1))).round().long()


@dataclass(frozen=True)
class Quantization:
    """Levels of the hardware's converters (the paper's: 16 pulse widths, 8 stored levels, 32 readout); 0 makes
    one converter exact (an ablation)."""

    q_levels: int = 16
    kv_levels: int = 8
    out_levels: int = 32

    def __post_init__(self):
        for name in ("q_levels", "kv_levels", "out_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
                raise ConfigError(name, f"must be an integer >= 2 (or 0: exact); got {value!r}")
        if self.out_levels % 2 or self.out_levels == 2:
            raise ConfigError("out_levels", f"is sign + counter levels: even and >= 4 (or 0: exact); got "
                                            f"{self.out_levels}")

    @property
    def out_steps(self) -> int:
        """Sign-magnitude readout: magnitudes 0, 1, ..., out_levels/2 - 1 (over its full scale); 0 when exact."""
        return max(0, self.out_levels // 2 - 1)


@dataclass(frozen=True)
class Transfer:
    """An element-wise hardware transfer: clamp to [low, high], optionally quantize to `levels` (straight-
    through), then scale * sum c_i (x - y0)^i. `slope` is the derivative polynomial used in the backward pass
    (the exact one, or the least-squares line's slope for the paper's linear-gradient option)."""

    low: float
    high: float
    levels: int  # 0: no quantization
    coefficients: tuple[float, ...]
    slope: tuple[float, ...]
    y0: float = 0.0
    scale: float = 1.0

    def clamped(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(self.low, self.high)
        return quantize(x, self.levels, self.low, self.high) if self.levels else x


class ElementwiseTransfer(torch.autograd.Function):
    """A `Transfer` with only its input saved (the intermediates of clamp, rounding and Horner are recomputed)."""

    @staticmethod
    def forward(ctx, x, transfer: Transfer):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        return polyval(transfer.coefficients, transfer.clamped(x) - transfer.y0).mul_(transfer.scale)

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        inside = (x >= transfer.low) & (x <= transfer.high)
        slope = polyval(transfer.slope, transfer.clamped(x) - transfer.y0)
        return grad * slope.mul_(transfer.scale).mul_(inside), None


@dataclass(frozen=True, eq=False)
class Tabulated:
    """A transfer tabulated on an even grid over [low, high] = the stored range: clamp, optionally quantize
    (straight-through), then interpolate linearly in each of `values` (terms, G) x scale; the backward pass
    takes the slope of `slopes` (the same tables, or the least-squares line's for the linear-gradient option)."""

    low: float
    high: float
    levels: int
    values: np.ndarray
    slopes: np.ndarray
    scale: float = 1.0

    def clamped(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(self.low, self.high)
        return quantize(x, self.levels, self.low, self.high) if self.levels else x

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid segment index and position 0..1 inside it of the clamped (quantized) x."""
        position = (self.clamped(x) - self.low) * ((self.values.shape[1] - 1) / (self.high - self.low))
        index = position.floor().clamp_(0, self.values.shape[1] - 2)
        return index.long(), position - index

    def table(self, values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values * self.scale, dtype=like.dtype, device=like.device)


class TabulatedTransfer(torch.autograd.Function):
    """A `Tabulated` transfer: x (...) -> (terms, ...), with only x saved."""

    @staticmethod
    def forward(ctx, x, transfer: Tabulated):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        index, weight = transfer.segment(x)
        table = transfer.table(transfer.values, x)
        low, high = table[:, index], table[:, index + 1]
        return low + (high - low) * weight

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        index, _ = transfer.segment(x)
        table = transfer.table(transfer.slopes, x) * ((transfer.slopes.shape[1] - 1) / (transfer.high - transfer.low))
        slope = table[:, index + 1] - table[:, index]
        inside = (x >= transfer.low) & (x <= transfer.high)
        return (grad * slope).sum(0) * inside, None


def readout_sum(readouts, full_scale: float, out_steps: int) -> torch.Tensor:
    """The digital sum of per-tile signed readouts, each clipped to +-full_scale and quantized to 1 / out_steps
    (0: exact); all tiles at once."""
    stacked = torch.stack(list(readouts)).clamp_(-full_scale, full_scale)
    return (quantize_readout(stacked, out_steps) if out_steps else stacked).sum(0)


def _derivative(coefficients: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(i * c for i, c in enumerate(coefficients) if i) or (0.0,)


def transfers(cell: CellModel, quantize: Quantization | None, linear: bool, linear_backward: bool,
              aged: AgedExpansion | None = None):
    """The element-wise transfers of q (pulse fraction), k (-> f(k)) and v (-> g(v)) for these options; with
    `aged`, k and v go to the expansion's terms (`Tabulated`)."""
    low, high = cell.stored_range_v
    q_levels, kv_levels = (quantize.q_levels, quantize.kv_levels) if quantize else (0, 0)
    query = Transfer(0.0, 1.0, q_levels, (0.0, 1.0), (1.0,))
    if aged is not None:
        values = aged.line_values if linear else aged.values
        slopes = aged.line_values if linear or linear_backward else aged.values
        return (query, Tabulated(low, high, kv_levels, values, slopes),
                Tabulated(low, high, kv_levels, values, slopes, cell.v_over_k))
    curve = cell.polynomial(linear)
    slope = _derivative(cell.line if linear_backward else curve)
    return (query, Transfer(low, high, kv_levels, curve, slope, cell.y0_v),
            Transfer(low, high, kv_levels, curve, slope, cell.y0_v, cell.v_over_k))

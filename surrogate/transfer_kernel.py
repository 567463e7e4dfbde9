"""The element-wise hardware transfers (`transfers.Transfer`: clamp, levels, the fitted polynomial) as one Triton
kernel each way, for the CUDA path of `functional.hardware_inputs` (the torch form runs ~10 element-wise ops)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernel import ROUNDING


@triton.jit
def _transfer_kernel(x_ptr, grad_ptr, out_ptr, coefficients, elements, low, high, step, y0, scale,
                     DEGREE: tl.constexpr, LEVELS: tl.constexpr, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """One element-wise hardware transfer (`transfers.Transfer`) in float32: scale * sum_i c_i (t - y0)^i
    with t = x clamped to [low, high] (rounded to LEVELS levels when LEVELS > 0); BACKWARD: the incoming
    gradient times that polynomial (the slope's coefficients), zero where x is outside [low, high]."""
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside_array = index < elements
    x = tl.load(x_ptr + index, mask=inside_array, other=0.0).to(tl.float32)
    t = tl.minimum(tl.maximum(x, low), high)
    if LEVELS > 0:
        t = (((t - low) / step + ROUNDING) - ROUNDING) * step + low
    t = t - y0
    result = tl.full((BLOCK,), 0.0, tl.float32) + tl.load(coefficients + DEGREE - 1)
    for i in tl.static_range(DEGREE - 2, -1, -1):
        result = result * t + tl.load(coefficients + i)
    result = result * scale
    if BACKWARD:
        grad = tl.load(grad_ptr + index, mask=inside_array, other=0.0).to(tl.float32)
        result = tl.where((x >= low) & (x <= high), grad * result, 0.0)
    tl.store(out_ptr + index, result.to(out_ptr.dtype.element_ty), mask=inside_array)


_COEFFICIENTS: dict[tuple, torch.Tensor] = {}


def _transfer(x: torch.Tensor, transfer, coefficients: tuple[float, ...], grad: torch.Tensor | None = None):
    x = x.contiguous()
    out = torch.empty_like(x)
    key = (coefficients, x.device)
    if key not in _COEFFICIENTS:  # one small copy to the device per polynomial, not one per call
        _COEFFICIENTS[key] = torch.tensor(coefficients, dtype=torch.float32, device=x.device)
    table = _COEFFICIENTS[key]
    step = (transfer.high - transfer.low) / (transfer.levels - 1) if transfer.levels else 1.0
    block = 1024
    _transfer_kernel[(triton.cdiv(x.numel(), block),)](
        x, x if grad is None else grad.contiguous(), out, table, x.numel(), float(transfer.low),
        float(transfer.high), float(step), float(transfer.y0), float(transfer.scale), DEGREE=len(coefficients),
        LEVELS=transfer.levels, BACKWARD=grad is not None, BLOCK=block, num_warps=4)
    return out


class FusedTransfer(torch.autograd.Function):
    """`transfers.Transfer` applied by one kernel each way (the torch form runs ~10 element-wise ops)."""

    @staticmethod
    def forward(ctx, x, transfer):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        return _transfer(x, transfer, transfer.coefficients)

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        return _transfer(x, transfer, transfer.slope, grad), None

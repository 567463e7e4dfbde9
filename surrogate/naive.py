"""A readable reference implementation of gain-cell attention that materialises the full (B, H, T, T) score
matrix, as the paper's code does. Slow and memory hungry; used to check the tiled fast path and as the
baseline of benchmarks/bench_attention.py. Same arguments and semantics as `gaincell_attention`."""
from __future__ import annotations

import torch

from gaincell.compact import quantize_readout

from .cellmodel import CellModel
from .functional import decay_table_for, expand_kv, prepare, ring_size
from .transfers import Quantization, polyval, quantize_ste, straight_through


def naive_gaincell_attention(q, k, v, cell, *, decay=None, tile: int = 64, window: int | None = None,
                             quantize: bool | Quantization = False, linear: bool = False,
                             linear_backward: bool = False) -> torch.Tensor:
    """Gain-cell attention by plain autograd on full score matrices (see gaincell_attention)."""
    cell, quantization = prepare(q, k, v, cell, tile, window, quantize)
    low, high = cell.stored_range_v
    qh, k, v = q.clamp(0.0, 1.0), k.clamp(low, high), v.clamp(low, high)
    if quantization is not None:
        qh = quantize_ste(qh, quantization.q_levels, 0.0, 1.0)
        k = quantize_ste(k, quantization.kv_levels, low, high)
        v = quantize_ste(v, quantization.kv_levels, low, high)
    fk = multiply(k, cell, linear, linear_backward)
    fv = multiply(v, cell, linear, linear_backward) * cell.v_over_k
    heads, steps = q.shape[1], q.shape[2]
    fk, fv = expand_kv(fk, heads), expand_kv(fv, heads)
    _, ring = ring_size(steps, tile, window)
    positions = torch.arange(steps, device=q.device)
    age = positions[:, None] - positions[None, :]  # (T queries, T keys)
    table = decay_table_for(decay, ring, cell, q.dtype, q.device)
    d = torch.where((age >= 0) & (age < ring), table[age.clamp(0, ring - 1)], table.new_zeros(()))
    scores = torch.matmul(qh, fk.transpose(-1, -2)) * d  # (B, H, T, T)
    pulses = torch.clamp(scores - cell.offset, 0.0, 1.0) * d
    slot_tile = (positions // tile) % (ring // tile)  # the array tile each key is stored in
    out = torch.zeros_like(qh)
    for j in range(ring // tile):
        columns = torch.nonzero(slot_tile == j).flatten()
        if columns.numel() == 0:
            continue
        readout = torch.clamp(torch.matmul(pulses[..., columns], fv[:, :, columns]), -1.0, 1.0)
        if quantization is not None:
            readout = straight_through(readout, quantize_readout(readout, quantization.out_steps))
        out = out + readout
    return out


def multiply(stored: torch.Tensor, cell: CellModel, linear: bool = False, linear_backward: bool = False):
    """Charge per full pulse / q_sat of cells holding `stored` volts; with `linear_backward` the forward
    value is the fitted curve and the gradient that of its least-squares line (the paper's option)."""
    y = stored - cell.y0_v
    if linear:
        return polyval(cell.line, y)
    value = polyval(cell.cubic, y)
    if linear_backward:
        line = polyval(cell.line, y)
        return line + (value - line).detach()
    return value

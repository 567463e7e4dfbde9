"""A readable reference implementation of gain-cell attention that materialises the full (B, H, T, T) score
matrix, as the paper's code does. Slow and memory hungry; used to check the tiled fast path and as the
baseline of benchmarks/bench_attention.py. Same arguments and semantics as `gaincell_attention`."""
from __future__ import annotations

import torch

from gaincell.compact import quantize_readout

from .cellmodel import CellModel
from .decay import decay_terms
from .functional import expand_kv, peak_reference, prepare, ring_size
from .options import C2P
from .transfers import Quantization, TabulatedTransfer, polyval, quantize_ste, straight_through, transfers


def naive_gaincell_attention(q, k, v, cell, *, decay=None, tile: int = 64, window: int | None = None,
                             quantize: bool | Quantization = False, linear: bool = False,
                             linear_backward: bool = False, c2p: C2P = C2P()) -> torch.Tensor:
    """Gain-cell attention by plain autograd on full score matrices (see gaincell_attention; `c2p`: the heads' C2P
    thresholds and gains and the reference, as in `functional.tiled_attention`)."""
    phi, fv, d, quantization, ring = _stage1(q, k, v, cell, decay, tile, window, quantize, linear, linear_backward,
                                             c2p, q.shape[2])
    positions = torch.arange(q.shape[2], device=q.device)
    slot_tile = (positions // tile) % (ring // tile)  # the array tile each key is stored in
    out = torch.zeros_like(q)
    for j in range(ring // tile):
        columns = torch.nonzero(slot_tile == j).flatten()
        if columns.numel() == 0:
            continue
        charge = sum(torch.matmul(phi[..., columns] * d_r[:, columns], g[:, :, columns]) for g, d_r in zip(fv, d))
        readout = torch.clamp(charge, -1.0, 1.0)
        if quantization is not None and quantization.out_steps:
            readout = straight_through(readout, quantize_readout(readout, quantization.out_steps))
        out = out + readout
    return out


def naive_pulses(q, k, v, cell, *, decay=None, tile: int = 64, window: int | None = None,
                 quantize: bool | Quantization = False, linear: bool = False, c2p: C2P = C2P(),
                 queries: int | None = None) -> torch.Tensor:
    """The C2P outputs phi (B, H, queries, T) of the last `queries` queries (all by default) against every key,
    by plain autograd (zero outside each query's causal window): where each query's weight goes."""
    phi, _, d, _, _ = _stage1(q, k, v, cell, decay, tile, window, quantize, linear, False, c2p,
                              q.shape[2] if queries is None else queries)
    return phi * (d != 0).any(0)  # a key outside the window gives no pulse (its cell is not read)


def _stage1(q, k, v, cell, decay, tile, window, quantize, linear, linear_backward, c2p: C2P, queries: int):
    """phi of the last `queries` queries through the C2P converters `c2p` (threshold, gain, reference, full scale),
    g(v) (terms, B, H, T, D), their decay x window tables (terms, queries, T), the quantization and the ring size."""
    cell, quantization = prepare(q, k, v, cell, tile, window, quantize)
    low, high = cell.stored_range_v
    stored_k, stored_v = k, v
    qh, k, v = q.clamp(0.0, 1.0), k.clamp(low, high), v.clamp(low, high)
    if quantization is not None and quantization.q_levels:
        qh = quantize_ste(qh, quantization.q_levels, 0.0, 1.0)
    if quantization is not None and quantization.kv_levels:
        k = quantize_ste(k, quantization.kv_levels, low, high)
        v = quantize_ste(v, quantization.kv_levels, low, high)
    heads, steps = q.shape[1], q.shape[2]
    _, ring = ring_size(steps, tile, window)
    terms = decay_terms(decay, ring, cell, q.dtype, q.device, window)
    if terms.aged is None:  # one term: the fitted curve, times the decay table
        fk = multiply(k, cell, linear, linear_backward)[None]
        fv = multiply(v, cell, linear, linear_backward)[None] * cell.v_over_k
    else:  # the aged-voltage decay's terms: tables of the stored voltage (which they clamp and quantize)
        _, k_terms, v_terms = transfers(cell, quantization, linear, linear_backward, terms.aged)
        fk, fv = TabulatedTransfer.apply(stored_k, k_terms), TabulatedTransfer.apply(stored_v, v_terms)
    fk, fv = expand_kv(fk, heads), expand_kv(fv, heads)  # (terms, B, H, T, D)
    positions = torch.arange(steps, device=q.device)
    age = positions[steps - queries:, None] - positions[None, :]  # (queries, T keys)
    tables = terms.tables
    d = torch.where((age >= 0) & (age < ring), tables[:, age.clamp(0, ring - 1)], tables.new_zeros(()))
    qh = c2p.amplified(qh)
    scores = sum(torch.matmul(qh[:, :, steps - queries:], f.transpose(-1, -2)) * d_r for f, d_r in zip(fk, d))
    shift = 0.0 if c2p.threshold is None else c2p.threshold.view(1, -1, 1, 1)  # each head's C2P threshold
    reference = peak_reference(scores, (d != 0).any(0)) if c2p.peak else cell.offset
    return torch.clamp(scores - reference - shift, 0.0, c2p.full_scale), fv, d, quantization, ring


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

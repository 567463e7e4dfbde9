"""A fused Triton kernel for one decode step (`decoding.decode_step`): one query token per head against its ring.

One program per query head streams the filled tiles of its kv head's ring in slot order (tile j holds slots
j * TILE ..; each is one physical tile): every term r's f_r(k) and g_r(v) rows and the decay d_r of each slot's
age, looked up once per step on the host (zero at empty slots). The score of a slot is s = sum_r (q . f_r(k)) d_r;
with the peak reference a first pass finds each query's largest score over the slots it reads; the C2P pulse is
phi = clamp(s - reference - threshold, 0, 1) at those slots; each tile's readout sum_r (phi d_r) . g_r(v) is
clamped to [-1, 1], quantized and summed over the tiles. The torch path's arithmetic, with the terms summed per
score as in the parallel pass (the torch decode sums them per array first): round-off may move a readout that
sits on a quantizer boundary by one level. Forward only: decoding needs no gradient.

The torch path stays the reference and serves what this kernel does not: per-cell variation and read noise,
unsaturated converters (`functional.use_triton` says where the kernel runs).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernel import _add, _readout


@triton.jit
def _largest(a, b):
    return tl.maximum(a, b)


@triton.jit
def _tile_scores(q, fk_base, decay_ptr, keys, columns, slots, dim, term_stride, TERMS: tl.constexpr):
    """s = sum_r (q . f_r(k)) d_r of the keys `keys` (TILE,), float32."""
    inside = columns[None, :] < dim
    scores = tl.full(keys.shape, 0.0, tl.float32)
    for r in range(TERMS):
        fk = tl.load(fk_base + r * term_stride + keys[:, None] * dim + columns[None, :], mask=inside, other=0.0)
        scores += tl.reduce(fk.to(tl.float32) * q[None, :], 1, _add) * tl.load(decay_ptr + r * slots + keys)
    return scores


@triton.jit
def _decode_kernel(q_ptr, fk_ptr, fv_ptr, decay_ptr, valid_ptr, threshold_ptr, out_ptr, group, slots, dim, dim_v,
                   tiles, offset, term_stride_k, term_stride_v, TERMS: tl.constexpr, TILE: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, OUT_STEPS: tl.constexpr, PEAK: tl.constexpr):
    """out[query] of the query head (program 1) of kv row `row` (program 0): q (rows x group, dim), f(k)
    (terms, rows, slots, dim), g(v) (terms, rows, slots, dim_v), decay (terms, slots), valid (slots,) int8,
    threshold (rows x group,)."""
    row = tl.program_id(0).to(tl.int64)
    query = row * group + tl.program_id(1)
    columns, columns_v = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + query * dim + columns, mask=columns < dim, other=0.0).to(tl.float32)
    fk_base, fv_base = fk_ptr + row * slots * dim, fv_ptr + row * slots * dim_v
    reference = offset
    if PEAK:
        peak = tl.full((), float("-inf"), tl.float32)
        for j in range(tiles):
            keys = j * TILE + tl.arange(0, TILE)
            scores = _tile_scores(q, fk_base, decay_ptr, keys, columns, slots, dim, term_stride_k, TERMS)
            peak = tl.maximum(peak, tl.reduce(tl.where(tl.load(valid_ptr + keys) != 0, scores, float("-inf")), 0,
                                              _largest))
        reference = tl.where(peak > float("-inf"), peak - 1.0, 0.0)
    shift = reference + tl.load(threshold_ptr + query).to(tl.float32)
    out = tl.full((BLOCK_DV,), 0.0, tl.float32)
    for j in range(tiles):
        keys = j * TILE + tl.arange(0, TILE)
        scores = _tile_scores(q, fk_base, decay_ptr, keys, columns, slots, dim, term_stride_k, TERMS)
        phi = tl.where(tl.load(valid_ptr + keys) != 0, tl.minimum(tl.maximum(scores - shift, 0.0), 1.0), 0.0)
        readout = tl.full((BLOCK_DV,), 0.0, tl.float32)
        for r in range(TERMS):
            fv = tl.load(fv_base + r * term_stride_v + keys[:, None] * dim_v + columns_v[None, :],
                         mask=columns_v[None, :] < dim_v, other=0.0)
            weights = phi * tl.load(decay_ptr + r * slots + keys)
            readout += tl.reduce(weights[:, None] * fv.to(tl.float32), 0, _add)
        out += _readout(readout, OUT_STEPS)
    tl.store(out_ptr + query * dim_v + columns_v, out.to(out_ptr.dtype.element_ty), mask=columns_v < dim_v)


def fused_decode_step(q, fk, fv, decay, valid, threshold, *, tiles: int, tile: int, offset: float, out_steps: int,
                      peak: bool) -> torch.Tensor:
    """One query per head against its ring's first `tiles` tiles: q (rows, group, D) hardware queries (gains
    applied), f(k) (terms, rows, slots, D), g(v) (terms, rows, slots, D_v); decay (terms, slots) each slot's d_r
    (zero where empty), valid (slots,) bool, threshold (rows x group,) each query's C2P threshold; `offset` the
    cell's C2P offset (the reference unless `peak`). Returns (rows, group, D_v)."""
    rows, group, dim = q.shape
    terms, _, slots, dim_v = fv.shape
    q, fk, fv = q.contiguous(), fk.contiguous(), fv.contiguous()  # a copy only if not already (the ring's are)
    out = q.new_empty(rows, group, dim_v)
    _decode_kernel[(rows, group)](
        q, fk, fv, decay.float().contiguous(), valid.to(torch.int8).contiguous(), threshold.float().contiguous(), out,
        group, slots, dim, dim_v, tiles, float(offset), fk[0].numel(), fv[0].numel(), TERMS=terms, TILE=tile,
        BLOCK_D=max(16, triton.next_power_of_2(dim)), BLOCK_DV=max(16, triton.next_power_of_2(dim_v)),
        OUT_STEPS=out_steps, PEAK=peak)
    return out

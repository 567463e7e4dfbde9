"""The compiled loops (numba) of the CPU parallel pass (`compiled_pass.py`): scores to pulses, the per-tile readouts
and their clip bits, the backward pass's readout and score gradients, and the converters' transfers.

numba is imported with this module; the functions compile on first use and numba caches them on disk.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from .transfers import Tabulated, Transfer

# The forward kernels round as torch does, op for op (no fused multiply-adds, no reassociation): the quantizers
# downstream see the same values. The gradients' sums may reassociate and fuse to vectorize.
parallel = numba.njit(cache=True, nogil=True, parallel=True)


@parallel
def scores_to_pulses(s, d, threshold, offset, peak, full_scale, tile, pulses, top):
    """Scores s (terms, R, C, K) to pulses (key tiles, R, C, terms x tile): x = sum_r s_r d_r less the reference
    (the offset, or the query's peak over its keys (d_0 != 0) less one) and the row's threshold, clamped to
    [0, full_scale] and times each d_r. Leaves x in s[0] and, with the peak reference, each query's peak key in
    top (R, C)."""
    terms, rows, queries, keys = s.shape
    zero = np.float32(0.0)
    for rc in numba.prange(rows * queries):
        row, c = rc // queries, rc % queries
        x, d0 = s[0, row, c], d[0, c]
        for key in range(keys):
            x[key] = x[key] * d0[key]
        for r in range(1, terms):
            sr, dr = s[r, row, c], d[r, c]
            for key in range(keys):
                x[key] = x[key] + sr[key] * dr[key]
        reference = offset
        if peak:
            best, arg = -np.inf, 0
            for key in range(keys):
                if d0[key] != 0 and x[key] > best:
                    best, arg = x[key], key
            top[row, c] = arg
            reference = np.float32(best) - np.float32(1.0) if best > -np.inf else zero
        shift = threshold[row]
        for key in range(keys):
            x[key] = (x[key] - reference) - shift
        for i in range(keys // tile):
            xi = x[i * tile:(i + 1) * tile]
            for r in range(terms):
                out, dr = pulses[i, row, c, r * tile:(r + 1) * tile], d[r, c, i * tile:(i + 1) * tile]
                for t in range(tile):
                    out[t] = min(max(xi[t], zero), full_scale) * dr[t]


@parallel
def sum_readouts(parts, order, starts, full_scale, steps, out, inside):
    """out (R, C, columns) = the sum over physical tiles of each tile's readout, clipped to +-full_scale and
    quantized to 1 / steps (0: exact); parts (key tiles, R, C, columns; a physical tile's sum is left in its
    first key tile's), the key tiles of physical tile g being order[starts[g]:starts[g + 1]]. inside (R, C, tiles,
    bytes): bit j of each readout within +-full_scale (where its gradient passes)."""
    rows, queries, columns = out.shape
    scale = np.float32(steps)
    for rc in numba.prange(rows * queries):
        row, c = rc // queries, rc % queries
        total = out[row, c]
        total[:] = 0.0
        for g in range(len(starts) - 1):
            a = _tile_sum(parts, order, starts[g], starts[g + 1], row, c)
            bits = inside[row, c, g]
            bits[:] = 0
            for j in range(columns):
                if abs(a[j]) <= full_scale:
                    bits[j >> 3] |= np.uint8(1 << (j & 7))
                clipped = min(max(a[j], -full_scale), full_scale)
                total[j] = total[j] + (np.rint(clipped * scale) / scale if steps else clipped)


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_sum(parts, order, first, stop, row, c):
    """The readout of the physical tile whose key tiles are order[first:stop], summed into the first's row."""
    a = parts[order[first], row, c]
    for i in range(first + 1, stop):
        other = parts[order[i], row, c]
        for j in range(len(a)):
            a[j] = a[j] + other[j]
    return a


@parallel
def readout_gradients(order, starts, inside, grad_out, grads):
    """grads (key tiles, R, C, columns): the gradient of each key tile's readout, grad_out (R, C, columns) where
    its physical tile's readout was within full scale (`inside` of `sum_readouts`), else 0: the quantizer passes
    it straight through."""
    rows, queries, columns = grad_out.shape
    zero = np.float32(0.0)
    for rc in numba.prange(rows * queries):
        row, c = rc // queries, rc % queries
        gradient = grad_out[row, c]
        for g in range(len(starts) - 1):
            bits = inside[row, c, g]
            first = grads[order[starts[g]], row, c]
            for j in range(columns):
                first[j] = gradient[j] if bits[j >> 3] & (1 << (j & 7)) else zero
            for i in range(starts[g] + 1, starts[g + 1]):
                grads[order[i], row, c, :] = first


@numba.njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def score_gradients(grad_pulses, d, s, top, peak, full_scale, tile, grad_threshold):
    """The gradient of the scores from that of the pulses (key tiles, R, C, terms x tile, overwritten), in place
    of s (terms, R, C, K), whose s[0] holds x of `scores_to_pulses`: s_r = g d_r with g = sum_r grad_pulse_r d_r
    where x is within [0, full_scale], the peak key's less the query's sum (the reference follows it);
    grad_threshold (R, C): minus each query's sum."""
    terms, rows, queries, keys = s.shape
    zero = np.float32(0.0)
    for rc in numba.prange(rows * queries):
        row, c = rc // queries, rc % queries
        x = s[0, row, c]
        for i in range(keys // tile):
            g, xi = grad_pulses[i, row, c], x[i * tile:(i + 1) * tile]
            d0 = d[0, c, i * tile:(i + 1) * tile]
            for t in range(tile):
                g[t] = g[t] * d0[t]
            for r in range(1, terms):
                dr = d[r, c, i * tile:(i + 1) * tile]
                for t in range(tile):
                    g[t] = g[t] + g[r * tile + t] * dr[t]
            for t in range(tile):
                xi[t] = g[t] if xi[t] >= zero and xi[t] <= full_scale else zero
        total = zero
        for key in range(keys):
            total = total + x[key]
        grad_threshold[row, c] = -total
        if peak:
            x[top[row, c]] = x[top[row, c]] - total
        for r in range(terms - 1, 0, -1):
            sr, dr = s[r, row, c], d[r, c]
            for key in range(keys):
                sr[key] = x[key] * dr[key]
        d0 = d[0, c]
        for key in range(keys):
            x[key] = x[key] * d0[key]


@numba.njit(cache=True, nogil=True, inline="always")
def _polynomial(y, low, step, levels, coefficients, y0, scale):
    """scale * sum_i c_i (y - y0)^i (Horner) of y already clamped, rounded first to its levels (`step` apart)
    where levels > 0: `transfers.Transfer` and `polyval`, op for op."""
    if levels:
        y = np.rint((y - low) / step) * step + low
    y = y - y0
    value = coefficients[-1]
    for c in range(len(coefficients) - 2, -1, -1):
        value = value * y + coefficients[c]
    return value * scale


@parallel
def _transfer(x, low, high, step, levels, coefficients, y0, scale, grad, out):
    """out = the polynomial transfer (`_polynomial`) of x clamped to [low, high]; with a gradient `grad` (x's size;
    else empty), out = grad x that (of the slope's coefficients) where low <= x <= high, else 0. With levels,
    each level's value is computed once."""
    flat, result, incoming = x.ravel(), out.ravel(), grad.ravel()
    backward = incoming.size > 0
    table = np.empty(max(levels, 1), dtype=np.float32)
    for level in range(levels):
        table[level] = _polynomial(np.float32(level) * step + low, low, step, levels, coefficients, y0, scale)
    for i in numba.prange(flat.size):
        y = min(max(flat[i], low), high)
        value = table[np.int64(np.rint((y - low) / step))] if levels else _polynomial(
            y, low, step, levels, coefficients, y0, scale)
        if backward:
            value = incoming[i] * value if flat[i] >= low and flat[i] <= high else np.float32(0.0)
        result[i] = value


def run_transfer(x, transfer: Transfer, coefficients, grad: torch.Tensor | None, out: torch.Tensor | None = None):
    """`_transfer` of a float32 tensor into a new tensor or `out` (contiguous, x's shape; it may be `grad`)."""
    f32, x = np.float32, x.detach().contiguous()
    out = torch.empty_like(x) if out is None else out
    step = f32((transfer.high - transfer.low) / (transfer.levels - 1) if transfer.levels else 1.0)
    incoming = np.empty(0, np.float32) if grad is None else grad.detach().to(x.dtype).contiguous().numpy()
    _transfer(x.numpy(), f32(transfer.low), f32(transfer.high), step, transfer.levels,
              np.asarray(coefficients, dtype=np.float32), f32(transfer.y0), f32(transfer.scale), incoming, out.numpy())
    return out


@parallel
def _tabulated(x, low, high, step, levels, position_scale, table, grad, out):
    """`transfers.TabulatedTransfer` op for op: x clamped to [low, high] (rounded to its levels, `step` apart,
    where levels > 0), its segment of the even grid and its place in it, then out (terms, x's size) = each
    term's table interpolated there. With a gradient `grad` (terms, x's size; else empty) and `table` the slopes'
    (scaled to per volt), out (x's size) = sum_r grad_r x the segment's slope where low <= x <= high, else 0."""
    flat, result = x.ravel(), out.reshape(-1)
    backward = grad.size > 0
    incoming = grad.reshape(len(table), -1)
    top = np.float32(table.shape[1] - 2)
    for i in numba.prange(flat.size):
        y = min(max(flat[i], low), high)
        if levels:
            y = np.rint((y - low) / step) * step + low
        position = (y - low) * position_scale
        index = min(max(np.floor(position), np.float32(0.0)), top)
        weight, j = position - index, np.int64(index)
        if backward:
            total = np.float32(0.0)
            if flat[i] >= low and flat[i] <= high:
                for r in range(len(table)):
                    total = total + incoming[r, i] * (table[r, j + 1] - table[r, j])
            result[i] = total
        else:
            for r in range(len(table)):
                result[r * flat.size + i] = table[r, j] + (table[r, j + 1] - table[r, j]) * weight


def run_tabulated(x, transfer: Tabulated, table: torch.Tensor, grad: np.ndarray, out: torch.Tensor) -> None:
    f32, grid = np.float32, transfer.values.shape[1]
    step = f32((transfer.high - transfer.low) / (transfer.levels - 1) if transfer.levels else 1.0)
    _tabulated(x.numpy(), f32(transfer.low), f32(transfer.high), step, transfer.levels,
               f32((grid - 1) / (transfer.high - transfer.low)), table.contiguous().numpy(), grad, out.numpy())

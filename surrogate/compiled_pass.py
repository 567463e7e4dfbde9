"""The parallel (training) pass on the CPU with its element-wise work compiled (numba): the same arithmetic as
`functional._TiledAttention`, with the products left to torch's matrix multiplies.

The torch path spends most of its time outside the products: each chunk's scores go through the decay, the C2P
reference, the threshold, the clamp and the decay again as separate passes, and the per-tile products read and
write transposed copies. Here one query tile of R (batch x head) rows is one chunk; its scores S_r = q . f_r(k)
(one product per term) go through one compiled pass (`_pulses`) that writes the pulses straight in the layout the
per-tile products read, (key tile, R, queries, terms x tile); the per-tile readouts (one product per key tile
against g(v) kept as (key tile, rows, terms x tile, columns)) are clipped, quantized and summed in another
(`_readout_sum`). The backward pass recomputes a chunk the same way and folds the readout clip, the decay, the
clamp's mask, the threshold's gradient and the peak reference into two more compiled passes. The converters
round as torch does, op for op; the products sum in another order, so a readout on a quantizer boundary may move
by a level.

numba is imported with this module (`functional.compiled_pass_applies` says where it runs); the functions compile
on first use and numba caches them on disk.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from .geometry import chunk_decay
from .transfers import Tabulated, Transfer

# The forward kernels round as torch does, op for op (no fused multiply-adds, no reassociation): the quantizers
# downstream see the same values. The gradients' sums may reassociate and fuse to vectorize.
parallel = numba.njit(cache=True, nogil=True, parallel=True)
CACHED_ELEMENTS = 1 << 20  # the most score elements of one chunk


@parallel
def _pulses(s, d, threshold, offset, peak, full_scale, tile, pulses, top):
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
def _readout_sum(parts, order, starts, full_scale, steps, out, inside):
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
def _readout_gradients(order, starts, inside, grad_out, grads):
    """grads (key tiles, R, C, columns): the gradient of each key tile's readout, grad_out (R, C, columns) where
    its physical tile's readout was within full scale (`inside` of `_readout_sum`), else 0: the quantizer passes
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
def _score_gradients(grad_pulses, d, s, top, peak, full_scale, tile, grad_threshold):
    """The gradient of the scores from that of the pulses (key tiles, R, C, terms x tile, overwritten), in place
    of s (terms, R, C, K), whose s[0] holds x of `_pulses`: s_r = g d_r with g = sum_r grad_pulse_r d_r where x is
    within [0, full_scale], the peak key's less the query's sum (the reference follows it); grad_threshold (R, C):
    minus each query's sum."""
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


class CompiledTransfer(torch.autograd.Function):
    """`transfers.ElementwiseTransfer` on a float32 CPU tensor, each way one compiled pass."""

    @staticmethod
    def forward(ctx, x, transfer: Transfer):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        return _run_transfer(x, transfer, transfer.coefficients, None)

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        return _run_transfer(x, transfer, transfer.slope, grad), None


def _run_transfer(x, transfer: Transfer, coefficients, grad: torch.Tensor | None) -> torch.Tensor:
    f32, x = np.float32, x.detach().contiguous()
    out = torch.empty_like(x)
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


class CompiledTabulated(torch.autograd.Function):
    """`transfers.TabulatedTransfer` on a float32 CPU tensor: x (...) -> (terms, ...), each way one compiled pass."""

    @staticmethod
    def forward(ctx, x, transfer: Tabulated):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        x = x.detach().contiguous()
        out = x.new_empty(len(transfer.values), *x.shape)
        _run_tabulated(x, transfer, transfer.table(transfer.values, x), np.empty(0, np.float32), out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        x = x.detach().contiguous()
        slopes = transfer.table(transfer.slopes, x) * ((transfer.slopes.shape[1] - 1) / (transfer.high - transfer.low))
        out = torch.empty_like(x)
        _run_tabulated(x, transfer, slopes, grad.detach().to(x.dtype).contiguous().numpy(), out)
        return out, None


def _run_tabulated(x, transfer: Tabulated, table: torch.Tensor, grad: np.ndarray, out: torch.Tensor) -> None:
    f32, grid = np.float32, transfer.values.shape[1]
    step = f32((transfer.high - transfer.low) / (transfer.levels - 1) if transfer.levels else 1.0)
    _tabulated(x.numpy(), f32(transfer.low), f32(transfer.high), step, transfer.levels,
               f32((grid - 1) / (transfer.high - transfer.low)), table.contiguous().numpy(), grad, out.numpy())


def _tile_groups(physical: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The key tiles of each physical tile, in order of first appearance: (order, starts) of `_readout_sum`."""
    groups: dict[int, list[int]] = {}
    for i, tile in enumerate(physical):
        groups.setdefault(tile, []).append(i)
    order = np.array([i for members in groups.values() for i in members], dtype=np.int64)
    starts = np.cumsum([0] + [len(members) for members in groups.values()]).astype(np.int64)
    return order, starts


class _Chunks:
    """One query tile of `rows` (batch x head) rows at a time, with buffers sized for the largest chunk."""

    def __init__(self, geometry, terms: int, total_rows: int, columns: int, chunk_elements: int, like: torch.Tensor):
        tile, span = geometry.tile, min(geometry.padded, geometry.window + geometry.tile)
        self.geometry, self.terms, self.total_rows, self.columns = geometry, terms, total_rows, columns
        # a chunk's scores in L2-sized pieces (measured: 16 rows of 1024 keys beat 64 at B8 H12 T1024)
        self.rows = max(1, min(total_rows, min(chunk_elements, CACHED_ELEMENTS) // (terms * tile * span)))
        self.scores = like.new_empty(terms * self.rows * tile * span)
        self.pulses = like.new_empty(terms * self.rows * tile * span)
        self.parts = like.new_empty(self.rows * span * columns)
        self.top = np.empty((self.rows, tile), dtype=np.int64)
        # bit j of each physical tile's readout j within full scale, for every query: (BH, padded, tiles, bytes)
        self.tiles = min(geometry.n_slots_tiles, geometry.padded // tile)
        self.inside_shape = (total_rows, geometry.padded, self.tiles, -(-columns // 8))

    def __iter__(self):
        """(rows, queries, first and last key tile, the decay (terms, C, K), order, starts) of every chunk."""
        geometry, tile = self.geometry, self.geometry.tile
        for start in range(0, geometry.padded, tile):
            first, last = geometry.key_tiles(start, start + tile)
            order, starts = _tile_groups(geometry.physical_tiles(first, last))
            decay = chunk_decay(self.table, geometry, start, start + tile, first, last).contiguous()
            for row in range(0, self.total_rows, self.rows):
                yield (slice(row, min(row + self.rows, self.total_rows)), slice(start, start + tile), first, last,
                       decay, order, starts)

    def pulses_of(self, q, fk, threshold, rows: slice, queries: slice, first: int, last: int, decay):
        """The chunk's scores (terms, R, C, K; s[0] left holding x) and pulses (n, R, C, terms x tile)."""
        geometry, terms = self.geometry, self.terms
        tile, n, count = geometry.tile, last - first, rows.stop - rows.start
        s = self.scores[:terms * count * tile * n * tile].view(terms, count, tile, n * tile)
        for r in range(terms):
            torch.bmm(q[rows, queries], fk[r, rows, first * tile:last * tile].transpose(1, 2), out=s[r])
        pulses = self.pulses[:n * count * tile * terms * tile].view(n, count, tile, terms * tile)
        _pulses(s.numpy(), decay.numpy(), threshold[rows].numpy(), np.float32(geometry.offset), geometry.peak,
                np.float32(geometry.full_scale), tile, pulses.numpy(), self.top[:count])
        return s, pulses

    def parts_of(self, n: int, count: int) -> torch.Tensor:
        """The buffer of n key tiles' readouts (n, R, C, columns)."""
        return self.parts[:n * count * self.geometry.tile * self.columns].view(n, count, self.geometry.tile,
                                                                                self.columns)


class _Values:
    """g(v) (terms, BH, padded, columns) as the per-tile products read it: for key tile j and some rows, (R, terms x
    tile, columns) - a view of g(v) for one term, else of a copy laid out by key tile (and its gradient alike)."""

    def __init__(self, fv: torch.Tensor, tile: int):
        self.terms, self.tile, self.shape = len(fv), tile, fv.shape
        terms, rows, padded, columns = fv.shape
        self.cells = fv[0] if terms == 1 else fv.view(terms, rows, padded // tile, tile, columns).permute(
            2, 1, 0, 3, 4).reshape(padded // tile, rows, terms * tile, columns)

    def of(self, cells: torch.Tensor, j: int, rows: slice) -> torch.Tensor:
        """Key tile j's rows of `cells` (these values' layout)."""
        return cells[rows, j * self.tile:(j + 1) * self.tile] if self.terms == 1 else cells[j, rows]

    def as_input(self, cells: torch.Tensor) -> torch.Tensor:
        """`cells` (these values' layout) back as (terms, BH, padded, columns)."""
        if self.terms == 1:
            return cells[None]
        terms, rows, padded, columns = self.shape
        return cells.view(padded // self.tile, rows, terms, self.tile, columns).permute(2, 1, 0, 3, 4).reshape(
            self.shape)


class CompiledTiledAttention(torch.autograd.Function):
    """`functional._TiledAttention` on float32 CPU tensors, its element-wise work compiled: q (BH, padded, D); fk,
    fv (terms, BH, padded, D or columns); table (terms, ring); threshold (BH,). The forward pass keeps, besides
    the inputs, one bit per readout (whether it was within full scale) so that the backward pass recomputes the
    scores and pulses but not the readouts."""

    @staticmethod
    def forward(ctx, q, fk, fv, table, threshold, geometry, chunk_elements: int):
        q, fk, table, threshold = (x.detach().contiguous() for x in (q, fk, table, threshold))
        values = _Values(fv.detach().contiguous(), geometry.tile)
        chunks = _Chunks(geometry, len(fk), q.shape[0], fv.shape[-1], chunk_elements, q)
        chunks.table = table
        out = q.new_empty(*q.shape[:-1], fv.shape[-1])
        inside = np.empty(chunks.inside_shape, dtype=np.uint8)
        for rows, queries, first, last, decay, order, starts in chunks:
            pulses = chunks.pulses_of(q, fk, threshold, rows, queries, first, last, decay)[1]
            parts = chunks.parts_of(last - first, rows.stop - rows.start)
            for i in range(last - first):
                torch.bmm(pulses[i], values.of(values.cells, first + i, rows), out=parts[i])
            _readout_sum(parts.numpy(), order, starts, np.float32(geometry.full_scale), geometry.out_steps,
                         out[rows, queries].numpy(), inside[rows, queries])
        ctx.save_for_backward(q, fk, values.cells, table, threshold)
        ctx.geometry, ctx.chunk_elements, ctx.inside, ctx.values = geometry, chunk_elements, inside, values
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, fk, cells, table, threshold = ctx.saved_tensors
        geometry, terms, values = ctx.geometry, len(fk), ctx.values
        tile = geometry.tile
        chunks = _Chunks(geometry, terms, q.shape[0], cells.shape[-1], ctx.chunk_elements, q)
        chunks.table = table
        grad_out = grad_out.detach().contiguous()
        grad_q, grad_fk, grad_cells = torch.empty_like(q), torch.zeros_like(fk), torch.zeros_like(cells)
        grad_threshold = torch.zeros_like(threshold)
        grad_pulses = torch.empty_like(chunks.pulses)
        grad_tile = q.new_empty(chunks.rows, terms * tile, cells.shape[-1])
        per_query = np.empty((chunks.rows, tile), dtype=np.float32)
        for rows, queries, first, last, decay, order, starts in chunks:
            s, pulses = chunks.pulses_of(q, fk, threshold, rows, queries, first, last, decay)
            n, count, keys = last - first, rows.stop - rows.start, slice(first * tile, last * tile)
            grads = chunks.parts_of(n, count)  # of the readouts
            _readout_gradients(order, starts, ctx.inside[rows, queries], grad_out[rows, queries].numpy(),
                               grads.numpy())
            grad_pulses_chunk = grad_pulses[:pulses.numel()].view(pulses.shape)
            for i in range(n):
                torch.bmm(pulses[i].transpose(1, 2), grads[i], out=grad_tile[:count])
                values.of(grad_cells, first + i, rows).add_(grad_tile[:count])
                torch.bmm(grads[i], values.of(cells, first + i, rows).transpose(1, 2), out=grad_pulses_chunk[i])
            _score_gradients(grad_pulses_chunk.numpy(), decay.numpy(), s.numpy(), chunks.top[:count], geometry.peak,
                             np.float32(geometry.full_scale), tile, per_query[:count])
            grad_threshold[rows] += torch.from_numpy(per_query[:count].sum(1))
            grad_q[rows, queries] = torch.bmm(s[0], fk[0, rows, keys])
            for r in range(terms):
                if r:
                    grad_q[rows, queries] += torch.bmm(s[r], fk[r, rows, keys])
                grad_fk[r, rows, keys] += torch.bmm(s[r].transpose(1, 2), q[rows, queries])
        return grad_q, grad_fk, values.as_input(grad_cells), None, grad_threshold, None, None

"""The converters and the parallel (training) pass in one on the CPU, its element-wise work compiled (numba): the
arithmetic of `functional.hardware_inputs` then `functional._TiledAttention`, with the products left to torch's
matrix multiplies (`CompiledAttention`, run by `functional.converted_attention`).

The torch path spends most of its time outside the products: each chunk's scores go through the decay, the C2P
reference, the threshold, the clamp and the decay again as separate passes, and the per-tile products read and
write transposed copies. Here one query tile of R (batch x head) rows is one chunk; its scores S_r = q . f_r(k)
(one product per term) go through one compiled pass (`scores_to_pulses`) that writes the pulses straight in the
layout the per-tile products read, (key tile, R, queries, terms x tile); the per-tile readouts (one product per key
tile) are clipped, quantized and summed in another (`sum_readouts`), which keeps one bit per readout (within full
scale or not). The backward pass recomputes the converters' outputs (one compiled pass each) and a chunk's scores
and pulses, not its readouts, and folds the readout clip, the decay, the clamp's mask, the threshold's gradient and
the peak reference into two more compiled passes. Only the unconverted q, k, v are kept between the passes. The
converters round as torch does, op for op; the products sum in another order, so a readout on a quantizer
boundary may move by a level.

Its loops are in `compiled_kernels.py` (numba, imported with this module; `functional.compiled_pass_applies` says
where it runs). `CompiledTransfer` and `CompiledTabulated` are the converters alone, for `hardware_inputs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .compiled_kernels import (readout_gradients, run_tabulated, run_transfer, score_gradients, scores_to_pulses,
                               sum_readouts)
from .geometry import chunk_decay, expand_kv
from .transfers import Tabulated, Transfer

CACHED_ELEMENTS = 1 << 20  # the most score elements of one chunk


class CompiledTransfer(torch.autograd.Function):
    """`transfers.ElementwiseTransfer` on a float32 CPU tensor, each way one compiled pass."""

    @staticmethod
    def forward(ctx, x, transfer: Transfer):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        return run_transfer(x, transfer, transfer.coefficients, None)

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        return run_transfer(x, transfer, transfer.slope, grad), None


class CompiledTabulated(torch.autograd.Function):
    """`transfers.TabulatedTransfer` on a float32 CPU tensor: x (...) -> (terms, ...), each way one compiled pass."""

    @staticmethod
    def forward(ctx, x, transfer: Tabulated):
        ctx.save_for_backward(x)
        ctx.transfer = transfer
        return tabulated_values(x.detach().contiguous(), transfer)

    @staticmethod
    def backward(ctx, grad):
        (x,), transfer = ctx.saved_tensors, ctx.transfer
        return tabulated_gradient(x.detach().contiguous(), transfer, grad), None


def tabulated_values(x: torch.Tensor, transfer: Tabulated) -> torch.Tensor:
    """The terms (terms, ...) of x's tabulated transfer."""
    out = x.new_empty(len(transfer.values), *x.shape)
    run_tabulated(x, transfer, transfer.table(transfer.values, x), np.empty(0, np.float32), out)
    return out


def tabulated_gradient(x: torch.Tensor, transfer: Tabulated, grad: torch.Tensor,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of x from that of its tabulated transfer's terms (terms, ...), into a new tensor or `out` (x's
    shape, contiguous; it may be grad[0])."""
    slopes = transfer.table(transfer.slopes, x) * ((transfer.slopes.shape[1] - 1) / (transfer.high - transfer.low))
    out = torch.empty_like(x) if out is None else out
    run_tabulated(x, transfer, slopes, grad.detach().to(x.dtype).contiguous().numpy(), out)
    return out


def _tile_groups(physical: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The key tiles of each physical tile, in order of first appearance: (order, starts) of `sum_readouts`."""
    groups: dict[int, list[int]] = {}
    for i, tile in enumerate(physical):
        groups.setdefault(tile, []).append(i)
    order = np.array([i for members in groups.values() for i in members], dtype=np.int64)
    starts = np.cumsum([0] + [len(members) for members in groups.values()]).astype(np.int64)
    return order, starts


class _Chunks:
    """One query tile of `rows` (batch x head) rows at a time, with buffers sized for the largest chunk."""

    def __init__(self, geometry, terms: int, total_rows: int, columns: int, chunk_elements: int, like: torch.Tensor,
                 table: torch.Tensor):
        self.table = table
        tile, span = geometry.tile, min(geometry.padded, geometry.window + geometry.tile)
        self.geometry, self.terms, self.total_rows, self.columns = geometry, terms, total_rows, columns
        # a chunk's scores in L2-sized pieces (measured: 16 rows of 1024 keys beat 64 at B8 H12 T1024)
        self.rows = max(1, min(total_rows, min(chunk_elements, CACHED_ELEMENTS) // (terms * tile * span)))
        self.scores = like.new_empty(terms * self.rows * tile * span)
        self.pulses = like.new_empty(terms * self.rows * tile * span)
        self.parts = like.new_empty(self.rows * span * columns)
        self.top = np.empty((self.rows, tile), dtype=np.int64)
        # bit j of each physical tile's readout j within full scale, for every query: (BH, padded, tiles, bytes)
        tiles = min(geometry.n_slots_tiles, geometry.padded // tile)
        self.inside_shape = (total_rows, geometry.padded, tiles, -(-columns // 8))

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
        scores_to_pulses(s.numpy(), decay.numpy(), threshold[rows].numpy(), np.float32(geometry.offset),
                         geometry.peak, np.float32(geometry.full_scale), tile, pulses.numpy(), self.top[:count])
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


def pass_forward(q, fk, fv, table, threshold, geometry, chunk_elements: int):
    """The parallel pass on q (BH, padded, D), f(k), g(v) (terms, BH, padded, D or columns), table (terms, ring)
    and threshold (BH,): the output (BH, padded, columns) and one bit per readout (within full scale or not)."""
    values = _Values(fv, geometry.tile)
    chunks = _Chunks(geometry, len(fk), q.shape[0], fv.shape[-1], chunk_elements, q, table)
    out = q.new_empty(*q.shape[:-1], fv.shape[-1])
    inside = np.empty(chunks.inside_shape, dtype=np.uint8)
    for rows, queries, first, last, decay, order, starts in chunks:
        pulses = chunks.pulses_of(q, fk, threshold, rows, queries, first, last, decay)[1]
        parts = chunks.parts_of(last - first, rows.stop - rows.start)
        for i in range(last - first):
            torch.bmm(pulses[i], values.of(values.cells, first + i, rows), out=parts[i])
        sum_readouts(parts.numpy(), order, starts, np.float32(geometry.full_scale), geometry.out_steps,
                     out[rows, queries].numpy(), inside[rows, queries])
    return out, inside


def pass_backward(q, fk, fv, table, threshold, geometry, chunk_elements: int, inside, grad_out):
    """The gradients of `pass_forward`'s output (its `inside` bits given): of q, f(k), g(v) and the threshold."""
    terms, tile, values = len(fk), geometry.tile, _Values(fv, geometry.tile)
    chunks = _Chunks(geometry, terms, q.shape[0], fv.shape[-1], chunk_elements, q, table)
    grad_q, grad_fk, grad_cells = torch.empty_like(q), torch.zeros_like(fk), torch.zeros_like(values.cells)
    grad_threshold = torch.zeros_like(threshold)
    grad_pulses = torch.empty_like(chunks.pulses)
    grad_tile = q.new_empty(chunks.rows, terms * tile, fv.shape[-1])
    per_query = np.empty((chunks.rows, tile), dtype=np.float32)
    for rows, queries, first, last, decay, order, starts in chunks:
        s, pulses = chunks.pulses_of(q, fk, threshold, rows, queries, first, last, decay)
        n, count, keys = last - first, rows.stop - rows.start, slice(first * tile, last * tile)
        grads = chunks.parts_of(n, count)  # of the readouts
        readout_gradients(order, starts, inside[rows, queries], grad_out[rows, queries].numpy(), grads.numpy())
        grad_pulses_chunk = grad_pulses[:pulses.numel()].view(pulses.shape)
        for i in range(n):
            torch.bmm(pulses[i].transpose(1, 2), grads[i], out=grad_tile[:count])
            values.of(grad_cells, first + i, rows).add_(grad_tile[:count])
            torch.bmm(grads[i], values.of(values.cells, first + i, rows).transpose(1, 2), out=grad_pulses_chunk[i])
        score_gradients(grad_pulses_chunk.numpy(), decay.numpy(), s.numpy(), chunks.top[:count], geometry.peak,
                        np.float32(geometry.full_scale), tile, per_query[:count])
        grad_threshold[rows] += torch.from_numpy(per_query[:count].sum(1))
        grad_q[rows, queries] = torch.bmm(s[0], fk[0, rows, keys])
        for r in range(terms):
            if r:
                grad_q[rows, queries] += torch.bmm(s[r], fk[r, rows, keys])
            grad_fk[r, rows, keys] += torch.bmm(s[r].transpose(1, 2), q[rows, queries])
    return grad_q, grad_fk, values.as_input(grad_cells), grad_threshold


@dataclass(frozen=True)
class Converted:
    """How `CompiledAttention` converts its q, k, v: the transfers (`transfers.transfers`), the query heads, the
    padded length of the pass."""

    query: Transfer
    key: Transfer | Tabulated
    value: Transfer | Tabulated
    heads: int
    padded: int

    def inputs(self, q, k, v, gain):
        """q through its transfer (x each head's gain), f(k), g(v) (terms first), expanded to the query heads, as
        the pass takes them: (B*H, padded, D) and (terms, B*H, padded, D or columns); and the unamplified q."""
        qh = run_transfer(q, self.query, self.query.coefficients, None)
        amplified = qh if gain is None else qh * gain.to(qh.dtype).view(1, -1, 1, 1)
        stored = [self._stored(x, transfer) for x, transfer in ((k, self.key), (v, self.value))]
        return (self._flat(amplified[None])[0], *(self._flat(expand_kv(x, self.heads)) for x in stored)), qh

    def query_gradient(self, q, gain, qh, grad_q):
        """The gradients of q and of the heads' gains from the pass's gradient of the amplified q."""
        b, h, t, _ = q.shape
        grad_q = grad_q[:, :t].reshape(b, h, t, -1).contiguous()
        grad_gain = None if gain is None else (grad_q * qh).sum((0, 2, 3))
        if gain is not None:
            grad_q.mul_(gain.to(grad_q.dtype).view(1, -1, 1, 1))
        return run_transfer(q, self.query, self.query.slope, grad_q, out=grad_q), grad_gain

    def stored_gradient(self, x, transfer, grad):
        """The gradient of k or v (B, H_kv, T, ...) from the pass's of f(k) or g(v) (terms, B*H, padded, ...)."""
        b, h_kv, t, _ = x.shape
        grad = grad[:, :, :t].reshape(len(grad), b, h_kv, self.heads // h_kv, t, grad.shape[-1])
        grad = (grad[:, :, :, 0] if self.heads == h_kv else grad.sum(3)).contiguous()
        return self._stored(x, transfer, grad)

    @staticmethod
    def _stored(x, transfer, grad=None):
        """f(x) (terms, ...) of a polynomial or tabulated transfer, or with `grad` (terms, ..., contiguous) the gradient
        of x, written over grad[0]."""
        x = x.detach().contiguous()
        if isinstance(transfer, Tabulated):
            return tabulated_values(x, transfer) if grad is None else tabulated_gradient(x, transfer, grad, grad[0])
        if grad is None:
            return run_transfer(x, transfer, transfer.coefficients, None)[None]
        return run_transfer(x, transfer, transfer.slope, grad[0], out=grad[0])

    def _flat(self, x):
        """(terms, B, H, T, D) -> (terms, B*H, padded, D)."""
        terms, b, h, t, d = x.shape
        x = x.reshape(terms, b * h, t, d)
        return torch.nn.functional.pad(x, (0, 0, 0, self.padded - t)) if self.padded > t else x.contiguous()


class CompiledAttention(torch.autograd.Function):
    """The converters' transfers and the parallel pass in one, on float32 CPU tensors: q (B, H, T, D), k, v (B, H_kv,
    T, D or columns) before their transfers, each head's C2P gain (H,) or None, threshold (BH,), table (terms,
    ring). Only the unconverted q, k, v are kept for the backward pass (the transfers are recomputed: one compiled
    pass each), not f(k), g(v) expanded to every query head and every decay term. Returns (B*H, padded, columns)."""

    @staticmethod
    def forward(ctx, q, k, v, gain, threshold, table, geometry, converted: Converted, chunk_elements: int):
        (qa, fk, fv), _ = converted.inputs(q, k, v, gain)
        table, threshold = table.detach().contiguous(), threshold.detach().contiguous()
        out, ctx.inside = pass_forward(qa, fk, fv, table, threshold, geometry, chunk_elements)
        ctx.save_for_backward(q, k, v, gain, table, threshold)
        ctx.geometry, ctx.converted, ctx.chunk_elements = geometry, converted, chunk_elements
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, gain, table, threshold = ctx.saved_tensors
        (qa, fk, fv), qh = ctx.converted.inputs(q, k, v, gain)
        grad_qa, grad_fk, grad_fv, grad_threshold = pass_backward(qa, fk, fv, table, threshold, ctx.geometry,
                                                                  ctx.chunk_elements, ctx.inside,
                                                                  grad_out.detach().contiguous())
        del qa, fk, fv  # each gradient below replaces the pass's before the next is made
        grad_q, grad_gain = ctx.converted.query_gradient(q, gain, qh, grad_qa)
        del qh, grad_qa
        grad_k = ctx.converted.stored_gradient(k, ctx.converted.key, grad_fk)
        del grad_fk
        grad_v = ctx.converted.stored_gradient(v, ctx.converted.value, grad_fv)
        return grad_q, grad_k, grad_v, grad_gain, grad_threshold, None, None, None, None

"""Fused Triton kernels for the parallel pass of gain-cell attention (`functional.tiled_attention`).

Same arithmetic as the torch path (`functional._stage_forward` / `_stage_backward`), FlashAttention-style:
one program per (batch x head, block of queries) streams the key tiles its window reaches through on-chip
memory and never writes a (T x T) matrix. Inputs are the hardware-domain q (0..1) and the already evaluated
multiplies f(k), g(v) (the fitted polynomial stays an element-wise torch op in front, so its gradient flows
through autograd).

Terms (`decay.py`: f_r(k), g_r(v) with a table d_r each; one for the product form, a few for aged voltages): the
score sums q . f_r(k) d_r, stage 2 (phi d_r) . g_r(v), the backward the matching gradients (`_grad_kv_kernel`: a
program per term). Terms loop inside the kernels (not unrolled): shared memory does not grow with them.

Decay. Query blocks are aligned to tiles (BLOCK_M divides the tile), so each term's decay x causal/window mask of a
query block against a key tile depends only on their distance in tiles and the block's row offset inside its
tile: the host lays each decay table out once as `blocks[distance, row, key]` (`decay.decay_blocks`) and the
kernels read one contiguous block per key tile instead of gathering by age.

Tiles and the ring. With n = ring // tile, the aligned key tiles a query tile b reaches are b - n .. b; b - n
and b are the same physical tile of the ring (its oldest and newest tokens), so their partial readouts are
added before the clamp, and every tile in between is clamped and quantized alone - the exact per-tile
readout, not an average over tiles. Without a wrap (ring >= sequence) b - n < 0 and every tile stands alone.

Backward (recomputing, nothing but q, f(k), g(v) saved): `_grad_q_kernel` per query block, and
`_grad_kv_kernel` per key tile iterating over the query blocks that reach it; both recompute the readout of
the tile (and of its ring partner) to know where the clamp passes the gradient. The quantizer passes the
gradient straight through, the clamps pass none outside [0, 1] and [-1, 1].

Supported: tile a power of two in 16..128, head_dim <= 256, float32 / float16 / bfloat16 (float32 dots in
IEEE precision, so the kernel matches the torch path; half types accumulate in float32). `supports()` says
whether a case fits; `functional` falls back to the torch path otherwise. Launch settings (query block,
warps, pipeline stages) per kernel are in LAUNCH; `benchmarks/gpu_check.py` measures the alternatives.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decay import cached_decay_blocks, decay_blocks  # noqa: F401 (decay_blocks: the layout the kernels read)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TILES = (16, 32, 64, 128)
MAX_HEAD_DIM = 256
KERNELS = ("forward", "grad_q", "grad_kv")
# (query rows per block, warps, pipeline stages) per kernel for half types; float32 tiles run one stage
LAUNCH = {"forward": (64, 4, 3), "grad_q": (64, 4, 2), "grad_kv": (64, 4, 2)}  # the fastest on an H200
ROUNDING = tl.constexpr(12582912.0)  # 1.5 * 2**23: (x + ROUNDING) - ROUNDING rounds a float32 |x| < 2**22 half to even


@triton.jit
def _rows(base, rows, tokens, columns, dim, EVEN: tl.constexpr):
    """Rows `rows` of a (tokens, dim) matrix, zero outside."""
    pointers = base + rows[:, None] * dim + columns[None, :]
    if EVEN:
        return tl.load(pointers)
    return tl.load(pointers, mask=(rows[:, None] < tokens) & (columns[None, :] < dim), other=0.0)


@triton.jit
def _store_rows(base, values, rows, tokens, columns, dim, EVEN: tl.constexpr):
    pointers = base + rows[:, None] * dim + columns[None, :]
    values = values.to(base.dtype.element_ty)
    if EVEN:
        tl.store(pointers, values)
    else:
        tl.store(pointers, values, mask=(rows[:, None] < tokens) & (columns[None, :] < dim))


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _total(x):
    """Sum of a 2-D block (tl.reduce with this module's combine: tl.sum fails in the interpreter when triton was
    imported before TRITON_INTERPRET was set)."""
    return tl.reduce(tl.reduce(x, 1, _add), 0, _add)


@triton.jit
def _decay(blocks, distance, row_offset, TILE: tl.constexpr, BLOCK_M: tl.constexpr):
    """One term's decay (x causal/window mask) of the query block (first row `row_offset` into its tile) against
    the key tile `distance` tiles before it, (BLOCK_M, TILE) float32."""
    block_rows = row_offset + tl.arange(0, BLOCK_M)
    return tl.load(blocks + distance * (TILE * TILE) + block_rows[:, None] * TILE
                   + tl.arange(0, TILE)[None, :]).to(tl.float32)


@triton.jit
def _scores(q, fk_base, blocks, tile_index, distance, row_offset, tokens, offset, columns, dim, term_stride,
            block_stride, TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr, EVEN: tl.constexpr,
            PRECISION: tl.constexpr):
    """The pre-clamp score of the query block against aligned key tile `tile_index`, `distance` tiles back:
    pre = sum_r (q . f_r(k)) d_r - offset, (BLOCK_M, TILE)."""
    keys = tile_index * TILE + tl.arange(0, TILE)
    pre = tl.full((BLOCK_M, TILE), 0.0, tl.float32)
    for r in range(TERMS):
        fk = _rows(fk_base + r * term_stride, keys, tokens, columns, dim, EVEN)
        pre += tl.dot(q, tl.trans(fk), input_precision=PRECISION) * _decay(blocks + r * block_stride, distance,
                                                                             row_offset, TILE, BLOCK_M)
    return pre - offset


@triton.jit
def _weighted_terms(x, base, blocks, tile_index, distance, row_offset, tokens, columns, dim, term_stride,
                    block_stride, TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_D: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """sum_r (x d_r) . rows_r over the terms, rows_r the key tile's rows of term r of `base` (g_r(v) or f_r(k)),
    x (BLOCK_M, TILE): (BLOCK_M, BLOCK_D) float32."""
    keys = tile_index * TILE + tl.arange(0, TILE)
    total = tl.full((BLOCK_M, BLOCK_D), 0.0, tl.float32)
    for r in range(TERMS):
        rows = _rows(base + r * term_stride, keys, tokens, columns, dim, EVEN)
        weighted = x * _decay(blocks + r * block_stride, distance, row_offset, TILE, BLOCK_M)
        total += tl.dot(weighted.to(rows.dtype), rows, input_precision=PRECISION)
    return total


@triton.jit
def _stage2(pre, fv_base, blocks, tile_index, distance, row_offset, tokens, columns, dim, term_stride, block_stride,
            TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
            EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """Stage 2 over one aligned key tile: sum_r (clamp(pre, 0, 1) d_r) . g_r(v), (BLOCK_M, BLOCK_D) float32."""
    return _weighted_terms(tl.minimum(tl.maximum(pre, 0.0), 1.0), fv_base, blocks, tile_index, distance, row_offset,
                           tokens, columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN,
                           PRECISION)


@triton.jit
def _partial_readout(q, fk_base, fv_base, blocks, tile_index, distance, row_offset, tokens, offset, columns, dim,
                     term_stride, block_stride, TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_D: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """Both stages over one aligned key tile: its partial readout before the clamp, (BLOCK_M, BLOCK_D) float32."""
    pre = _scores(q, fk_base, blocks, tile_index, distance, row_offset, tokens, offset, columns, dim, term_stride,
                  block_stride, TERMS, TILE, BLOCK_M, EVEN, PRECISION)
    return _stage2(pre, fv_base, blocks, tile_index, distance, row_offset, tokens, columns, dim, term_stride,
                   block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)


@triton.jit
def _readout(a, OUT_STEPS: tl.constexpr):
    """clamp(a, -1, 1), rounded (half to even, as torch.round) to multiples of 1 / OUT_STEPS when OUT_STEPS > 0."""
    a = tl.minimum(tl.maximum(a, -1.0), 1.0)
    if OUT_STEPS > 0:
        a = ((a * OUT_STEPS + ROUNDING) - ROUNDING) * (1.0 / OUT_STEPS)
    return a


@triton.jit
def _grad_scores(grad_out, a, pre, fv_base, blocks, tile_index, distance, row_offset, tokens, columns, dim,
                 term_stride, block_stride, TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr,
                 EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """Gradient of the pre-clamp scores of one key tile: the output gradient where the readout clamp passes it
    (|a| <= 1; the quantizer is straight through), through pulses_r = clamp(pre, 0, 1) d_r into g_r(v), and the
    C2P clamp; returns it and the gated output gradient."""
    keys = tile_index * TILE + tl.arange(0, TILE)
    gate = tl.where(tl.abs(a) <= 1.0, grad_out, 0.0)
    grad_phi = tl.full((BLOCK_M, TILE), 0.0, tl.float32)
    for r in range(TERMS):
        fv = _rows(fv_base + r * term_stride, keys, tokens, columns, dim, EVEN)
        grad_phi += tl.dot(gate.to(fv.dtype), tl.trans(fv), input_precision=PRECISION) * _decay(
            blocks + r * block_stride, distance, row_offset, TILE, BLOCK_M)
    return tl.where((pre >= 0.0) & (pre <= 1.0), grad_phi, 0.0), gate


@triton.jit
def _query_block(tokens, dim, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's query block on grid (query blocks, batch x heads), the last blocks (which reach the most
    tiles) first: its first row, the (batch x head) offset of its matrices, its rows and columns."""
    start = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    return start, tl.program_id(1).to(tl.int64) * tokens * dim, start + tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_D)


@triton.jit
def _forward_kernel(q_ptr, fk_ptr, fv_ptr, blocks, out_ptr, tokens, dim, ring, offset_ptr, term_stride, block_stride,
                    TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                    OUT_STEPS: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """out[rows] = sum over physical tiles of readout(partial sums) for one query block; offset_ptr: the C2P
    offset of each (batch x head) row."""
    start, base, rows, columns = _query_block(tokens, dim, BLOCK_M, BLOCK_D)
    offset = tl.load(offset_ptr + tl.program_id(1))
    q_base, fk_base, fv_base = q_ptr + base, fk_ptr + base, fv_ptr + base
    q = _rows(q_base, rows, tokens, columns, dim, EVEN)
    current = start // TILE  # the query block's own (aligned) tile
    row_offset = start - current * TILE
    ring_tiles = ring // TILE
    oldest = current - ring_tiles  # same physical tile as `current` when >= 0 (the ring has wrapped)
    shared = _partial_readout(q, fk_base, fv_base, blocks, current, 0, row_offset, tokens, offset, columns, dim,
                              term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
    if oldest >= 0:
        shared += _partial_readout(q, fk_base, fv_base, blocks, oldest, ring_tiles, row_offset, tokens, offset,
                                   columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN,
                                   PRECISION)
    out = _readout(shared, OUT_STEPS)
    for j in range(tl.maximum(oldest + 1, 0), current):
        out += _readout(_partial_readout(q, fk_base, fv_base, blocks, j, current - j, row_offset, tokens, offset,
                                         columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN,
                                         PRECISION), OUT_STEPS)
    _store_rows(out_ptr + base, out, rows, tokens, columns, dim, EVEN)


@triton.jit
def _grad_q_of_tile(q, grad_out, fk_base, fv_base, a, blocks, tile_index, distance, row_offset, tokens, offset,
                    columns, dim, term_stride, block_stride, TERMS: tl.constexpr, TILE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """dq from one key tile whose slot's readout before the clamp is `a`: sum_r (grad_pre d_r) . f_r(k), and the
    sum of grad_pre (the offset's gradient, negated)."""
    pre = _scores(q, fk_base, blocks, tile_index, distance, row_offset, tokens, offset, columns, dim, term_stride,
                  block_stride, TERMS, TILE, BLOCK_M, EVEN, PRECISION)
    grad_pre, gate = _grad_scores(grad_out, a, pre, fv_base, blocks, tile_index, distance, row_offset, tokens,
                                  columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, EVEN, PRECISION)
    return _weighted_terms(grad_pre, fk_base, blocks, tile_index, distance, row_offset, tokens, columns, dim,
                           term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION), _total(grad_pre)


@triton.jit
def _grad_q_kernel(q_ptr, fk_ptr, fv_ptr, blocks, grad_out_ptr, grad_q_ptr, grad_offset_ptr, tokens, dim, ring,
                   offset_ptr, term_stride, block_stride, TERMS: tl.constexpr, TILE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """dq of one query block, and the sum of its score gradients (minus the offset's) at
    grad_offset[row, query block]."""
    start, base, rows, columns = _query_block(tokens, dim, BLOCK_M, BLOCK_D)
    offset = tl.load(offset_ptr + tl.program_id(1))
    q_base, fk_base, fv_base = q_ptr + base, fk_ptr + base, fv_ptr + base
    q = _rows(q_base, rows, tokens, columns, dim, EVEN)
    grad_out = _rows(grad_out_ptr + base, rows, tokens, columns, dim, EVEN).to(tl.float32)
    current = start // TILE
    row_offset = start - current * TILE
    ring_tiles = ring // TILE
    oldest = current - ring_tiles
    # the current tile, sharing its slot (and readout) with the oldest one once the ring has wrapped
    a = _partial_readout(q, fk_base, fv_base, blocks, current, 0, row_offset, tokens, offset, columns, dim,
                         term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
    if oldest >= 0:
        a += _partial_readout(q, fk_base, fv_base, blocks, oldest, ring_tiles, row_offset, tokens, offset, columns,
                              dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
        grad_q, grad_scores = _grad_q_of_tile(q, grad_out, fk_base, fv_base, a, blocks, oldest, ring_tiles,
                                              row_offset, tokens, offset, columns, dim, term_stride, block_stride,
                                              TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
    else:
        grad_q, grad_scores = tl.full((BLOCK_M, BLOCK_D), 0.0, tl.float32), 0.0
    part, part_sum = _grad_q_of_tile(q, grad_out, fk_base, fv_base, a, blocks, current, 0, row_offset, tokens, offset,
                                     columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN,
                                     PRECISION)
    grad_q += part
    grad_scores += part_sum
    for j in range(tl.maximum(oldest + 1, 0), current):  # tiles alone in their physical slot
        a = _partial_readout(q, fk_base, fv_base, blocks, j, current - j, row_offset, tokens, offset, columns, dim,
                             term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
        part, part_sum = _grad_q_of_tile(q, grad_out, fk_base, fv_base, a, blocks, j, current - j, row_offset,
                                         tokens, offset, columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M,
                                         BLOCK_D, EVEN, PRECISION)
        grad_q += part
        grad_scores += part_sum
    _store_rows(grad_q_ptr + base, grad_q, rows, tokens, columns, dim, EVEN)
    tl.store(grad_offset_ptr + tl.program_id(1) * tl.num_programs(0) + tl.program_id(0), -grad_scores)


@triton.jit
def _grad_kv_block(q_base, fk_base, fv_base, grad_out_base, blocks, start, tile_index, partner, partner_distance,
                   tokens, offset, columns, dim, term_stride, block_stride, term, TERMS: tl.constexpr,
                   TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr,
                   PRECISION: tl.constexpr, PARTNER: tl.constexpr):
    """Contributions to d f_term(k), d g_term(v) of key tile `tile_index` from the query block at `start`; with
    PARTNER, the slot's readout also holds tile `partner` (`partner_distance` tiles before the queries)."""
    rows = start + tl.arange(0, BLOCK_M)
    q = _rows(q_base, rows, tokens, columns, dim, EVEN)
    grad_out = _rows(grad_out_base, rows, tokens, columns, dim, EVEN).to(tl.float32)
    query_tile = start // TILE
    row_offset = start - query_tile * TILE
    distance = query_tile - tile_index
    pre = _scores(q, fk_base, blocks, tile_index, distance, row_offset, tokens, offset, columns, dim, term_stride,
                  block_stride, TERMS, TILE, BLOCK_M, EVEN, PRECISION)
    a = _stage2(pre, fv_base, blocks, tile_index, distance, row_offset, tokens, columns, dim, term_stride,
                block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
    if PARTNER:
        a += _partial_readout(q, fk_base, fv_base, blocks, partner, partner_distance, row_offset, tokens, offset,
                              columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION)
    grad_pre, gate = _grad_scores(grad_out, a, pre, fv_base, blocks, tile_index, distance, row_offset, tokens,
                                  columns, dim, term_stride, block_stride, TERMS, TILE, BLOCK_M, EVEN, PRECISION)
    decay = _decay(blocks + term * block_stride, distance, row_offset, TILE, BLOCK_M)
    pulses = tl.minimum(tl.maximum(pre, 0.0), 1.0) * decay
    grad_fv = tl.dot(tl.trans(pulses).to(q.dtype), gate.to(q.dtype), input_precision=PRECISION)
    grad_fk = tl.dot(tl.trans(grad_pre * decay).to(q.dtype), q, input_precision=PRECISION)
    return grad_fk, grad_fv


@triton.jit
def _grad_kv_kernel(q_ptr, fk_ptr, fv_ptr, blocks, grad_out_ptr, grad_fk_ptr, grad_fv_ptr, tokens, dim, ring, offset_ptr,
                    term_stride, block_stride, TERMS: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_D: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr):
    """d f_r(k) and d g_r(v) of one key tile and term r from every query block that reaches it: those of its own
    tile (whose slot, once the ring has wrapped, also holds tile - ring_tiles), those between, and those
    ring_tiles later (for which it is the oldest in their slot); grid (key tiles, batch x heads, terms)."""
    tile_index = tl.program_id(0)
    base = tl.program_id(1).to(tl.int64) * tokens * dim
    offset = tl.load(offset_ptr + tl.program_id(1))
    term = tl.program_id(2)
    q_base, fk_base, fv_base, grad_out_base = q_ptr + base, fk_ptr + base, fv_ptr + base, grad_out_ptr + base
    columns = tl.arange(0, BLOCK_D)
    ring_tiles = ring // TILE
    grad_fk = tl.full((TILE, BLOCK_D), 0.0, tl.float32)
    grad_fv = tl.full((TILE, BLOCK_D), 0.0, tl.float32)
    own = tile_index * TILE
    for start in range(own, tl.minimum(own + TILE, tokens), BLOCK_M):
        if tile_index >= ring_tiles:
            dk, dv = _grad_kv_block(q_base, fk_base, fv_base, grad_out_base, blocks, start, tile_index,
                                    tile_index - ring_tiles, ring_tiles, tokens, offset, columns, dim, term_stride,
                                    block_stride, term, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION, True)
        else:
            dk, dv = _grad_kv_block(q_base, fk_base, fv_base, grad_out_base, blocks, start, tile_index, 0, 0, tokens,
                                    offset, columns, dim, term_stride, block_stride, term, TERMS, TILE, BLOCK_M,
                                    BLOCK_D, EVEN, PRECISION, False)
        grad_fk += dk
        grad_fv += dv
    last = own + ring_tiles * TILE  # the query tile for which this one is the oldest in the slot
    for start in range(own + TILE, tl.minimum(last, tokens), BLOCK_M):
        dk, dv = _grad_kv_block(q_base, fk_base, fv_base, grad_out_base, blocks, start, tile_index, 0, 0, tokens,
                                offset, columns, dim, term_stride, block_stride, term, TERMS, TILE, BLOCK_M, BLOCK_D,
                                EVEN, PRECISION, False)
        grad_fk += dk
        grad_fv += dv
    for start in range(last, tl.minimum(last + TILE, tokens), BLOCK_M):
        dk, dv = _grad_kv_block(q_base, fk_base, fv_base, grad_out_base, blocks, start, tile_index,
                                tile_index + ring_tiles, 0, tokens, offset, columns, dim, term_stride, block_stride,
                                term, TERMS, TILE, BLOCK_M, BLOCK_D, EVEN, PRECISION, True)
        grad_fk += dk
        grad_fv += dv
    keys = own + tl.arange(0, TILE)
    _store_rows(grad_fk_ptr + term * term_stride + base, grad_fk, keys, tokens, columns, dim, EVEN)
    _store_rows(grad_fv_ptr + term * term_stride + base, grad_fv, keys, tokens, columns, dim, EVEN)


def interpreted() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_forward_kernel).__name__ == "InterpretedFunction"


def supports(q: torch.Tensor, tile: int | None) -> str | None:
    """None when the kernels handle q (B*H, T, D) with this tile (None: the element-wise ones), else the
    reason they do not."""
    if tile is not None and tile not in TILES:
        return f"tile {tile} is not one of {TILES}"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} is over {MAX_HEAD_DIM}"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not float32, float16 or bfloat16"
    if not (q.is_cuda or interpreted()):
        return "tensors are not on a CUDA device (set TRITON_INTERPRET=1 before import to run on the CPU)"
    return None


def _launch_options(q: torch.Tensor, fk: torch.Tensor, blocks: torch.Tensor, tile: int, kernel: str,
                   launch: dict | None) -> dict:
    """Constexprs and launch settings of `kernel` for q (B*H, T, D) and the terms of f(k); `launch` overrides
    LAUNCH."""
    block_m, warps, stages = (launch or LAUNCH)[kernel]
    tokens, dim = q.shape[1:]
    block_d = max(16, triton.next_power_of_2(dim))
    block_m = min(block_m, tile)
    return dict(TERMS=len(fk), TILE=tile, BLOCK_M=block_m, BLOCK_D=block_d, EVEN=tokens % tile == 0 and dim == block_d,
                PRECISION="ieee" if q.dtype == torch.float32 else None, num_warps=warps,
                num_stages=1 if q.dtype == torch.float32 else stages)  # float32 tiles are large: no pipelining


class FusedTiledAttention(torch.autograd.Function):
    """The kernel's autograd function on contiguous q (B*H, T, D), f(k), g(v) (terms, B*H, T, D) and the decay
    `blocks` (terms, ring / tile + 1, tile, tile); `offsets` (B*H,) float32: each row's C2P offset (the cell's
    plus the head's threshold), with its gradient."""

    @staticmethod
    def forward(ctx, q, fk, fv, blocks, offsets, tile: int, ring: int, out_steps: int, launch: dict | None):
        q, fk, fv, blocks = (x.contiguous() for x in (q, fk, fv, blocks))
        offsets = offsets.to(torch.float32).contiguous()
        rows, tokens, dim = q.shape
        options = _launch_options(q, fk, blocks, tile, "forward", launch)
        out = torch.empty_like(q)
        grid = (triton.cdiv(tokens, options["BLOCK_M"]), rows)
        _forward_kernel[grid](q, fk, fv, blocks, out, tokens, dim, ring, offsets, *_strides(fk, blocks),
                              OUT_STEPS=out_steps, **options)
        ctx.save_for_backward(q, fk, fv, blocks, offsets)
        ctx.geometry = (tile, ring, launch)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, fk, fv, blocks, offsets = ctx.saved_tensors
        tile, ring, launch = ctx.geometry
        rows, tokens, dim = q.shape
        grad_out = grad_out.contiguous()
        grad_q, grad_fk, grad_fv = torch.empty_like(q), torch.empty_like(fk), torch.empty_like(fv)
        options = _launch_options(q, fk, blocks, tile, "grad_q", launch)
        query_blocks = triton.cdiv(tokens, options["BLOCK_M"])
        grad_offsets = torch.empty(rows, query_blocks, dtype=torch.float32, device=q.device)  # per query block
        _grad_q_kernel[(query_blocks, rows)](
            q, fk, fv, blocks, grad_out, grad_q, grad_offsets, tokens, dim, ring, offsets, *_strides(fk, blocks),
            **options)
        _grad_kv_kernel[(triton.cdiv(tokens, tile), rows, len(fk))](
            q, fk, fv, blocks, grad_out, grad_fk, grad_fv, tokens, dim, ring, offsets, *_strides(fk, blocks),
            **_launch_options(q, fk, blocks, tile, "grad_kv", launch))
        return grad_q, grad_fk, grad_fv, None, grad_offsets.sum(1), None, None, None, None


def _strides(fk: torch.Tensor, blocks: torch.Tensor) -> tuple[int, int]:
    """Elements between two terms of f(k) (and g(v)) and of the decay blocks."""
    return fk[0].numel(), blocks[0].numel()


def fused_tiled_attention(q, fk, fv, table, *, tile: int, ring: int, offset: float, out_steps: int,
                          launch: dict | None = None, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """Gain-cell attention of (B*H, T, D) q and f(k), g(v) ((terms,) B*H, T, D); `table` ((terms,) ages) holds
    each term's decay by age (zero past its end); `offset` the cell's C2P offset, `threshold` (B*H,) each row's C2P
    threshold above it (None: 0). `launch`: {kernel: (query rows per block, warps, stages)} for all of KERNELS
    instead of LAUNCH."""
    fk, fv = (x if x.dim() == 4 else x[None] for x in (fk, fv))
    blocks = cached_decay_blocks(table, tile, ring)
    blocks = blocks if blocks.dim() == 4 else blocks[None]
    if len(blocks) != len(fk):
        raise ValueError(f"{len(blocks)} decay table(s) for {len(fk)} term(s) of f(k), g(v)")
    offsets = (q.new_zeros(q.shape[0], dtype=torch.float32) if threshold is None else threshold.float()) + offset
    out = FusedTiledAttention.apply(q, fk, fv, blocks, offsets, tile, ring, out_steps, launch)
    return out

"""Fused Triton kernels for the parallel pass of gain-cell attention (`functional.tiled_attention`).

Same arithmetic as the torch path (`functional._stage_forward` / `_stage_backward`), FlashAttention-style:
one program per (batch x head, block of queries) streams the key tiles its window reaches through on-chip
memory and never writes a (T x T) matrix. Inputs are the hardware-domain q (0..1) and the already evaluated
multiplies f(k), g(v) (the fitted polynomial stays an element-wise torch op in front, so its gradient flows
through autograd); the decay is a table by age, gathered in the kernel.

Tiles and the ring. Query blocks are aligned to tiles (BLOCK_M divides the tile). With n = ring // tile, the
aligned key tiles a query tile b reaches are b - n .. b; b - n and b are the same physical tile of the ring
(its oldest and newest tokens), so their partial readouts are added before the clamp, and every tile in
between is clamped and quantized alone - the exact per-tile readout, not an average over tiles. Without a
wrap (ring >= sequence) b - n < 0 and every tile stands alone.

Backward (recomputing, nothing but q, f(k), g(v) saved): `_grad_q_kernel` per query block, and
`_grad_kv_kernel` per key tile iterating over the query tiles that reach it; both recompute the readout of
the tile (and of its ring partner) to know where the clamp passes the gradient. The quantizer passes the
gradient straight through, the clamps pass none outside [0, 1] and [-1, 1].

Supported: tile a power of two in 16..128, head_dim <= 256, float32 / float16 / bfloat16 (float32 dots in
IEEE precision, so the kernel matches the torch path; half types accumulate in float32). `supports()` says
whether a case fits; `functional` falls back to the torch path otherwise.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TILES = (16, 32, 64, 128)
MAX_HEAD_DIM = 256


@triton.jit
def _load_rows(base, rows, tokens, columns, dim):
    """Rows `rows` (< tokens) of a (tokens, dim) matrix, zero outside."""
    mask = (rows[:, None] < tokens) & (columns[None, :] < dim)
    return tl.load(base + rows[:, None] * dim + columns[None, :], mask=mask, other=0.0)


@triton.jit
def _key_tile(q, fk_base, fv_base, table, rows, tile_index, tokens, ring, offset, columns, dim,
              TILE: tl.constexpr, PRECISION: tl.constexpr):
    """Aligned key tile `tile_index` against the query rows: f(k), g(v) (TILE, BLOCK_D), the pre-clamp score
    pre = (q . f(k)) d - offset and the decay d (0 outside the causal window), both (BLOCK_M, TILE)."""
    keys = tile_index * TILE + tl.arange(0, TILE)
    mask = (keys[:, None] < tokens) & (columns[None, :] < dim)
    offsets = keys[:, None] * dim + columns[None, :]
    fk = tl.load(fk_base + offsets, mask=mask, other=0.0)
    fv = tl.load(fv_base + offsets, mask=mask, other=0.0)
    age = rows[:, None] - keys[None, :]
    decay = tl.load(table + age, mask=(age >= 0) & (age < ring), other=0.0).to(tl.float32)
    pre = tl.dot(q, tl.trans(fk), input_precision=PRECISION) * decay - offset
    return fk, fv, pre, decay


@triton.jit
def _partial_readout(q, fk_base, fv_base, table, rows, tile_index, tokens, ring, offset, columns, dim,
                     TILE: tl.constexpr, PRECISION: tl.constexpr):
    """Stage 2 over one aligned key tile: sum of clamp(pre, 0, 1) d g(v) over its keys, (BLOCK_M, BLOCK_D) float32."""
    fk, fv, pre, decay = _key_tile(q, fk_base, fv_base, table, rows, tile_index, tokens, ring, offset, columns, dim,
                                   TILE, PRECISION)
    pulses = tl.minimum(tl.maximum(pre, 0.0), 1.0) * decay
    return tl.dot(pulses.to(fv.dtype), fv, input_precision=PRECISION)


@triton.jit
def _readout(a, OUT_STEPS: tl.constexpr):
    """clamp(a, -1, 1), rounded (half to even, as torch.round) to multiples of 1 / OUT_STEPS when OUT_STEPS > 0."""
    a = tl.minimum(tl.maximum(a, -1.0), 1.0)
    if OUT_STEPS > 0:
        scaled = a * OUT_STEPS
        low = tl.floor(scaled)
        fraction = scaled - low
        odd = (low - 2.0 * tl.floor(low * 0.5)) == 1.0
        up = (fraction > 0.5) | ((fraction == 0.5) & odd)
        a = tl.where(up, low + 1.0, low) / OUT_STEPS
    return a


@triton.jit
def _grad_scores(grad_out, a, fv, pre, decay, PRECISION: tl.constexpr):
    """Gradient of the scores q . f(k) of one tile: the output gradient where the readout clamp passes it
    (|a| <= 1; the quantizer is straight through), times g(v), through pulses = clamp(x d - offset, 0, 1) d."""
    gate = tl.where(tl.abs(a) <= 1.0, grad_out, 0.0)
    grad_x = tl.dot(gate.to(fv.dtype), tl.trans(fv), input_precision=PRECISION) * (decay * decay)
    return tl.where((pre >= 0.0) & (pre <= 1.0), grad_x, 0.0), gate


@triton.jit
def _forward_kernel(q_ptr, fk_ptr, fv_ptr, table, out_ptr, tokens, dim, ring, offset, TILE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, OUT_STEPS: tl.constexpr, PRECISION: tl.constexpr):
    """out[rows] = sum over physical tiles of readout(partial sums); grid (query blocks, batch x heads)."""
    start = tl.program_id(0) * BLOCK_M
    base = tl.program_id(1).to(tl.int64) * tokens * dim
    q_base, fk_base, fv_base = q_ptr + base, fk_ptr + base, fv_ptr + base
    rows = start + tl.arange(0, BLOCK_M)
    columns = tl.arange(0, BLOCK_D)
    q = _load_rows(q_base, rows, tokens, columns, dim)
    current = start // TILE  # the query block's own (aligned) tile
    oldest = current - ring // TILE  # same physical tile as `current` when >= 0 (the ring has wrapped)
    shared = tl.full((BLOCK_M, BLOCK_D), 0.0, tl.float32)
    if oldest >= 0:
        shared = _partial_readout(q, fk_base, fv_base, table, rows, oldest, tokens, ring, offset, columns, dim,
                                  TILE, PRECISION)
    out = tl.full((BLOCK_M, BLOCK_D), 0.0, tl.float32)
    for j in range(tl.maximum(oldest + 1, 0), current):
        out += _readout(_partial_readout(q, fk_base, fv_base, table, rows, j, tokens, ring, offset, columns, dim,
                                         TILE, PRECISION), OUT_STEPS)
    shared += _partial_readout(q, fk_base, fv_base, table, rows, current, tokens, ring, offset, columns, dim,
                               TILE, PRECISION)
    out += _readout(shared, OUT_STEPS)
    mask = (rows[:, None] < tokens) & (columns[None, :] < dim)
    tl.store(out_ptr + base + rows[:, None] * dim + columns[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_q_kernel(q_ptr, fk_ptr, fv_ptr, table, grad_out_ptr, grad_q_ptr, tokens, dim, ring, offset,
                   TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """dq of one query block; grid (query blocks, batch x heads)."""
    start = tl.program_id(0) * BLOCK_M
    base = tl.program_id(1).to(tl.int64) * tokens * dim
    q_base, fk_base, fv_base = q_ptr + base, fk_ptr + base, fv_ptr + base
    rows = start + tl.arange(0, BLOCK_M)
    columns = tl.arange(0, BLOCK_D)
    q = _load_rows(q_base, rows, tokens, columns, dim)
    grad_out = _load_rows(grad_out_ptr + base, rows, tokens, columns, dim).to(tl.float32)
    current = start // TILE
    oldest = current - ring // TILE
    grad_q = tl.full((BLOCK_M, BLOCK_D), 0.0, tl.float32)
    for j in range(tl.maximum(oldest + 1, 0), current):  # tiles alone in their physical slot
        fk, fv, pre, decay = _key_tile(q, fk_base, fv_base, table, rows, j, tokens, ring, offset, columns, dim,
                                       TILE, PRECISION)
        a = tl.dot((tl.minimum(tl.maximum(pre, 0.0), 1.0) * decay).to(fv.dtype), fv, input_precision=PRECISION)
        grad_x, gate = _grad_scores(grad_out, a, fv, pre, decay, PRECISION)
        grad_q += tl.dot(grad_x.to(fk.dtype), fk, input_precision=PRECISION)
    # the current tile, sharing its slot (and readout) with the oldest one once the ring has wrapped
    a = _partial_readout(q, fk_base, fv_base, table, rows, current, tokens, ring, offset, columns, dim, TILE,
                         PRECISION)
    if oldest >= 0:
        a += _partial_readout(q, fk_base, fv_base, table, rows, oldest, tokens, ring, offset, columns, dim, TILE,
                              PRECISION)
    fk, fv, pre, decay = _key_tile(q, fk_base, fv_base, table, rows, current, tokens, ring, offset, columns, dim,
                                   TILE, PRECISION)
    grad_x, gate = _grad_scores(grad_out, a, fv, pre, decay, PRECISION)
    grad_q += tl.dot(grad_x.to(fk.dtype), fk, input_precision=PRECISION)
    if oldest >= 0:
        fk, fv, pre, decay = _key_tile(q, fk_base, fv_base, table, rows, oldest, tokens, ring, offset, columns, dim,
                                       TILE, PRECISION)
        grad_x, gate = _grad_scores(grad_out, a, fv, pre, decay, PRECISION)
        grad_q += tl.dot(grad_x.to(fk.dtype), fk, input_precision=PRECISION)
    mask = (rows[:, None] < tokens) & (columns[None, :] < dim)
    tl.store(grad_q_ptr + base + rows[:, None] * dim + columns[None, :], grad_q.to(grad_q_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _grad_kv_kernel(q_ptr, fk_ptr, fv_ptr, table, grad_out_ptr, grad_fk_ptr, grad_fv_ptr, tokens, dim, ring, offset,
                    TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """d f(k) and d g(v) of one key tile from every query block that reaches it; grid (key tiles, batch x heads)."""
    tile_index = tl.program_id(0)
    base = tl.program_id(1).to(tl.int64) * tokens * dim
    q_base, fk_base, fv_base = q_ptr + base, fk_ptr + base, fv_ptr + base
    columns = tl.arange(0, BLOCK_D)
    ring_tiles = ring // TILE
    grad_fk = tl.full((TILE, BLOCK_D), 0.0, tl.float32)
    grad_fv = tl.full((TILE, BLOCK_D), 0.0, tl.float32)
    stop = tl.minimum((tile_index + ring_tiles + 1) * TILE, tokens)  # query tiles tile_index .. + ring_tiles
    for start in range(tile_index * TILE, stop, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q = _load_rows(q_base, rows, tokens, columns, dim)
        grad_out = _load_rows(grad_out_ptr + base, rows, tokens, columns, dim).to(tl.float32)
        fk, fv, pre, decay = _key_tile(q, fk_base, fv_base, table, rows, tile_index, tokens, ring, offset, columns,
                                       dim, TILE, PRECISION)
        pulses = tl.minimum(tl.maximum(pre, 0.0), 1.0) * decay
        a = tl.dot(pulses.to(fv.dtype), fv, input_precision=PRECISION)
        query_tile = start // TILE
        partner = query_tile * 0 - 1  # the other aligned tile in this tile's physical slot, for these queries
        if query_tile == tile_index + ring_tiles:
            partner = query_tile
        if (query_tile == tile_index) & (tile_index >= ring_tiles):
            partner = tile_index - ring_tiles
        if partner >= 0:
            a += _partial_readout(q, fk_base, fv_base, table, rows, partner, tokens, ring, offset, columns, dim, TILE,
                                  PRECISION)
        grad_x, gate = _grad_scores(grad_out, a, fv, pre, decay, PRECISION)
        grad_fv += tl.dot(tl.trans(pulses).to(fv.dtype), gate.to(fv.dtype), input_precision=PRECISION)
        grad_fk += tl.dot(tl.trans(grad_x).to(q.dtype), q, input_precision=PRECISION)
    keys = tile_index * TILE + tl.arange(0, TILE)
    mask = (keys[:, None] < tokens) & (columns[None, :] < dim)
    offsets = base + keys[:, None] * dim + columns[None, :]
    tl.store(grad_fk_ptr + offsets, grad_fk.to(grad_fk_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_fv_ptr + offsets, grad_fv.to(grad_fv_ptr.dtype.element_ty), mask=mask)


def interpreted() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_forward_kernel).__name__ == "InterpretedFunction"


def supports(q: torch.Tensor, tile: int) -> str | None:
    """None when the kernel handles q (B*H, T, D) with this tile, else the reason it does not."""
    if tile not in TILES:
        return f"tile {tile} is not one of {TILES}"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} is over {MAX_HEAD_DIM}"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not float32, float16 or bfloat16"
    if not (q.is_cuda or interpreted()):
        return "tensors are not on a CUDA device (set TRITON_INTERPRET=1 before import to run on the CPU)"
    return None


def _launch_options(q: torch.Tensor, tile: int) -> dict:
    dim = q.shape[-1]
    return dict(TILE=tile, BLOCK_M=min(tile, 64), BLOCK_D=max(16, triton.next_power_of_2(dim)),
                PRECISION="ieee" if q.dtype == torch.float32 else None, num_warps=4 if tile <= 64 else 8,
                **({"num_stages": 1} if q.dtype == torch.float32 else {}))  # float32 tiles are large: no pipelining


class FusedTiledAttention(torch.autograd.Function):
    """The kernel's autograd function on contiguous (B*H, T, D) q, f(k), g(v) and a decay table of `ring` ages."""

    @staticmethod
    def forward(ctx, q, fk, fv, table, tile: int, ring: int, offset: float, out_steps: int):
        q, fk, fv, table = (x.contiguous() for x in (q, fk, fv, table))
        rows, tokens, dim = q.shape
        options = _launch_options(q, tile)
        out = torch.empty_like(q)
        grid = (triton.cdiv(tokens, options["BLOCK_M"]), rows)
        _forward_kernel[grid](q, fk, fv, table, out, tokens, dim, ring, float(offset), OUT_STEPS=out_steps,
                              **options)
        ctx.save_for_backward(q, fk, fv, table)
        ctx.geometry = (tile, ring, float(offset))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, fk, fv, table = ctx.saved_tensors
        tile, ring, offset = ctx.geometry
        rows, tokens, dim = q.shape
        grad_out = grad_out.contiguous()
        options = _launch_options(q, tile)
        grad_q, grad_fk, grad_fv = torch.empty_like(q), torch.empty_like(fk), torch.empty_like(fv)
        _grad_q_kernel[(triton.cdiv(tokens, options["BLOCK_M"]), rows)](
            q, fk, fv, table, grad_out, grad_q, tokens, dim, ring, offset, **options)
        _grad_kv_kernel[(triton.cdiv(tokens, tile), rows)](
            q, fk, fv, table, grad_out, grad_fk, grad_fv, tokens, dim, ring, offset, **options)
        return grad_q, grad_fk, grad_fv, None, None, None, None, None


def fused_tiled_attention(q, fk, fv, table, *, tile: int, ring: int, offset: float, out_steps: int) -> torch.Tensor:
    """Gain-cell attention of (B*H, T, D) q, f(k), g(v); `table` holds the decay by age (zero past its end)."""
    if table.numel() < ring:
        table = torch.cat([table, table.new_zeros(ring - table.numel())])
    return FusedTiledAttention.apply(q, fk, fv, table, tile, ring, offset, out_steps)

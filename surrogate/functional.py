"""`gaincell_attention`: the functional core of gain-cell attention, on hardware-domain tensors.

What one head computes for a query at step t over the keys s of its window (t - window < s <= t):
    x[t, s]   = sum_r (q_t . f_r(k_s)) * d_r(t - s)                stage 1: Q pulses x K array, aged
    phi[t, s] = clamp(x[t, s] - offset - theta_h, 0, 1)              charge-to-pulse (HardSigmoid), no softmax
    a_j[t]    = sum_{s in tile j} sum_r phi[t, s] d_r(t - s) g_r(v_s)  stage 2: phi pulses x V array, per tile j
    out[t]    = sum_j quantize(clamp(a_j[t], -1, 1))                 per-tile signed readout, summed digitally
with theta_h the head's C2P threshold (its comparator reference raised above the cell's offset: only keys whose
score passes it give a pulse; 0 by default, trainable in the layer), and
f, g the fitted multiply in C2P / readout units (see `cellmodel`) of a cell aged t - s tokens, written as
terms r: each term a transfer of the stored voltage (f_r, g_r) times a table by age in tokens (d_r). The
retention decay comes in two forms (`decay_terms`): "surrogate", the circuit's, where the stored voltage
leaks toward the hold level and the aged cell reads f(v_held) (`cellmodel.AgedExpansion`, a few terms); or the
paper's product form, one term f(k) d(age) with d a table (a rate per step, a given table, or the
surrogate's decay at the reference level where that form is within the expansion's tolerance).
Sub-tiles are the physical columns of a ring buffer of `window` slots: token s lives in slot s mod window,
so tile j holds the tokens with (s // tile) mod (window // tile) == j; once the window wraps, the newest and
the oldest tokens of a window share a tile (and its clamp), exactly as in the decoding ring buffer.

The fast path never materialises a (B, H, T, T) tensor: queries are processed in chunks against only the
key tiles their window reaches (the per-tile readout is exact because tiles are the array size), the decay
and causal mask form one (keys x queries) matrix per chunk shared by every batch and head, and a custom
autograd function keeps only q, f(k), g(v) for the backward pass, recomputing each chunk there (as flash
attention does). Memory is O(B H T D) plus one chunk. This torch path is the readable reference; on CUDA
the same pass runs as one fused Triton kernel (`kernel.py`, chosen by `use_triton`), tested against it.
Per-cell variation and read noise (`cells`, see `varied.py`) run on the torch path only.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from gaincell.errors import ConfigError

from .cellmodel import AgedExpansion, CellModel
from .decay import DecayTerms, as_terms, decay_terms, term_tables
from .geometry import Geometry, chunk_decay, expand_kv
from .options import C2P, Execution
from .transfers import ElementwiseTransfer, Quantization, TabulatedTransfer, readout_sum, transfers
from .varied import StageCells, varied_backward, varied_forward


def peak_reference(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each query's largest score over the keys it reads (`valid`, broadcast over x's last dimension) less one C2P
    saturation unit: the comparators' reference when it follows the peak (0 for a query that reads no key)."""
    peak = x.masked_fill(~valid, float("-inf")).amax(-1, keepdim=True)
    return torch.where(torch.isfinite(peak), peak - 1.0, torch.zeros_like(peak))


def _tile_readouts(pulses, fv, tiles: list[int], tile: int, readouts: dict | None = None) -> dict[int, torch.Tensor]:
    """Stage 2 per physical tile: sum of (pulses of the keys stored in it) @ g(v), added to `readouts`.
    pulses (BH, C, K), fv (BH, K, D); all tiles in one batched product."""
    readouts = {} if readouts is None else readouts
    rows, queries, n = pulses.shape[0], pulses.shape[1], len(tiles)
    parts = torch.bmm(pulses.reshape(rows, queries, n, tile).transpose(1, 2).reshape(rows * n, queries, tile),
                      fv.reshape(rows * n, tile, fv.shape[-1])).view(rows, n, queries, -1)
    for i, physical in enumerate(tiles):
        readouts[physical] = readouts[physical] + parts[:, i] if physical in readouts else parts[:, i]
    return readouts


def _stage_forward(q, fk, fv, decay, tiles: list[int], geometry: Geometry, keep: bool = False,
                   cells: StageCells | None = None, threshold: torch.Tensor | None = None):
    """One chunk. q (BH, C, D); fk, fv (terms, BH, K, D) with K = len(tiles) * tile; decay (terms, C, K);
    `cells`: this chunk's per-cell variation and read noise (`varied.varied_forward`); `threshold`: each row's
    C2P threshold (BH,), or each query's (BH, C, 1), or None. Returns out (BH, C, D) and, with keep, the pre-clamp scores, the pulses
    (terms, BH, C, K) and the per-tile readouts."""
    if cells is not None:
        return varied_forward(q, fk, fv, decay, tiles, geometry, cells, keep, threshold)
    x = torch.bmm(q, fk[0].transpose(1, 2)).mul_(decay[0])  # (BH, C, K) = sum_r (q . f_r(k)) d_r
    for f, d in zip(fk[1:], decay[1:]):
        x.add_(torch.bmm(q, f.transpose(1, 2)).mul_(d))
    if geometry.peak:
        x.sub_(peak_reference(x, decay[0] != 0))
    elif geometry.offset:
        x.sub_(geometry.offset)
    if threshold is not None:
        x.sub_(threshold.view(len(threshold), -1, 1))
    pre = x.clone() if keep else None
    phi = x.clamp_(0.0, geometry.full_scale)
    pulses = phi.mul_(decay[0])[None] if len(decay) == 1 else phi[None] * decay[:, None]  # phi * d_r
    readouts: dict[int, torch.Tensor] = {}
    for p, g in zip(pulses, fv):
        _tile_readouts(p, g, tiles, geometry.tile, readouts)
    return readout_sum(readouts.values(), geometry.full_scale, geometry.out_steps), pre, pulses, readouts



def _stage_backward(q, fk, fv, decay, tiles: list[int], geometry: Geometry, grad_out, cells: StageCells | None = None,
                    threshold: torch.Tensor | None = None):
    """Gradients of one chunk, recomputed from q, f(k), g(v): dq (BH, C, D), dfk and dfv (terms, BH, K, D) and
    the C2P threshold's (BH,)."""
    if cells is not None:
        return varied_backward(q, fk, fv, decay, tiles, geometry, cells, grad_out, threshold)
    _, pre, pulses, readouts = _stage_forward(q, fk, fv, decay, tiles, geometry, keep=True, threshold=threshold)
    tile = geometry.tile
    grad_readout = {j: grad_out * (a.abs() <= geometry.full_scale) for j, a in readouts.items()}  # quantization: straight through
    grad_phi = torch.zeros_like(pulses[0])
    grad_fv = torch.empty_like(fv)
    for r in range(len(fv)):
        for i, physical in enumerate(tiles):
            columns = slice(i * tile, (i + 1) * tile)
            grad_phi[:, :, columns].addcmul_(torch.bmm(grad_readout[physical], fv[r, :, columns].transpose(1, 2)),
                                             decay[r, :, columns])
            grad_fv[r, :, columns] = torch.bmm(pulses[r, :, :, columns].transpose(1, 2), grad_readout[physical])
    grad_x = grad_phi.mul_((pre >= 0.0) & (pre <= geometry.full_scale))  # through phi * d_r and the clamp
    grad_threshold = -grad_x.sum((1, 2))
    if geometry.peak:  # the reference follows the peak key's score: it moves every score of its query
        top = pre.masked_fill(decay[0] == 0, float("-inf")).argmax(-1, keepdim=True)
        grad_x.scatter_add_(-1, top, -grad_x.sum(-1, keepdim=True))
    grad_q = torch.zeros_like(q)
    grad_fk = torch.empty_like(fk)
    for r in range(len(fk)):
        scaled = grad_x * decay[r]  # through x = sum_r (q . f_r(k)) d_r
        grad_q.add_(torch.bmm(scaled, fk[r]))
        grad_fk[r] = torch.bmm(scaled.transpose(1, 2), q)
    return grad_q, grad_fk, grad_fv, grad_threshold


def _chunks(geometry: Geometry, total_rows: int):
    """(rows, queries start, stop, first and last key tile) of every chunk of the parallel pass."""
    for start in range(0, geometry.padded, geometry.chunk):
        stop = min(start + geometry.chunk, geometry.padded)
        for row in range(0, total_rows, geometry.rows):
            yield slice(row, row + geometry.rows), start, stop, *geometry.key_tiles(start, stop)


class _TiledAttention(torch.autograd.Function):
    """Parallel (training) pass over a whole sequence; q (BH, padded, D); fk, fv (terms, BH, padded, D);
    table (terms, ring)."""

    @staticmethod
    def forward(ctx, q, fk, fv, table, threshold, geometry: Geometry, cells: StageCells | None = None):
        out = q.new_empty(*q.shape[:-1], fv.shape[-1])
        tile = geometry.tile
        for rows, start, stop, first, last in _chunks(geometry, q.shape[0]):
            decay = chunk_decay(table, geometry, start, stop, first, last)
            keys = slice(first * tile, last * tile)
            out[rows, start:stop] = _stage_forward(q[rows, start:stop], fk[:, rows, keys], fv[:, rows, keys], decay,
                                                   geometry.physical_tiles(first, last), geometry,
                                                   cells=_chunk_cells(cells, geometry, rows, start, stop, first,
                                                                      last), threshold=threshold[rows])[0]
        ctx.save_for_backward(q, fk, fv, table, threshold)
        ctx.geometry, ctx.cells = geometry, cells
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, fk, fv, table, threshold = ctx.saved_tensors
        geometry = ctx.geometry
        tile = geometry.tile
        grad_q, grad_k, grad_v, grad_threshold = (torch.zeros_like(x) for x in (q, fk, fv, threshold))
        grad_out = grad_out.contiguous()
        for rows, start, stop, first, last in _chunks(geometry, q.shape[0]):
            decay = chunk_decay(table, geometry, start, stop, first, last)
            keys = slice(first * tile, last * tile)
            dq, dk, dv, dt = _stage_backward(q[rows, start:stop], fk[:, rows, keys], fv[:, rows, keys], decay,
                                             geometry.physical_tiles(first, last), geometry,
                                             grad_out[rows, start:stop],
                                             _chunk_cells(ctx.cells, geometry, rows, start, stop, first, last),
                                             threshold[rows])
            grad_q[rows, start:stop] += dq
            grad_k[:, rows, keys] += dk
            grad_v[:, rows, keys] += dv
            grad_threshold[rows] += dt
        return grad_q, grad_k, grad_v, None, grad_threshold, None, None


def _chunk_cells(cells: StageCells | None, geometry: Geometry, rows: slice, start: int, stop: int, first: int,
                 last: int) -> StageCells | None:
    """The chunk's part of `cells` (None stays None)."""
    if cells is None:
        return None
    log_decay = chunk_decay(cells.log_table[None], geometry, start, stop, first, last)[0]
    return cells.chunk(rows, slice(first * geometry.tile, last * geometry.tile), log_decay, (rows.start, start))


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile: int, window: int | None) -> None:
    """Shapes (B, H, T, D) for q and (B, H_kv, T, D) for k, v with H a multiple of H_kv; window % tile == 0."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ConfigError(name, f"must be a 4-D tensor (batch, heads, tokens, head_dim); got "
                                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not x.is_floating_point():
            raise ConfigError(name, f"must be floating point; got {x.dtype}")
    if k.shape != v.shape:
        raise ConfigError("v", f"must have the shape of k {tuple(k.shape)}; got {tuple(v.shape)}")
    b, h, t, d = q.shape
    if (k.shape[0], k.shape[2], k.shape[3]) != (b, t, d):
        raise ConfigError("k", f"must be (batch={b}, kv_heads, tokens={t}, head_dim={d}); got {tuple(k.shape)}")
    if k.shape[1] < 1 or h % k.shape[1]:
        raise ConfigError("k", f"has {k.shape[1]} heads, which must divide the {h} query heads")
    if not isinstance(tile, int) or tile < 1:
        raise ConfigError("tile", f"must be a positive integer (the array's token columns); got {tile!r}")
    if window is not None and (not isinstance(window, int) or window < tile or window % tile):
        raise ConfigError("window", f"must be a positive multiple of the tile size {tile}; got {window!r}")


def ring_size(tokens: int, tile: int, window: int | None) -> tuple[int, int]:
    """(tokens padded to a whole tile, ring size): the ring is the window, or the padded length when the
    window is None or longer (no wrap)."""
    padded = -(-tokens // tile) * tile
    return padded, padded if window is None or window >= padded else window


def prepare(q, k, v, cell, tile: int, window: int | None, quantize) -> tuple[CellModel, "Quantization | None"]:
    """Check the inputs; compile `cell` if it is a Surrogate or a path; resolve `quantize` (True = paper levels)."""
    if not isinstance(cell, CellModel):
        cell = CellModel.from_surrogate(cell)
    check_inputs(q, k, v, tile, window)
    return cell, Quantization() if quantize is True else (quantize or None)


def _elementwise(q: torch.Tensor, kernel: str | None):
    """How a polynomial transfer runs: one Triton kernel each way where `use_triton` allows, one compiled CPU pass
    where `compiled_pass_applies`, else torch."""
    if use_triton(q, None, kernel):
        from .transfer_kernel import FusedTransfer

        return FusedTransfer.apply
    if compiled_pass_applies(q, kernel):
        from .compiled_pass import CompiledTransfer

        return CompiledTransfer.apply
    return ElementwiseTransfer.apply


@functools.cache
def compiled_available(module: str) -> bool:
    """Whether a compiled CPU module of this package (numba) loads: numba installed, importable, able to cache."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        importlib.import_module(f"{__package__}.{module}")  # compiles nothing yet; numba checks its cache location
    except (ImportError, RuntimeError):
        return False
    return True


def compiled_pass_applies(q: torch.Tensor, kernel: str | None) -> bool:
    """Whether the transfers and the parallel pass on unvaried cells (`converted_attention`) run compiled on the CPU
    (`compiled_pass.py`): kernel "auto", float32 CPU tensors, numba available."""
    return (kernel_choice(kernel) == "auto" and q.device.type == "cpu" and q.dtype == torch.float32
            and compiled_available("compiled_pass"))


def hardware_query(q, cell: CellModel, quantize: Quantization | None, kernel: str | None = None) -> torch.Tensor:
    """The query's transfer of `hardware_inputs` alone: q clamped (and quantized) to [0, 1]."""
    return _elementwise(q, kernel)(q, transfers(cell, quantize, False, False)[0])


def hardware_inputs(q, k, v, cell: CellModel, quantize: Quantization | None, linear: bool,
                    linear_backward: bool, kernel: str | None = None, aged: AgedExpansion | None = None):
    """Clamp (and quantize) q to [0, 1] and k, v to the stored range; return q, f(k), g(v), with the terms of
    `aged` stacked in front of f(k) and g(v) where given. Where `use_triton` allows (`kernel`), each polynomial
    transfer runs as one Triton kernel each way (`transfer_kernel.FusedTransfer`)."""
    apply = _elementwise(q, kernel)
    query, key, value = transfers(cell, quantize, linear, linear_backward, aged)
    if aged is not None:
        tabulated = TabulatedTransfer.apply
        if compiled_pass_applies(q, kernel):
            from .compiled_pass import CompiledTabulated

            tabulated = CompiledTabulated.apply
        return apply(q, query), tabulated(k, key), tabulated(v, value)
    return apply(q, query), apply(k, key), apply(v, value)


def converted_attention(qs, ks, vs, cell: CellModel, quantization: Quantization | None, terms: DecayTerms, *,
                        linear: bool, linear_backward: bool, tile: int, window: int | None,
                        execution: Execution = Execution(), c2p: C2P = C2P()) -> torch.Tensor:
    """`hardware_inputs` then `tiled_attention` on q, k, v before their converters (`quantization`; the readout's
    steps from it too); where `compiled_pass_applies`, both run in one compiled CPU pass that keeps only these
    unconverted inputs for the backward pass."""
    out_steps = quantization.out_steps if quantization else 0
    if not compiled_pass_applies(qs, execution.kernel):
        qh, fk, fv = hardware_inputs(qs, ks, vs, cell, quantization, linear, linear_backward, execution.kernel,
                                     terms.aged)
        return tiled_attention(qh, fk, fv, cell, decay=terms.tables, tile=tile, window=window, out_steps=out_steps,
                               execution=execution, c2p=c2p)
    from .compiled_pass import CompiledAttention, Converted

    b, h, t, _ = qs.shape
    padded, ring = ring_size(t, tile, window)
    table = term_tables(terms.tables, 1 if terms.aged is None else len(terms.aged.values), ring, cell, qs.dtype,
                        qs.device)
    geometry = Geometry(tile, ring, padded, tile, cell.offset, out_steps, full_scale=c2p.full_scale, peak=c2p.peak)
    converted = Converted(*transfers(cell, quantization, linear, linear_backward, terms.aged), h, padded)
    out = CompiledAttention.apply(qs, ks, vs, c2p.gain, head_rows(c2p.threshold, b, h, qs), table, geometry,
                                  converted, execution.chunk_elements)
    return out[:, :t].reshape(b, h, t, out.shape[-1])


def gaincell_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cell, *, decay=None, tile: int = 64,
                       window: int | None = None, quantize: bool | Quantization = False, linear: bool = False,
                       linear_backward: bool = False, execution: Execution = Execution(),
                       threshold: torch.Tensor | None = None) -> torch.Tensor:
    """Gain-cell attention on hardware-domain tensors.

    q: (B, H, T, D) read pulse widths as fractions of T_max; k, v: (B, H_kv, T, D) stored volts (clamped
    to the cell's stored range; H_kv divides H, grouped-query heads share arrays). `cell`: a CellModel, a
    Surrogate or a surrogate path. `decay`: None, a rate per step or a table by age (the product form),
    "surrogate" (the circuit's aged-voltage decay) or an `AgedExpansion` (see `decay_terms`).
    `window`: ring size (a multiple of `tile`; None = the whole sequence). `quantize`: True for the paper's
    levels or a `Quantization`. `linear`: the least-squares line instead of the fitted curve. `execution`: the
    chunk size and the implementation, "auto" / "triton" / "torch" (see `use_triton`). `threshold`: each query
    head's C2P threshold (H,) above the cell's offset (None: 0).
    Returns (B, H, T, D) in readout units: the sum over sub-tiles of each tile's [-1, 1] readout.
    """
    cell, quantization = prepare(q, k, v, cell, tile, window, quantize)
    terms = decay_terms(decay, ring_size(q.shape[2], tile, window)[1], cell, q.dtype, q.device, window)
    return converted_attention(q, k, v, cell, quantization, terms, linear=linear, linear_backward=linear_backward,
                               tile=tile, window=window, execution=execution, c2p=C2P(threshold))


KERNEL_CHOICES = ("auto", "triton", "torch")


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernel_choice(kernel: str | None) -> str:
    """`kernel`, or where None the GAINCELL_KERNEL environment variable, else "auto"; one of KERNEL_CHOICES."""
    choice = kernel if kernel is not None else os.environ.get("GAINCELL_KERNEL", "auto")
    if choice not in KERNEL_CHOICES:
        name = "kernel" if kernel is not None else "GAINCELL_KERNEL"
        raise ConfigError(name, f"must be one of {', '.join(KERNEL_CHOICES)}; got {choice!r}")
    return choice


def use_triton(q: torch.Tensor, tile: int | None, kernel: str | None = None) -> bool:
    """Whether the parallel pass (for this `tile`; None: the element-wise transfers) runs the fused Triton
    kernels (`kernel.py`) rather than the torch path below.

    `kernel` (default: the GAINCELL_KERNEL environment variable, else "auto"): "auto" uses the kernel on CUDA
    tensors when triton is installed and the case is supported; "triton" insists (an error says why it
    cannot); "torch" never uses it. The torch path is the reference the kernel is tested against."""
    choice = kernel_choice(kernel)
    if choice == "torch" or (choice == "auto" and not q.is_cuda):
        return False
    if not triton_installed():
        if choice == "auto":
            return False
        raise ConfigError("kernel", "'triton' needs the triton package (pip install triton)")
    from . import kernel as fused

    reason = fused.supports(q, tile)
    if reason is not None and choice == "triton":
        raise ConfigError("kernel", f"the Triton kernel cannot run this case: {reason}")
    return reason is None


def tiled_attention(q, fk, fv, cell: CellModel, *, decay, tile: int, window: int | None, out_steps: int,
                    execution: Execution = Execution(), cells: StageCells | None = None,
                    c2p: C2P = C2P()) -> torch.Tensor:
    """The parallel pass on q (0..1) and the already evaluated multiplies f(k), g(v), each (B, H_kv, T, D) or
    with the terms of an aged-voltage decay in front (terms, B, H_kv, T, D); `decay`: their tables (terms,
    ring) or a product form for one term (see `decay_table_for`). `execution`: the chunk size and the
    implementation (see `use_triton`). `cells`: per-cell variation and read noise with arrays of
    (B x H, padded length, ...) (torch path only: the Triton kernel has one decay table and one offset for every
    cell). `c2p`: the heads' C2P thresholds and gains, the reference (offset or each query's peak) and the full scale."""
    q = c2p.amplified(q)
    b, h, t, d = q.shape
    padded, ring = ring_size(t, tile, window)
    fk, fv = (expand_kv(as_terms(x), h) for x in (fk, fv))
    table = term_tables(decay, len(fk), ring, cell, q.dtype, q.device)
    kernel, chunk_elements = execution.kernel, execution.chunk_elements
    threshold, peak, full_scale = c2p.threshold, c2p.peak, c2p.full_scale
    if peak and (cells is not None or full_scale != 1.0):
        raise ConfigError("c2p_reference", "'peak' runs without per-cell variation and with saturating converters")
    if (cells is not None or full_scale != 1.0 or peak) and kernel == "triton":
        raise ConfigError("kernel", "per-cell variation, read noise and unsaturated converters run on the torch path "
                                    "only (the Triton kernel has one decay table, one converter offset for all cells "
                                    "and the converters' full scale, and its C2P reference is the offset); use "
                                    "'auto' or 'torch'")
    columns = fv.shape[-1]  # the values' columns (one more than d with a reference column)
    if columns != d and kernel == "triton":
        raise ConfigError("kernel", "the Triton kernel reads as many value columns as query columns; a reference "
                                    "column runs on the torch path ('auto' or 'torch')")
    if cells is None and full_scale == 1.0 and not peak and columns == d and use_triton(q, tile, kernel):
        from .kernel import fused_tiled_attention

        terms = len(fk)
        out = fused_tiled_attention(q.reshape(b * h, t, d), fk.reshape(terms, b * h, t, d),
                                    fv.reshape(terms, b * h, t, d), table, tile=tile, ring=ring, offset=cell.offset,
                                    out_steps=out_steps, threshold=None if threshold is None else head_rows(threshold, b, h, q))
        return out.view(b, h, t, d)
    span = min(padded, ring + tile)
    width = len(fk) * b * h * tile * span  # elements of one query tile's scores and pulses over all terms
    tiles_per_chunk = max(1, chunk_elements // max(1, width))  # query tiles per chunk
    rows = max(1, min(b * h, chunk_elements // (len(fk) * tile * span)))  # when one query tile is already too much
    geometry = Geometry(tile, ring, padded, min(padded, tiles_per_chunk * tile), cell.offset, out_steps, rows,
                        full_scale, peak)

    def flat(x):  # (..., B, H, T, D) -> (..., B*H, padded, D)
        x = x.reshape(*x.shape[:-4], b * h, t, x.shape[-1])
        return torch.nn.functional.pad(x, (0, 0, 0, padded - t)) if padded > t else x.contiguous()

    out = _TiledAttention.apply(flat(q), flat(fk), flat(fv), table, head_rows(threshold, b, h, q), geometry, cells)
    return out[:, :t].reshape(b, h, t, columns)


def head_rows(threshold: torch.Tensor | None, batch: int, heads: int, like: torch.Tensor) -> torch.Tensor:
    """A per-head C2P threshold (H,) as one value per (batch x head) row; zeros for None."""
    if threshold is None:
        return like.new_zeros(batch * heads)
    return threshold.to(like.dtype).expand(batch, heads).reshape(batch * heads)

"""Decoding one token at a time: the ring buffer of a layer's stored keys and values, and one query against it.

`RingCache` holds what the K and V arrays hold: the stored voltages the DACs wrote (B, H_kv, slots, D), and
their transfers f(k), g(v) ((terms,) B, H_kv, slots, D), computed once when a token is written (a stored
voltage does not change; its age enters through the decay table at read time). `decode_step` reads the ring
with one query token per head; the query heads that share a kv head (grouped-query attention) read the same
arrays without copying them.
"""
from __future__ import annotations

import torch

from .cellmodel import AgedExpansion, CellModel
from .decay import as_terms
from .functional import _stage_forward, hardware_inputs, hardware_query, head_rows, use_triton
from .geometry import Geometry
from .options import C2P
from .transfers import Quantization, level_index, level_voltages
from .varied import StageCells


class RingCache:
    """Decoding state of one layer: its ring of `slots` slots and each slot's write step. In the "transfers" form
    (the torch and Triton decodes) it holds the stored k, v voltages (B, H_kv, slots, D) and their transfers f(k),
    g(v) ((terms,) B, H_kv, slots, D); in the "levels" form (`compiled`, the compiled CPU step, `level_decode.py`)
    each cell's DAC level index (uint8, `k_level`, `v_level`). The form is chosen at the ring's first write."""

    def __init__(self, slots: int):
        self.slots = slots
        self.compiled = False
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.fk: torch.Tensor | None = None  # f(k) of every slot, (B, H_kv, slots, D) or (terms, ...)
        self.fv: torch.Tensor | None = None
        self.k_level: torch.Tensor | None = None
        self.v_level: torch.Tensor | None = None
        self.level_values: tuple[torch.Tensor, torch.Tensor] | None = None  # f, g of each DAC level ((terms,) levels)
        self.step_inputs: tuple | None = None  # what the compiled step reads of its layer (`level_decode.py`)
        self.made_for: tuple | None = None  # the layer's mode, converters and decay the levels form serves
        self.write_step = torch.full((slots,), -1, dtype=torch.long)
        self.next_step = 0

    def write(self, k: torch.Tensor, v: torch.Tensor, fk: torch.Tensor | None = None,
              fv: torch.Tensor | None = None) -> None:
        """Store tokens (B, H_kv, n, D) at the next steps; slot = step mod slots (the oldest is overwritten).
        fk, fv: their transfers f(k), g(v) ((terms,) B, H_kv, n, D), kept beside them; in the levels form k, v
        are the level indices."""
        names = ("k_level", "v_level") if self.compiled else ("k", "v", "fk", "fv")
        n = k.shape[-2]
        keep = min(n, self.slots)
        steps = torch.arange(self.next_step + n - keep, self.next_step + n, device=k.device)
        slots = steps % self.slots
        for name, x in zip(names, (k, v, fk, fv)):
            if x is not None:
                if getattr(self, name) is None:
                    setattr(self, name, x.new_zeros(*x.shape[:-2], self.slots, x.shape[-1]))
                getattr(self, name)[..., slots, :] = x[..., n - keep:, :]
        self.write_step = self.write_step.to(k.device)
        self.write_step[slots] = steps
        self.next_step += n

    def ages(self, now: int) -> torch.Tensor:
        """Age in tokens of every slot at step `now` (negative where empty)."""
        return torch.where(self.write_step >= 0, now - self.write_step, torch.full_like(self.write_step, -1))


def ring_level_values(cache: RingCache, qs, cell: CellModel, quantization: Quantization, linear: bool,
                      kernel: str | None, aged: AgedExpansion | None) -> tuple[torch.Tensor, torch.Tensor]:
    """f, g of each of the DAC's levels ((terms,) levels), computed at the ring's first use and kept."""
    if cache.level_values is None:
        voltages = level_voltages(quantization.kv_levels, *cell.stored_range_v, qs)
        cache.level_values = hardware_inputs(qs, voltages, voltages, cell, quantization, linear, False, kernel,
                                             aged)[1:]
    return cache.level_values


def write_tokens(cache: RingCache, qs, k, v, cell: CellModel, quantization: Quantization | None, linear: bool,
                 kernel: str | None, aged: AgedExpansion | None) -> torch.Tensor:
    """Write the stored voltages k, v (B, H_kv, n, D; clamped and quantized) and their transfers (or, in the
    levels form, their level indices) into the ring; returns the hardware q of qs. With quantized k, v the
    transfers of the DAC's few levels are computed once per ring (the same transfers of the same voltages) and
    each token's are looked up by its level."""
    levels = quantization.kv_levels if quantization else 0
    if not levels:
        qh, fk, fv = hardware_inputs(qs, k, v, cell, quantization, linear, False, kernel, aged)
        cache.write(k, v, fk, fv)
        return qh
    indices = [level_index(x, levels, *cell.stored_range_v) for x in (k, v)]
    if cache.compiled:
        cache.write(*(index.to(torch.uint8) for index in indices))
    else:
        values = ring_level_values(cache, qs, cell, quantization, linear, kernel, aged)
        cache.write(k, v, *(table[..., index] for index, table in zip(indices, values)))
    return hardware_query(qs, cell, quantization, kernel)


def decode_step(q, fk_ring, fv_ring, ages, table, cell: CellModel, *, tile: int, out_steps: int,
                cells: StageCells | None = None, c2p: C2P = C2P(), kernel: str | None = None) -> torch.Tensor:
    """One query token against a ring buffer. q (B, H, 1, D); fk_ring, fv_ring ((terms,) B, H_kv, slots, D) in
    slot order, H_kv dividing H (the H / H_kv query heads of a group read its arrays); ages (slots,) in tokens,
    negative for empty slots; table: (terms, ages) or one product table (ages,); `cells` (only with H_kv = H)
    with arrays (B x H, slots, ...) in slot order. Same arithmetic as the parallel pass; with one query every
    slot has one age, so the terms fold into the arrays a cell of that age reads (sum_r f_r(k) d_r(age)), and
    each stage is one product of the physical pulses with them. Only the tiles holding a token are read (the
    ring fills from slot 0). `c2p`: the heads' C2P thresholds, the reference (the cell's offset or the query's
    peak score, `functional.peak_reference`), the gains and the full scale, as in `functional.tiled_attention`.
    `kernel` as in `functional.use_triton`: where it allows, one fused Triton kernel runs the step
    (`decode_kernel.py`; not with `cells` or unsaturated converters)."""
    q = c2p.amplified(q)
    b, h, _, d = q.shape
    table = table if table.dim() == 2 else table[None]
    length, kv_heads = table.shape[1], fk_ring.shape[-3]
    group = h // kv_heads
    filled = -(-int((ages >= 0).sum()) // tile) * tile  # the ring's slots in use, whole tiles
    fk_ring, fv_ring = as_terms(fk_ring), as_terms(fv_ring)
    valid = (ages >= 0) & (ages < length)

    def by_age(values):  # (n, length) -> (n, slots), zero at empty slots
        return torch.where(valid, values[:, ages.clamp(0, length - 1)], values.new_zeros(()))

    shift = head_rows(c2p.threshold, b, h, q)  # each query head's own C2P threshold
    if cells is None and c2p.full_scale == 1.0 and use_triton(q, tile, kernel):
        from .decode_kernel import fused_decode_step

        return fused_decode_step(q.reshape(b * kv_heads, group, d), fk_ring.flatten(1, 2), fv_ring.flatten(1, 2),
                                 by_age(table), valid, shift, tiles=filled // tile, tile=tile, offset=cell.offset,
                                 out_steps=out_steps, peak=c2p.peak).view(b, h, 1, fv_ring.shape[-1])
    fk_ring, fv_ring, slots = fk_ring[..., :filled, :], fv_ring[..., :filled, :], filled
    decay = by_age(table)[:, None, :filled, None]  # (terms, 1, slots, 1)
    aged_k, aged_v = ((x.reshape(len(x), b * kv_heads, slots, x.shape[-1]) * decay).sum(0, keepdim=True)
                      for x in (fk_ring, fv_ring))
    geometry = Geometry(tile, slots, slots, 1, cell.offset, out_steps, full_scale=c2p.full_scale, peak=c2p.peak)
    if cells is not None:
        cells = cells.chunk(slice(None), slice(0, slots), by_age(cells.log_table[None, :length])[:, :filled], (0, 0))
    out = _stage_forward(q.reshape(b * kv_heads, group, d), aged_k, aged_v, valid[:filled].to(q.dtype)[None, None],
                         geometry.physical_tiles(0, slots // tile), geometry, cells=cells,
                         threshold=shift.view(b * kv_heads, group, 1))[0]
    return out.view(b, h, 1, fv_ring.shape[-1])

"""`attention_internals`: the stage-1 scores, C2P pulses, per-tile readouts and output of a small case, for
inspection, from the same arithmetic as the parallel pass (`functional._stage_forward`)."""
from __future__ import annotations

import torch

from .decay import as_terms, decay_terms
from .functional import _stage_forward, expand_kv, hardware_inputs, head_rows, prepare, ring_size
from .geometry import Geometry, chunk_decay
from .options import C2P
from .transfers import Quantization


def attention_internals(q, k, v, cell, *, decay=None, tile: int = 64, window: int | None = None,
                        quantize: bool | Quantization = False, linear: bool = False,
                        c2p: C2P = C2P()) -> dict[str, torch.Tensor]:
    """For inspection of small cases: the stage-1 score S = sum_r (q . f_r(k)) d_r (in C2P saturation units),
    the C2P output phi and the output, each (B, H, T, T) or (B, H, T, D), and the per-tile readouts before
    their clip and quantizer (tiles, B, H, T, D), from the same arithmetic as the fast path; `decay` as in
    `gaincell_attention`; `c2p`: the heads' C2P thresholds and gains (S is the amplified score) and the reference (with
    the peak reference, S is counted from it), as in `tiled_attention`."""
    cell, quantization = prepare(q, k, v, cell, tile, window, quantize)
    b, h, t, d = q.shape
    padded, ring = ring_size(t, tile, window)
    terms = decay_terms(decay, ring, cell, q.dtype, q.device, window)
    qh, fk, fv = hardware_inputs(q, k, v, cell, quantization, linear, False, "torch", terms.aged)
    qh = c2p.amplified(qh)
    threshold, peak = c2p.threshold, c2p.peak
    geometry = Geometry(tile, ring, padded, padded, cell.offset, quantization.out_steps if quantization else 0,
                        peak=peak)
    pad = (0, 0, 0, padded - t)

    def flat(x):  # (..., B, H(_kv), T, D) -> (..., B*H, padded, D)
        x = expand_kv(x, h)
        return torch.nn.functional.pad(x.reshape(*x.shape[:-4], b * h, t, d), pad)

    with torch.no_grad():
        first, last = geometry.key_tiles(0, padded)
        out, pre, _, readouts = _stage_forward(flat(qh), flat(as_terms(fk)), flat(as_terms(fv)),
                                        chunk_decay(terms.tables, geometry, 0, padded, first, last),
                                        geometry.physical_tiles(first, last), geometry, keep=True,
                                        threshold=head_rows(threshold, b, h, q))
    shift = head_rows(threshold, b, h, q).view(b, h, 1, 1)
    pre = pre.view(b, h, padded, padded)[:, :, :t, :t]
    tiles = torch.stack([a.view(b, h, padded, d)[:, :, :t] for a in readouts.values()])
    return {"S": pre + (0.0 if peak else cell.offset) + shift, "phi": pre.clamp(0.0, 1.0), "output": out.view(b, h, padded, d)[:, :, :t],
            "readouts": tiles}

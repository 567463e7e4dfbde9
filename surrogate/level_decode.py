"""The decode step compiled for the CPU (numba): one token through a layer's whole decode in one call.

With the DACs' levels on, every stored k or v is one of `kv_levels` voltages, so the ring in its "levels" form
(`decoding.RingCache`) keeps each cell's level index (uint8), and each level's transfer at each age is one table,
computed once per ring: sum_r f_r(level) d_r(age) and the same of g (ages, levels; the aged decay's terms folded
as the torch decode folds them per slot). A step takes the token's unscaled q, k, v: the per-head scalers, the
DACs' levels written at its slot (with the V array's reference column at the top level when the layer
normalizes), each filled slot's cells looked up by their level and the slot's age, and the query heads of the kv
group read them: the query's pulse widths (clamped, quantized, x each head's C2P gain), scores, the C2P reference
(the cell's offset or the query's peak score less one) and each head's threshold, pulses clamped to [0, 1], each
tile's readout clamped to [-1, 1] and quantized, summed over the tiles, divided by the reference column's, and
the output scaler. The arithmetic of `GainCellAttention`'s torch decode on the same values, its converters
rounding op for op; the dot products sum in another order, so a readout on a quantizer boundary may move by a
level.

numba is imported with this module (`decoding.compiled_step_applies` says where it runs); the functions compile on
first use and numba caches them on disk.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from gaincell.errors import ConfigError, GaincellError

from .decoding import ring_level_values

# The converters round as the torch path does, op for op (no fused multiply-adds); the scores' dot products may
# reassociate and fuse to vectorize. No assumption about infinities (the peak's -inf).
exact = numba.njit(cache=True, nogil=True)
fast = numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)


# The settings array the step takes (float64: each rounds to the float32 the torch path uses): the stored range
# low, high (volts) and step of the k, v DACs, their levels, the query's levels and the readout's steps (0: exact),
# the cell's C2P offset, whether the reference follows the peak score, the tile (slots per array) and whether
# the readouts are divided by a reference column's.
# Rows of the per-head array the step takes (H columns; the k, v scalers' first H_kv)
Q_A, Q_B, K_A, K_B, V_A, V_B, OUT_A, OUT_B, GAIN, THRESHOLD = range(10)


@exact
def _level(y, low, high, step):
    """The index of the level the DAC writes for y: clamped to [low, high] (not a number: low), rounded half to
    even."""
    y = min(y, high) if y >= low else low
    return np.uint8(np.rint((y - low) / step))


@exact
def _write(k, v, k_ring, v_ring, slot, heads, settings):
    """The levels of the scaled k, v (B, H_kv, D) into the rings' `slot` (and the reference column's top level);
    False if a scaled value was not a number."""
    low, high, step = np.float32(settings[0]), np.float32(settings[1]), np.float32(settings[2])
    numbers = True
    for b in range(k.shape[0]):
        for g in range(k.shape[1]):
            for d in range(k.shape[2]):
                y = k[b, g, d] * heads[K_A, g] + heads[K_B, g]
                w = v[b, g, d] * heads[V_A, g] + heads[V_B, g]
                numbers &= y == y and w == w
                k_ring[b, g, slot, d] = _level(y, low, high, step)
                v_ring[b, g, slot, d] = _level(w, low, high, step)
            if v_ring.shape[3] > v.shape[2]:
                v_ring[b, g, slot, v.shape[2]] = np.uint8(settings[3] - 1)
    return numbers


@exact
def _filled(written, now, ages, tile):
    """Which slots of the filled tiles (the ring fills from slot 0) hold a token `ages` reaches, and their ages."""
    filled = 0
    for s in range(written.shape[0]):
        filled += written[s] >= 0
    filled = -(-filled // tile) * tile
    valid = np.zeros(filled, np.bool_)
    age = np.zeros(filled, np.int64)
    for s in range(filled):
        age[s] = now - written[s]
        valid[s] = written[s] >= 0 and age[s] < ages
    return valid, age


@exact
def _queries(q, first, heads, q_levels):
    """The pulse widths of query heads first .. first + G - 1 (q: (G, D)): scaled, clamped to [0, 1], quantized,
    x each head's C2P gain."""
    out = np.empty(q.shape, np.float32)
    step = np.float32(1.0 / (q_levels - 1)) if q_levels else np.float32(1.0)
    for i in range(q.shape[0]):
        h = first + i
        for d in range(q.shape[1]):
            x = min(max(q[i, d] * heads[Q_A, h] + heads[Q_B, h], np.float32(0.0)), np.float32(1.0))
            if q_levels:
                x = np.rint(x / step) * step
            out[i, d] = x * heads[GAIN, h]
    return out


@fast
def _scores(queries, k_ring, valid, age, aged_k):
    """sum_d q_d (aged f(k))_d of each query (G, D) and slot of one kv head's ring (slots, D); 0 where empty.
    aged_k (ages, levels): each level's f(k) at each age."""
    scores = np.zeros((queries.shape[0], valid.shape[0]), np.float32)
    cells = np.empty(k_ring.shape[1], np.float32)
    for s in range(valid.shape[0]):
        if valid[s]:
            for d in range(k_ring.shape[1]):
                cells[d] = aged_k[age[s], k_ring[s, d]]
            for i in range(queries.shape[0]):
                total = np.float32(0.0)
                for d in range(k_ring.shape[1]):
                    total += queries[i, d] * cells[d]
                scores[i, s] = total
    return scores


@exact
def _shifts(scores, valid, threshold, offset, peak):
    """Each query's C2P reference (the offset, or its peak score over the slots it reads less one; 0 for none)
    and its head's threshold (G, 2)."""
    shifts = np.empty((scores.shape[0], 2), np.float32)
    for i in range(scores.shape[0]):
        reference = np.float32(offset)
        if peak:
            top = -np.inf
            for s in range(valid.shape[0]):
                if valid[s] and scores[i, s] > top:
                    top = scores[i, s]
            reference = np.float32(top - 1.0) if top > -np.inf else np.float32(0.0)
        shifts[i, 0], shifts[i, 1] = reference, threshold[i]
    return shifts


@exact
def _readouts(scores, shifts, v_ring, valid, age, aged_v, tile, out_steps, out):
    """out (G, D_v) = sum over tiles of each tile's readout sum_s phi_s (aged g(v))_s, clamped and quantized;
    phi = clamp(score - reference - threshold, 0, 1)."""
    group, dim_v = scores.shape[0], v_ring.shape[1]
    cells = np.empty(dim_v, np.float32)
    pulses = np.empty(group, np.float32)
    readout = np.empty((group, dim_v), np.float32)
    out[:] = 0.0
    for j in range(valid.shape[0] // tile):
        readout[:] = 0.0
        for s in range(j * tile, (j + 1) * tile):
            pulsed = False
            for i in range(group):
                pulse = min(max((scores[i, s] - shifts[i, 0]) - shifts[i, 1], np.float32(0.0)), np.float32(1.0))
                pulses[i] = pulse if valid[s] else np.float32(0.0)
                pulsed |= pulses[i] > 0.0
            if not pulsed:  # no query of the group pulses this key: its cells are not read
                continue
            for d in range(dim_v):
                cells[d] = aged_v[age[s], v_ring[s, d]]
            for i in range(group):
                if pulses[i] > 0.0:
                    for d in range(dim_v):
                        readout[i, d] += pulses[i] * cells[d]
        for i in range(group):
            for d in range(dim_v):
                a = min(max(readout[i, d], np.float32(-1.0)), np.float32(1.0))
                if out_steps:
                    a = np.rint(a * np.float32(out_steps)) / np.float32(out_steps)  # in float32, as torch
                out[i, d] += a


@exact
def _output(readout, normalized, out_steps, a, b, out):
    """out (D) of one query's readouts (D_v): divided by the reference column's (at least one readout step) when
    `normalized`, then the output scaler a x + b."""
    dim = out.shape[0]
    reference = np.float32(1.0)
    if normalized:
        reference = max(readout[dim], np.float32(1.0 / out_steps) if out_steps else np.float32(1e-6))
    for d in range(dim):
        y = readout[d] / reference if normalized else readout[d]
        out[d] = y * a + b


@exact
def _step(q, k, v, token, k_ring, v_ring, written, now, aged, heads, settings, out):
    """Token `token` of q (B, H, n, D), k, v (B, H_kv, n, D), written at step `now` and read -> out[:, :, token];
    False if its scaled k or v was not a number."""
    q_levels, out_steps, offset = int(settings[4]), int(settings[5]), np.float32(settings[6])
    peak, tile, normalized = settings[7] != 0, int(settings[8]), settings[9] != 0
    slot = now % written.shape[0]
    written[slot] = now
    numbers = _write(k[:, :, token], v[:, :, token], k_ring, v_ring, slot, heads, settings)
    group = q.shape[1] // k_ring.shape[1]
    valid, age = _filled(written, now, aged.shape[1], tile)
    readouts = np.empty((group, v_ring.shape[3]), np.float32)
    for b in range(q.shape[0]):
        for g in range(k_ring.shape[1]):
            first = g * group
            queries = _queries(q[b, first:first + group, token], first, heads, q_levels)
            scores = _scores(queries, k_ring[b, g], valid, age, aged[0])
            shifts = _shifts(scores, valid, heads[THRESHOLD, first:first + group], offset, peak)
            _readouts(scores, shifts, v_ring[b, g], valid, age, aged[1], tile, out_steps, readouts)
            for i in range(group):
                _output(readouts[i], normalized, out_steps, heads[OUT_A, first + i], heads[OUT_B, first + i],
                        out[b, first + i, token])
    return numbers


def decode_layer(layer, q, k, v, cache, linear: bool) -> torch.Tensor:
    """`GainCellAttention` `layer`'s decode of tokens q (B, H, n, D), k, v (B, H_kv, n, D) (unscaled, float32)
    through `cache` (a `decoding.RingCache` in its levels form), token by token; forward only (decoding needs no
    gradient). What the step reads of the layer (its levels' transfers at each age, its scalers and C2P settings)
    is prepared once per ring and again when the scalers' or C2P's values change; the ring serves the layer's
    mode, converters and decay and the batch of its first token."""
    scalers = layer.scalers().values()
    if any(s.track_statistics or s.record_batch for s in scalers):
        raise ConfigError("cache", "decodes through the compiled step, which tracks no scaler statistics: track "
                                   "them on a parallel pass or decode with Execution(kernel='torch')")
    _check_ring(layer, q, k, v, cache)
    values = torch.cat([x for s in scalers for x in (s.a, s.b)] + [layer.c2p_gain, layer.c2p_threshold]).detach()
    prepared = cache.step_inputs
    if prepared is None or prepared[0] != (layer.gains, layer.thresholds) or not torch.equal(prepared[1], values):
        cache.step_inputs = prepared = ((layer.gains, layer.thresholds), values.clone(),
                                        *_step_inputs(layer, cache, q, linear))
    rings = tuple(x.numpy() for x in (cache.k_level, cache.v_level, cache.write_step))
    q, k, v = q.detach().numpy(), k.detach().numpy(), v.detach().numpy()
    out = np.empty(q.shape, np.float32)
    for token in range(q.shape[2]):
        if not _step(q, k, v, token, *rings, cache.next_step, *prepared[2:], out):
            raise GaincellError(f"a k or v that is not a number reached the DACs of {layer.extra_repr()} at step "
                                f"{cache.next_step}: the model's activations are not finite")
        cache.next_step += 1
    return torch.from_numpy(out)


def _check_ring(layer, q, k, v, cache) -> None:
    """Make the rings at the ring's first token; refuse inputs the ring was not made for (another batch, dtype,
    mode, converters or decay: a new ring is needed)."""
    made_for = (layer.mode, layer.quantize, layer.quantization, layer.saturate, layer.decay, layer.cell.token_period_s)
    if cache.k_level is None:  # V with the reference column, if any
        columns = k.shape[-1] + int(layer.normalized)
        cache.write(k.new_zeros(*k.shape[:2], 0, k.shape[-1], dtype=torch.uint8),
                    k.new_zeros(*k.shape[:2], 0, columns, dtype=torch.uint8))
    if cache.made_for is None:
        cache.made_for = made_for
    if any(x.dtype != torch.float32 for x in (q, k, v)):
        raise ConfigError("q", f"the compiled decode step takes float32 q, k, v; got {q.dtype}, {k.dtype}, {v.dtype}")
    if cache.k_level.shape[:2] != k.shape[:2] or cache.made_for != made_for:
        raise ConfigError("cache", f"was made for a batch of {cache.k_level.shape[0]} and the layer's mode, "
                                   f"converters and decay of its first token; got a batch of {k.shape[0]} or a "
                                   f"changed layer: decode through a new cache (layer.new_cache())")


def _step_inputs(layer, cache, q, linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrays the step reads of `layer`: each DAC level's f(k), g(v) at each age of the ring, sum_r f_r(level)
    d_r(age) (2, ages, levels); the per-head rows Q_A .. THRESHOLD (10, H); the settings array."""
    quantization, c2p = layer._quantization(), layer._c2p()
    terms = layer.decay_terms(cache.slots, q)
    tables = terms.tables.reshape(-1, terms.tables.shape[-1])
    levels = ring_level_values(cache, q, layer.cell, quantization, linear, layer.execution.kernel, terms.aged)
    aged = torch.stack([(x.reshape(len(tables), 1, -1) * tables[:, :, None]).sum(0) for x in levels])
    heads = np.zeros((10, layer.heads), np.float32)
    for row, x in enumerate(x for s in layer.scalers().values() for x in (s.a, s.b)):
        heads[row, :len(x)] = x.detach().numpy()
    heads[GAIN] = 1.0 if c2p.gain is None else c2p.gain.detach().numpy()
    heads[THRESHOLD] = 0.0 if c2p.threshold is None else c2p.threshold.detach().numpy()
    low, high = layer.cell.stored_range_v
    settings = np.array([low, high, (high - low) / (quantization.kv_levels - 1), quantization.kv_levels,
                         quantization.q_levels, quantization.out_steps, layer.cell.offset, c2p.peak, layer.tile,
                         layer.normalized], np.float64)
    return aged.float().numpy(), heads, settings

"""The stage arithmetic of `functional` with per-cell variation and read noise (`StageCells`).

Per cell (K and V arrays, every key slot s and head-dim column d) the retention multiplies the decay exponent by
rho[s, d], d_cell(age) = d(age) ** rho = d(age) * exp((rho - 1) ln d(age)), which is expanded as
    sum_n (ln d)^n / n! * (rho - 1)^n
so that stage 1 stays matrix products, one per term:
    x[t, s] = d(t - s) * sum_n (ln d(t - s))^n / n! * sum_d q[t, d] f[s, d] (rho_k[s, d] - 1)^n
and stage 2 likewise with the V cells. `series_terms` picks the number of terms that bounds the truncation
error by SERIES_TOLERANCE (absolute, on a decay factor); a spread too wide for MAX_TERMS terms is evaluated
exactly, cell by cell (a (rows, queries, keys, head dim) block of factors at a time: about head-dim times the
work of the series). Each converter column s has its own offset. Read noise
(white, integrated over each cell's pulse) adds to every column charge a Gaussian of rms
noise * sqrt(sum of the pulse fractions read into it): stage 1 per (query, key column), stage 2 per (query, tile,
head-dim row). Noise is drawn from a generator seeded per chunk, so the backward pass, which recomputes every
chunk, sees the same draws; it carries no gradient. Everything else (clamps, C2P, quantized readout) is as in
`functional._stage_forward`.

With the aged-voltage decay (several terms f_r(k) d_r(age), see `functional`) each term is contracted as above
with the same per-cell factor d_ref(age) ** (rho - 1), d_ref the decay of the reference level (`log_table`):
a cell whose retention differs from the nominal scales its products as the product form would. This is an
approximation (the exact per-cell form ages each cell's voltage on its own clock) that keeps the spread's
first-order size; the cell's multiply deviation is one more term, decaying as d_ref.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .transfers import readout_sum


SERIES_TOLERANCE = 1e-7
MAX_TERMS = 12
EXACT = -1  # `terms` value: evaluate every cell's decay factor (blocks of KEY_BLOCK keys) instead of the series
KEY_BLOCK = 32
SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True)
class StageCells:
    """Per-key cell deviations aligned with f(k), g(v) (rows = batch x heads, keys, head dim).

    k_exponent, v_exponent: rho - 1 of the K and V cells (rows, keys, D) or None; offset: converter offsets over
    q_sat (rows, keys) or None; k_noise (over q_sat) and v_noise (readout units): rms per cell and full pulse;
    noise_seed: this pass's draw; terms: the series' terms; log_table: ln of the reference level's decay by age
    (ring,); log_decay: ln of the chunk's decay (queries, keys)."""

    k_exponent: torch.Tensor | None
    v_exponent: torch.Tensor | None
    offset: torch.Tensor | None
    k_noise: float
    v_noise: float
    noise_seed: int
    terms: int
    log_table: torch.Tensor | None = None
    log_decay: torch.Tensor | None = None

    def chunk(self, rows: slice, keys: slice, log_decay: torch.Tensor, where: tuple[int, int]) -> "StageCells":
        """The part of the arrays for a chunk of rows and keys, its ln-decay matrix and its own noise seed."""
        def cut(x):
            return None if x is None else x[rows, keys]

        seed = (self.noise_seed + 0x9E3779B97F4A7C15 * (1 + where[0]) + 0xBF58476D1CE4E5B9 * (1 + where[1])) & SEED_MASK
        return replace(self, k_exponent=cut(self.k_exponent), v_exponent=cut(self.v_exponent), offset=cut(self.offset),
                       noise_seed=seed, log_decay=log_decay)

    @property
    def noisy(self) -> bool:
        return bool(self.k_noise or self.v_noise)


def series_terms(exponent_max: float, table: torch.Tensor) -> int:
    """Terms n = 1..N of the expansion of exp((rho - 1) ln d) whose remainder, d |x|^(N+1) / (N+1)! e^|x| with
    x = (rho - 1) ln d, stays below SERIES_TOLERANCE for every age in `table`; EXACT when that needs more than
    MAX_TERMS terms (the per-cell decay is then evaluated cell by cell)."""
    if exponent_max == 0:
        return 0
    table = table.detach().double().cpu()
    x = exponent_max * -torch.log(table.clamp_min(1e-300))
    bound = table * torch.exp(x) * x
    for terms in range(1, MAX_TERMS + 1):
        bound = bound * x / (terms + 1)
        if float(bound.max()) <= SERIES_TOLERANCE:
            return terms
    return EXACT


def multiply_deviation(stored: torch.Tensor, y0: float, coefficients: torch.Tensor) -> torch.Tensor:
    """sum_i delta_i (stored - y0)^i per cell: stored (B, H_kv, T, D), coefficients (H_kv, T, D, n)."""
    y = stored - y0
    result = coefficients[..., -1].expand_as(y)
    for i in range(coefficients.shape[-1] - 2, -1, -1):
        result = result * y + coefficients[..., i]
    return result


def _weights(log_decay: torch.Tensor, terms: int) -> list[torch.Tensor]:
    """(ln d)^n / n! for n = 1..terms."""
    weights, w = [], None
    for n in range(1, terms + 1):
        w = log_decay if w is None else w * log_decay / n
        weights.append(w)
    return weights


# The three contractions of a per-cell decayed product W[r, c, k, d] = exp(e[r, k, d] L[c, k]) (queries c, keys k,
# head dim d), e = rho - 1 (None: W = 1), evaluated by the series (`terms` >= 0) or cell by cell (EXACT).

def _blocks(keys: int):
    return (slice(i, min(i + KEY_BLOCK, keys)) for i in range(0, keys, KEY_BLOCK))


def _cell_weights(e, log_decay, block):
    return torch.exp(e[:, None, block, :] * log_decay[None, :, block, None])  # (R, C, block, D)


def contract_ck(a, b, e, log_decay, terms: int):
    """sum_d a[r, c, d] b[r, k, d] W -> (R, C, K)."""
    if e is not None and terms == EXACT:
        return torch.cat([torch.einsum("rcd,rckd->rck", a, b[:, None, block] * _cell_weights(e, log_decay, block))
                          for block in _blocks(b.shape[1])], dim=2)
    out = torch.bmm(a, b.transpose(1, 2))
    if e is None:
        return out
    power = b
    for w in _weights(log_decay, terms):
        power = power * e
        out = out + w * torch.bmm(a, power.transpose(1, 2))
    return out


def contract_cd(a, b, e, log_decay, terms: int):
    """sum_k a[r, c, k] b[r, k, d] W -> (R, C, D)."""
    if e is None:
        return torch.bmm(a, b)
    if terms == EXACT:
        return sum(torch.einsum("rck,rckd->rcd", a[:, :, block], b[:, None, block] * _cell_weights(e, log_decay, block))
                   for block in _blocks(b.shape[1]))
    out, power = torch.bmm(a, b), b
    for w in _weights(log_decay, terms):
        power = power * e
        out = out + torch.bmm(a * w, power)
    return out


def contract_kd(a, b, e, log_decay, terms: int):
    """sum_c a[r, c, k] b[r, c, d] W -> (R, K, D)."""
    out = torch.bmm(a.transpose(1, 2), b)
    if e is None:
        return out
    if terms == EXACT:
        return torch.cat([torch.einsum("rck,rckd->rkd", a[:, :, block], b[:, :, None] * _cell_weights(e, log_decay, block))
                          for block in _blocks(a.shape[2])], dim=1)
    factor = torch.ones_like(e)
    for w in _weights(log_decay, terms):
        factor = factor * e
        out = out + factor * torch.bmm((a * w).transpose(1, 2), b)
    return out


def _normal(generator, shape, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def varied_forward(q, fk, fv, decay, tiles: list[int], geometry, cells: StageCells, keep: bool = False,
                   threshold: torch.Tensor | None = None):
    """`functional._stage_forward` with `cells` (one chunk; fk, fv (terms, rows, keys, D), decay (terms, queries,
    keys)): out and, with keep, pre-clamp scores, pulses (terms, ...) and per-tile readouts."""
    generator = torch.Generator(device=q.device).manual_seed(cells.noise_seed) if cells.noisy else None
    e_k, log_decay = cells.k_exponent, cells.log_decay
    x = sum(contract_ck(q, f, e_k, log_decay, cells.terms) * d for f, d in zip(fk, decay))
    valid = (decay != 0).any(0)
    if cells.k_noise:
        read = q.sum(-1, keepdim=True).clamp_min(0).sqrt()
        x = x + cells.k_noise * read * _normal(generator, x.shape, x) * valid
    if geometry.offset:
        x = x - geometry.offset
    if cells.offset is not None:
        x = x - cells.offset[:, None, :]
    if threshold is not None:
        x = x - threshold.view(len(threshold), -1, 1)
    phi = x.clamp(0.0, geometry.full_scale)
    pulses = phi[None] * decay[:, None]
    tile = geometry.tile
    readouts: dict[int, torch.Tensor] = {}
    read_time: dict[int, torch.Tensor] = {}
    for i, physical in enumerate(tiles):
        columns = slice(i * tile, (i + 1) * tile)
        e_v, log_columns = _cut(cells.v_exponent, columns), log_decay[:, columns]
        part = sum(contract_cd(p[:, :, columns], g[:, columns], e_v, log_columns, cells.terms)
                   for p, g in zip(pulses, fv))
        readouts[physical] = readouts[physical] + part if physical in readouts else part
        if cells.v_noise:
            spent = (phi[:, :, columns] * valid[:, columns]).sum(-1, keepdim=True)
            read_time[physical] = read_time[physical] + spent if physical in read_time else spent
    if cells.v_noise:
        for physical, a in readouts.items():
            readouts[physical] = a + cells.v_noise * read_time[physical].sqrt() * _normal(generator, a.shape, a)
    return readout_sum(readouts.values(), geometry.full_scale, geometry.out_steps), (x if keep else None), pulses, readouts


def _cut(x, columns):
    return None if x is None else x[:, columns]


def varied_backward(q, fk, fv, decay, tiles: list[int], geometry, cells: StageCells, grad_out,
                    threshold: torch.Tensor | None = None):
    """Gradients of one chunk (dq, df(k), dg(v), d threshold), recomputed as in `functional._stage_backward`; the
    noise is the forward's (same seed) and passes no gradient."""
    _, pre, pulses, readouts = varied_forward(q, fk, fv, decay, tiles, geometry, cells, keep=True, threshold=threshold)
    tile = geometry.tile
    grad_phi = torch.zeros_like(pulses[0])
    grad_fv = torch.empty_like(fv)
    for i, physical in enumerate(tiles):
        columns = slice(i * tile, (i + 1) * tile)
        grad = grad_out * (readouts[physical].abs() <= geometry.full_scale)  # quantization: straight through
        e, log_decay = _cut(cells.v_exponent, columns), cells.log_decay[:, columns]
        for r in range(len(fv)):
            grad_phi[:, :, columns] += contract_ck(grad, fv[r, :, columns], e, log_decay, cells.terms) * decay[r, :, columns]
            grad_fv[r, :, columns] = contract_kd(pulses[r, :, :, columns], grad, e, log_decay, cells.terms)
    grad_signal = grad_phi * ((pre >= 0.0) & (pre <= geometry.full_scale))
    grad_q, grad_fk = torch.zeros_like(q), torch.empty_like(fk)
    for r in range(len(fk)):
        scaled = grad_signal * decay[r]
        grad_q += contract_cd(scaled, fk[r], cells.k_exponent, cells.log_decay, cells.terms)
        grad_fk[r] = contract_kd(scaled, q, cells.k_exponent, cells.log_decay, cells.terms)
    return grad_q, grad_fk, grad_fv, -grad_signal.sum((1, 2))


def log_table(table: torch.Tensor) -> torch.Tensor:
    """ln of a decay table (finite: factors of 0 give ln of the smallest positive float)."""
    return torch.log(table.clamp_min(torch.finfo(table.dtype).tiny))


SEED_STRIDE = 1_000_003


@dataclass
class CellDraws:
    """The standard-normal draws behind one layer's physical arrays, drawn in blocks of `tile` slots from
    generators seeded by (seed, block), so the cells of a slot are the same whatever the ring length (training
    and decoding see the same cells); a larger scale moves the same cells further. Standard-normal draws of one layer's arrays for `slots` ring slots: multiply (2, H_kv, slots, D, n),
    retention (2, H_kv, slots, D) for the K and V arrays, offset (H_kv, slots) for the K array's converters."""

    multiply: torch.Tensor
    retention: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def draw(cls, seed: int, kv_heads: int, slots: int, head_dim: int, coefficients: int, tile: int) -> "CellDraws":
        """Draws for slots 0 .. slots - 1, block by block of `tile` slots (each block from its own seed)."""
        parts = []
        for block in range(-(-slots // tile)):
            generator = torch.Generator().manual_seed((seed * SEED_STRIDE + block) % (1 << 63))
            parts.append((torch.randn(2, kv_heads, tile, head_dim, coefficients, generator=generator, dtype=torch.float64),
                          torch.randn(2, kv_heads, tile, head_dim, generator=generator, dtype=torch.float64),
                          torch.randn(kv_heads, tile, generator=generator, dtype=torch.float64)))
        multiply, retention, offset = (torch.cat(p, dim=axis).narrow(axis, 0, slots)
                                       for p, axis in zip(zip(*parts), (2, 2, 1)))
        return cls(multiply, retention, offset)

"""`GainCellAttention`: the torch module around `gaincell_attention` (scalers, modes, decoding cache).

The module maps an LLM's per-head q, k, v into the hardware domain with per-head affine scalers (q -> pulse-width
fraction, k and v -> stored volts), runs the functional core, and maps the readout back with a per-head output
scaler. Each scaler keeps an EMA of its output's per-head mean and std (the paper's target statistics) while
`track_statistics` is on.

Hardware: the tile (tokens per array), window and the converters' levels default to the cell's hardware
configuration (`gaincell.hardware`, stored in the surrogate); an explicit value overrides one for a study.

Modes: "nonlinear" (the fitted multiply), "linear" (its least-squares line: the paper's intermediate model),
"ideal" (plain causal, windowed softmax on the unscaled q, k, v: what the module replaces). Switches: `quantize`,
`decay`, `linear_backward` (forward with the fitted curve, backward with the line's gradient), `saturate` (off: the
C2P neither saturates nor the readout clips; torch path), `thresholds` and `gains` (off: every head's C2P at the
cell's offset, at gain 1, whatever `c2p_threshold`, `c2p_gain` hold). `quantization` sets the converters' levels,
0 for an exact one. The constructor takes `quantize`, `quantization` and `saturate` as one `Converters`, the chunk
size and implementation as an `Execution`, the variation below as a `CellVariation`.

Decoding: `cache = layer.new_cache()` then `layer(q, k, v, cache=cache)` token by token reproduces the parallel
pass; the cache is a ring of `window` slots holding the stored k, v voltages and each slot's write step (the token
clock converts steps to seconds for the retention model). Inside a language model the cache is attached as
`layer.decode_cache` (see `adapt.generate.ring_caches`), which the attention-interface function passes on.

Variation (off by default; needs a surrogate with a `variation` component): `variation_scale` > 0 gives each ring
slot x head-dim cell of the K and V arrays (per kv head, shared by a batch) a frozen draw of the fitted spread x the
scale - its multiply-coefficient deviation and retention factor - and each column's converter its offset, drawn
from `variation_seed` slot by slot (`varied.CellDraws`): a token in slot s meets the same cells in the parallel pass
and in decoding. `read_noise_scale` > 0 adds fresh read noise on every forward (`varied.py`). Both run on the torch
path at C2P gain 1; with both 0 the layer is unchanged. `configure_variation` sets them on every layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gaincell.errors import ConfigError

from .cellmodel import CellModel
from .decay import DecayTerms, decay_table_for, decay_terms
from .decoding import RingCache, decode_step, write_tokens
from .functional import (check_inputs, compiled_available, converted_attention, expand_kv, hardware_inputs,
                         kernel_choice, ring_size, tiled_attention)
from .naive import naive_pulses
from .options import C2P, CellVariation, Converters, Execution, float32_on_cpu
from .scalers import AffineScaler
from .transfers import Quantization, straight_through, transfers
from .varied import CellDraws, StageCells, log_table, multiply_deviation, series_terms

MODES = ("nonlinear", "linear", "ideal")
FROM_HARDWARE = "hardware"  # tile / window default: the cell's hardware configuration (rows per array, window)
MAX_TILE = 4096  # cells per array side (as `gaincell simulate array --rows/--cols`)
MAX_WINDOW = 1 << 20  # tokens one layer's ring holds (as `gaincell eval --context`)
C2P_GAIN_RANGE = (0.25, 8.0)  # integration capacitors from 4x to 1/8 of the characterized one


def is_count(value, high: int) -> bool:
    """An integer (not a bool) in 1 .. high."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high


def hardware_quantization(hardware) -> Quantization:
    """The converters' levels of a `gaincell.hardware.HardwareConfig`: query pulse widths, stored K/V, readout."""
    return Quantization(hardware.input_levels, hardware.stored_levels, hardware.readout_levels)


def compiled_step_available() -> bool:
    """Whether the compiled CPU decode step loads: numba installed, importable and able to compile (and cache)."""
    return compiled_available("level_decode")


class GainCellAttention(nn.Module):
    """Gain-cell attention for `heads` query heads of size `head_dim` (q (B, H, T, D); k, v (B, H_kv, T, D))."""

    def __init__(self, cell: CellModel, heads: int, head_dim: int, *, kv_heads: int | None = None,
                 tile: int | str = FROM_HARDWARE, window: int | str | None = FROM_HARDWARE, mode: str = "nonlinear",
                 decay: bool = True, linear_backward: bool = False, converters: Converters = Converters(),
                 execution: Execution = Execution(), variation: CellVariation = CellVariation()):
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        for name, value in (("heads", heads), ("head_dim", head_dim), ("kv_heads", kv_heads)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer; got {value!r}")
        if heads % kv_heads:
            raise ConfigError("kv_heads", f"must divide heads={heads}; got {kv_heads}")
        tile = cell.hardware.rows_per_tile if tile == FROM_HARDWARE else tile
        window = cell.hardware.window_tokens if window == FROM_HARDWARE else window
        quantization = (hardware_quantization(cell.hardware) if converters.quantization is None
                        else converters.quantization)
        if not is_count(tile, MAX_TILE):
            raise ConfigError("tile", f"must be an integer 1 .. {MAX_TILE}; got {tile!r}")
        if window is not None and (not is_count(window, MAX_WINDOW) or window < tile or window % tile):
            raise ConfigError("window", f"must be a multiple of the tile size {tile} up to {MAX_WINDOW} (or None); "
                                        f"got {window!r}")
        self.cell, self.heads, self.head_dim, self.kv_heads = cell, heads, head_dim, kv_heads
        self.tile, self.window, self.quantization = tile, window, quantization
        self.execution = execution  # chunk size and implementation of the transfers and parallel pass (use_triton)
        self.mode = mode
        self.quantize, self.decay, self.linear_backward = converters.quantize, decay, linear_backward
        self.saturate = converters.saturate
        self.thresholds = True
        self.gains = True
        middle = 0.5 * sum(cell.stored_range_v)
        self.q_scaler = AffineScaler(heads, 1.0, 0.5)
        self.k_scaler = AffineScaler(kv_heads, 1.0, middle)
        self.v_scaler = AffineScaler(kv_heads, 1.0, middle)
        self.out_scaler = AffineScaler(heads, 1.0, 0.0)
        # per query head, trained with the scalers: the C2P's comparator reference raised above the reference
        # (C2P saturation units, 0 as characterized) and its conversion gain (see `_gain`, 1 as characterized)
        self.c2p_threshold, self.c2p_gain = nn.Parameter(torch.zeros(heads)), nn.Parameter(torch.ones(heads))
        self.softmax_scale: float | None = None  # 'ideal' mode: SDPA's scale (None: 1/sqrt(head_dim))
        self.decode_cache: RingCache | None = None  # the cache a model's attention-interface call decodes through
        self._tables: dict = {}
        self._cells: dict = {}
        self.variation_seed = variation.seed
        self.variation_scale, self.read_noise_scale = variation.scale, variation.read_noise_scale

    @classmethod
    def from_surrogate(cls, path, heads: int, head_dim: int, *, token_period_s: float | None = None, layers: int = 1,
                       allow_extrapolation: bool = False, **options) -> "GainCellAttention":
        """Build from a surrogate file (or Surrogate); options as in the constructor. The token clock is the
        time of a token through `layers` layers of this one (unless `token_period_s` is given), its query heads
        reading each KV array in turn."""
        kv_heads = options.get("kv_heads") or heads
        cell = CellModel.from_surrogate(path, token_period_s=token_period_s, layers=layers,
                                        read_phases=max(1, heads // kv_heads), allow_extrapolation=allow_extrapolation)
        return cls(cell, heads, head_dim, **options)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}; got {value!r}")
        self._mode = value

    @property
    def variation_scale(self) -> float:
        return self._variation_scale

    @variation_scale.setter
    def variation_scale(self, value: float) -> None:
        self._variation_scale = self._checked_scale("variation_scale", value)

    @property
    def read_noise_scale(self) -> float:
        return self._read_noise_scale

    @read_noise_scale.setter
    def read_noise_scale(self, value: float) -> None:
        self._read_noise_scale = self._checked_scale("read_noise_scale", value)

    @property
    def variation_seed(self) -> int:
        return self._variation_seed

    @variation_seed.setter
    def variation_seed(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
            raise ConfigError("variation_seed", f"must be a non-negative integer below 2**62; got {value!r}")
        self._variation_seed = value

    def _checked_scale(self, name: str, value: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise ConfigError(name, f"must be a finite number >= 0 (0: off, 1: the fitted figure); got {value!r}")
        if value and (self.normalized or self.peak_reference):
            raise ConfigError(name, "is not modelled for normalization='reference-column' (its reference cells "
                                    "would need their own draws) nor c2p_reference='peak'; use the paper's settings")
        if value and self.cell.variation is None:
            raise ConfigError(name, f"needs a surrogate with a variation component; the one of cell {self.cell.name!r} "
                                    "has none (fit one from a Monte Carlo characterization: characterize --mc N)")
        return float(value)

    @property
    def varied(self) -> bool:
        """Whether variation or read noise is on."""
        return bool(self.variation_scale or self.read_noise_scale)

    def scalers(self) -> dict[str, AffineScaler]:
        return {"q": self.q_scaler, "k": self.k_scaler, "v": self.v_scaler, "out": self.out_scaler}

    def extra_repr(self) -> str:
        return (f"cell={self.cell.name}, heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"tile={self.tile}, window={self.window}, mode={self.mode}, quantize={self.quantize}, "
                f"decay={self.decay}" + ("" if self.saturate else ", saturate=False") + (f", variation_scale={self.variation_scale:g}, read_noise_scale="
                                         f"{self.read_noise_scale:g}, variation_seed={self.variation_seed}"
                                         if self.varied else ""))

    def decay_terms(self, length: int, like: torch.Tensor) -> DecayTerms:
        """The retention for ages 0..length-1 tokens (`functional.decay_terms`): the circuit's aged-voltage
        decay at the cell's token clock, or no decay when it is off."""
        key = ("terms", length, like.dtype, like.device, self.decay, self.cell.token_period_s)
        if key not in self._tables:
            self._forget_tables()
            self._tables[key] = decay_terms("surrogate" if self.decay else None, length, self.cell, like.dtype,
                                            like.device, self.window)
        return self._tables[key]

    def _forget_tables(self, keep: int = 8) -> None:
        """Bound the table cache (a model sees a few sequence lengths, dtypes and devices)."""
        if len(self._tables) >= keep:
            self._tables.clear()

    def decay_table(self, length: int, like: torch.Tensor) -> torch.Tensor:
        """The reference level's remaining fraction by age (tokens), from the cell's retention and token clock;
        ones when decay is off (the per-cell retention spread scales it, `varied.py`)."""
        key = ("reference", length, like.dtype, like.device, self.decay, self.cell.token_period_s)
        if key not in self._tables:
            self._forget_tables()
            self._tables[key] = decay_table_for("surrogate" if self.decay else None, length, self.cell, like.dtype,
                                                like.device)
        return self._tables[key]

    def _quantization(self) -> Quantization | None:
        return self.quantization if self.quantize else None

    @float32_on_cpu
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: RingCache | None = None):
        """q (B, heads, T, D); k, v (B, kv_heads, T, D) -> (B, heads, T, D)."""
        check_inputs(q, k, v, self.tile, self.window)
        if q.shape[1] != self.heads or k.shape[1] != self.kv_heads or q.shape[3] != self.head_dim:
            raise ConfigError("q", f"expected q (B, {self.heads}, T, {self.head_dim}) and k, v (B, {self.kv_heads}, "
                                   f"T, {self.head_dim}); got {tuple(q.shape)} and {tuple(k.shape)}")
        if self.mode == "ideal":
            return self._ideal(q, k, v, cache)
        linear = self.mode == "linear"
        decoding = cache is not None and (cache.next_step > 0 or q.shape[2] == 1)
        if decoding and cache.slots % self.tile:
            raise ConfigError("cache", f"has {cache.slots} slots, not a multiple of the tile {self.tile}")
        if decoding and self._chosen_form(cache, q).compiled:
            from .level_decode import decode_layer

            return decode_layer(self, q, k, v, cache, linear)
        qs, ks, vs = self.q_scaler(q), self.k_scaler(k), self._with_reference(self.v_scaler(v))
        if not decoding:
            padded, ring = ring_size(q.shape[2], self.tile, self.window)
            terms = self.decay_terms(ring, q)
            if self.varied:
                qh, fk, fv = hardware_inputs(qs, ks, vs, self.cell, self._quantization(), linear, self.linear_backward,
                                             self.execution.kernel, terms.aged)
                fk, fv, tables, cells = self._vary(fk, fv, terms.tables, ring, padded, q.shape[0],
                                                   self._transfer_stored(ks, vs))
                y = tiled_attention(qh, fk, fv, self.cell, decay=tables, tile=self.tile, window=self.window,
                                    out_steps=self._out_steps(), execution=self.execution, cells=cells, c2p=self._c2p())
            else:
                y = converted_attention(qs, ks, vs, self.cell, self._quantization(), terms, linear=linear,
                                        linear_backward=self.linear_backward, tile=self.tile, window=self.window,
                                        execution=self.execution, c2p=self._c2p())
            if cache is not None:
                self._write(cache, qs, ks, vs, linear)
        else:
            y = self._decode(qs, ks, vs, cache, linear)
        return self.out_scaler(self._normalized(y))

    @property
    def peak_reference(self) -> bool:
        """Whether the C2P reference follows each query's peak score (the hardware's `c2p_reference`)."""
        return self.cell.hardware.c2p_reference == "peak"

    @property
    def normalized(self) -> bool:
        """Whether the readouts are divided by a reference column's (the hardware's `normalization`)."""
        return self.cell.hardware.normalization == "reference-column"

    def _with_reference(self, vs: torch.Tensor) -> torch.Tensor:
        """With normalization, the V array's reference column: one more column written with the DAC's top level."""
        if not self.normalized:
            return vs
        return torch.cat([vs, vs.new_full((*vs.shape[:-1], 1), self.cell.stored_range_v[1])], dim=-1)

    def _normalized(self, y: torch.Tensor) -> torch.Tensor:
        """With normalization, the value readouts divided by the reference column's (which sums the pulses, each
        weighted by the top level's aged multiply): weights that sum to one. A reference below one readout step
        (no key pulsed) divides by that step."""
        if not self.normalized:
            return y
        steps = self._out_steps()
        return y[..., :-1] / y[..., -1:].clamp_min(1.0 / steps if steps else 1e-6)

    @float32_on_cpu
    def pulses(self, q, k, v, queries: int | None = None) -> torch.Tensor:
        """The C2P outputs phi (B, heads, queries, T) of the last `queries` queries of (unscaled) q, k, v against
        every key, differentiable (`naive.naive_pulses`): where each query's weight goes."""
        return naive_pulses(self.q_scaler(q), self.k_scaler(k), self.v_scaler(v), self.cell,
                            decay="surrogate" if self.decay else None, tile=self.tile, window=self.window,
                            quantize=self._quantization() or False, linear=self.mode == "linear", c2p=self._c2p(),
                            queries=queries)

    def _threshold(self) -> torch.Tensor | None:
        return self.c2p_threshold if self.thresholds else None

    def _gain(self) -> torch.Tensor | None:
        """The heads' C2P gains (pulse width per unit charge: the integration capacitor, a design-time choice)
        within C2P_GAIN_RANGE; None with `gains` off (every head at 1)."""
        return self.c2p_gain.clamp(*C2P_GAIN_RANGE) if self.gains else None

    def _c2p(self) -> C2P:
        """The C2P settings of a pass: the heads' thresholds and gains (unless `thresholds`, `gains` are off), the
        hardware's reference, and the full scale (inf with `saturate` off)."""
        return C2P(self._threshold(), self.peak_reference, 1.0 if self.saturate else math.inf, self._gain())

    def _out_steps(self) -> int:
        quantization = self._quantization()
        return quantization.out_steps if quantization else 0

    def _stored(self, ks, vs):
        """The voltages the DACs write (clamped, quantized) - what the ring buffer holds."""
        stored = transfers(self.cell, self._quantization(), False, False)[1]
        return stored.clamped(ks), stored.clamped(vs)

    def _transfer_stored(self, ks, vs):
        """`_stored` with the gradient of the clamp passing through the quantization (for the cell deviations)."""
        low, high = self.cell.stored_range_v
        return tuple(straight_through(x.clamp(low, high), s) for x, s in zip((ks, vs), self._stored(ks, vs)))

    def _cell_arrays(self, ring: int, positions: int, like: torch.Tensor) -> dict:
        """This layer's cells at key positions 0 .. positions - 1 (slot = position mod ring), x the scale:
        multiply deviations k, v (H_kv, P, D, n), decay exponent factors - 1 (H_kv, P, D) or None, offsets
        (H_kv, P) or None, and the series' terms."""
        scale, variation = self.variation_scale, self.cell.variation
        key = (ring, positions, like.dtype, like.device, scale, self.variation_seed, self.decay, self.cell.token_period_s)
        if key in self._cells:
            return self._cells[key]
        arrays = {"k": None, "v": None, "k_exponent": None, "v_exponent": None, "offset": None, "terms": 0}
        if scale:
            draws = CellDraws.draw(self.variation_seed, self.kv_heads, ring, self.head_dim,
                                   variation.multiply_factor.shape[0], self.tile)
            slots = torch.arange(positions) % ring
            factor = torch.as_tensor(variation.multiply_factor, dtype=torch.float64)
            coefficients = scale * draws.multiply[:, :, slots] @ factor.T  # (2, H_kv, P, D, n)
            arrays["k"], arrays["v"] = (c.to(like) for c in coefficients)
            arrays["offset"] = (scale * variation.offset_sigma * draws.offset[:, slots]).to(like)
            if self.decay and variation.retention_ln_sigma:
                exponents = torch.expm1(variation.retention_beta * scale * variation.retention_ln_sigma
                                        * draws.retention[:, :, slots])
                arrays["k_exponent"], arrays["v_exponent"] = (e.to(like) for e in exponents)
                arrays["terms"] = series_terms(float(exponents.abs().max()), self.decay_table(ring, like))
        self._cells = {key: arrays}
        return arrays

    def _vary(self, fk, fv, tables, ring: int, positions: int, batch: int, stored):
        """f(k), g(v) and their decay tables with this layer's cell deviations for keys at positions 0.. (slot =
        position mod ring), and the `StageCells` for the stage arithmetic; `stored` are the (clamped, quantized)
        k, v voltages. A multiply deviation adds to the product form's one term, or is one more term decaying as
        the reference level with the aged-voltage decay's."""
        if self.gains and bool((self.c2p_gain != 1).any()):
            raise ConfigError("variation_scale", "per-cell variation and read noise are modelled at the characterized "
                              "C2P gain only; this layer's heads have trained gains (set `gains` off, or adapt without)")
        arrays = self._cell_arrays(ring, positions, stored[0])
        tokens = stored[0].shape[2]
        if arrays["k"] is not None:
            y0 = self.cell.y0_v
            deviations = (multiply_deviation(stored[0], y0, arrays["k"][:, :tokens]),
                          self.cell.v_over_k * multiply_deviation(stored[1], y0, arrays["v"][:, :tokens]))
            if fk.dim() == 4:
                fk, fv = fk + deviations[0], fv + deviations[1]
            else:
                fk, fv = (torch.cat([f, deviation[None]]) for f, deviation in zip((fk, fv), deviations))
                tables = torch.cat([tables, self.decay_table(tables.shape[1], tables)[None]])

        def rows(x):  # (H_kv, P, D) or (H_kv, P) -> (B x heads, P, D) or (B x heads, P)
            if x is None:
                return None
            per_cell = x.dim() == 3
            x = expand_kv(x[None] if per_cell else x[None, :, :, None], self.heads)
            x = x.expand(batch, -1, -1, -1).reshape(batch * self.heads, positions, x.shape[-1])
            return x if per_cell else x[..., 0]

        noise = self.read_noise_scale * (self.cell.variation.read_noise if self.read_noise_scale else 0.0)
        seed = int(torch.randint(0, 2**62, ())) if noise else 0
        cells = StageCells(rows(arrays["k_exponent"]), rows(arrays["v_exponent"]), rows(arrays["offset"]), noise,
                           noise * self.cell.v_over_k, seed, arrays["terms"],
                           log_table(self.decay_table(tables.shape[1], tables)))
        return fk, fv, tables, cells

    @torch.no_grad()
    def _write(self, cache: RingCache, qs, ks, vs, linear: bool) -> torch.Tensor:
        """Write tokens into the ring (the voltages the DACs store and their transfers); returns their hardware q."""
        k, v = self._stored(ks, vs)
        return write_tokens(self._chosen_form(cache, qs), qs, k, v, self.cell, self._quantization(), linear,
                            self.execution.kernel, self.decay_terms(cache.slots, qs).aged)

    def _chosen_form(self, cache: RingCache, q) -> RingCache:
        """At a ring's first write, its form: levels for the compiled CPU step (`level_decode.py`) where it applies
        (kernel "auto", float32 CPU tensors, k, v quantized to at most 256 levels: a byte a cell, no per-cell
        variation, saturating converters, the step available), else transfers (the torch or Triton decode)."""
        if cache.next_step == 0:
            levels = self.quantization.kv_levels if self.quantize else 0
            cache.compiled = (kernel_choice(self.execution.kernel) == "auto" and q.device.type == "cpu"
                              and q.dtype == torch.float32 and 0 < levels <= 256 and not self.varied
                              and self.saturate and compiled_step_available())
        return cache

    @torch.no_grad()
    def _decode(self, qs, ks, vs, cache: RingCache, linear: bool):
        """Token by token: write each token's k, v into the ring, then read the ring with its q."""
        terms = self.decay_terms(cache.slots, qs)
        outputs = []
        for i in range(qs.shape[2]):
            qh = self._write(cache, qs[:, :, i:i + 1], ks[:, :, i:i + 1], vs[:, :, i:i + 1], linear)
            fk, fv, table, cells = cache.fk, cache.fv, terms.tables, None
            if self.varied:  # per-cell arrays: one row per query head
                fk, fv, table, cells = self._vary(fk, fv, table, cache.slots, cache.slots, qs.shape[0],
                                                  (cache.k, cache.v))
                fk, fv = expand_kv(fk, self.heads), expand_kv(fv, self.heads)
            outputs.append(decode_step(qh, fk, fv, cache.ages(cache.next_step - 1), table, self.cell, tile=self.tile,
                                       out_steps=self._out_steps(), cells=cells, c2p=self._c2p(),
                                       kernel=self.execution.kernel))
        return torch.cat(outputs, dim=2)

    def new_cache(self, max_tokens: int | None = None) -> RingCache:
        """An empty decoding cache: `window` slots (or `max_tokens` rounded up to the tile when window is None)."""
        if self.window is None:
            if max_tokens is None:
                raise ConfigError("max_tokens", "is needed for a cache when the layer has no window")
            return RingCache(-(-max_tokens // self.tile) * self.tile)
        return RingCache(self.window)

    def _ideal(self, q, k, v, cache: RingCache | None):
        """Plain causal softmax attention (windowed when the sequence is longer than the window)."""
        k, v = expand_kv(k, self.heads), expand_kv(v, self.heads)
        if cache is not None:
            raise ConfigError("cache", "decoding with a ring cache is for the hardware modes, not 'ideal'")
        t = q.shape[2]
        if self.window is None or t <= self.window:
            return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
        position = torch.arange(t, device=q.device)
        age = position[:, None] - position[None, :]
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=(age >= 0) & (age < self.window),
                                                      scale=self.softmax_scale)


VARIATION_SEED_STRIDE = 1 << 16  # layers per model seed


def configure_variation(layers, *, scale: float = 0.0, read_noise_scale: float = 0.0, seed: int = 0) -> None:
    """Set the variation and read-noise scales of every layer (in order), layer i drawing its cells from seed
    `seed * VARIATION_SEED_STRIDE + i` (each layer's arrays are different physical cells)."""
    for index, layer in enumerate(layers):
        layer.variation_seed = seed * VARIATION_SEED_STRIDE + index
        layer.variation_scale, layer.read_noise_scale = scale, read_noise_scale

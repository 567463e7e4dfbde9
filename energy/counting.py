"""Action counts per token, taken from a real decode of `GainCellAttention` rather than from a formula.

`count_decode_actions` builds the attention layer of one model layer from a surrogate, fills its ring
cache with a window of tokens (the layer's own parallel prefill), then decodes a few tokens one at a time
while an `ArrayProbe` (a torch function mode) watches the operations the layer performs:
- a write into the ring cache's K or V tensor is a column of cells written (one DAC conversion per cell);
- a batched matrix product `bmm(pulses (rows, 1, K), array (rows, K, N))` is a read of a K x N block of
  cells by K input pulses. If its pulses are the output of an earlier product (a C2P converted them), or
  that output rearranged (reshaped, transposed: the sub-tiles of one read as a batch), it is stage 2 (phi x V,
  one batch entry per sub-tile); otherwise stage 1 (Q x K, the input pulse generators).
  Each output element is a conversion (stage 1: a C2P per column; stage 2: a signed C2P + counter).
  Pulse widths are in units of T_max, so sum(pulses) x N is the read time of the cells, in T_max.
`closed_form_counts` is the same from the architecture's formulas, for cross-checking.

Inputs are synthetic activations with the per-head statistics of calibrated models (q' mean 0.5, std 0.22;
k', v' mean at mid-range, std 0.17: docs/paper-facts, SmolLM2 calibration study); counts of cells and
conversions do not depend on them, pulse widths (and so read energies) do.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch.overrides import TorchFunctionMode

from gaincell.errors import ConfigError

Q_STD, KV_STD = 0.22, 0.17
LAYOUT = (torch.Tensor.reshape, torch.Tensor.transpose, torch.Tensor.contiguous)  # rearrange, same values


@dataclass
class ActionCounts:
    """Actions of one layer per decoded token (one sequence), summed over its heads."""

    cells_written: float = 0.0  # K and V cells written (= DAC conversions)
    cells_read_qk: float = 0.0  # cells a stage-1 pulse drives
    cells_read_av: float = 0.0  # cells a stage-2 pulse drives
    pulse_cells_qk: float = 0.0  # sum over driven cells of the pulse width / T_max (stage 1)
    pulse_cells_av: float = 0.0  # the same, stage 2
    c2p_stage1: float = 0.0  # charge-to-pulse conversions (one per stored token and query head)
    c2p_stage2: float = 0.0  # signed C2P + counter readouts (one per output dim, sub-tile and query head)
    counter_ticks: float = 0.0  # counter increments of the stage-2 readouts (quantized magnitudes)
    tile_reads_qk: float = 0.0  # (query head, sub-tile) array reads, stage 1
    tile_reads_av: float = 0.0  # the same, stage 2
    adds: float = 0.0  # digital additions summing the sub-tile readouts
    query_heads: float = 0.0  # query heads read (each a read phase of its arrays)
    kv_arrays: float = 0.0  # KV heads written (array pairs per layer)
    cells_held: float = 0.0  # cells in the layer's ring (K and V arrays)

    def scaled(self, factor: float) -> "ActionCounts":
        return ActionCounts(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def read_phases(self) -> float:
        """Query heads that read one KV array pair one after another (heads / kv_heads)."""
        return self.query_heads / self.kv_arrays if self.kv_arrays else 0.0

    @property
    def mean_pulse_qk(self) -> float:
        return self.pulse_cells_qk / self.cells_read_qk if self.cells_read_qk else 0.0

    @property
    def mean_pulse_av(self) -> float:
        return self.pulse_cells_av / self.cells_read_av if self.cells_read_av else 0.0


class ArrayProbe(TorchFunctionMode):
    """Counts cache writes and array reads (see the module docstring) while active: of the torch decode (a ring in
    the transfers form; the compiled CPU step's has no torch products to count)."""

    def __init__(self, cache, tile: int, out_steps: int):
        super().__init__()
        if cache.compiled:
            raise ConfigError("cache", "is in the compiled step's levels form; the probe counts the torch decode's "
                                       "array products: build the layer with Execution(kernel='torch')")
        self.cache, self.tile, self.out_steps = cache, tile, out_steps
        self.counts = ActionCounts()
        self._converted: list[torch.Tensor] = []  # stage-1 results (the C2P's pulses), kept so memory is not reused

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func is torch.Tensor.__setitem__ and any(args[0] is t for t in (self.cache.k, self.cache.v)):
            value = args[2]
            self.counts.cells_written += value.numel() / value.shape[0]  # per sequence
        elif func is torch.bmm:
            self._read(args[0], args[1], result)
        elif func in LAYOUT and isinstance(result, torch.Tensor) and self._is_converted(args[0]):
            self._converted.append(result)  # the C2P's pulses rearranged (a copy when not a view)
        return result

    def _is_converted(self, tensor: torch.Tensor) -> bool:
        storage = tensor.untyped_storage().data_ptr()
        return any(storage == t.untyped_storage().data_ptr() for t in self._converted)

    def _read(self, pulses: torch.Tensor, array: torch.Tensor, out: torch.Tensor) -> None:
        c = self.counts
        rows, queries, k = pulses.shape
        n = array.shape[-1]
        batch = self.cache.k.shape[0]
        stage2 = self._is_converted(pulses)
        cells = rows * queries * k * n / batch
        pulse_cells = float(pulses.detach().double().sum()) * n / batch
        conversions = out.numel() / batch
        if stage2:
            c.cells_read_av += cells
            c.pulse_cells_av += pulse_cells
            c.c2p_stage2 += conversions
            c.tile_reads_av += rows * queries / batch
            magnitude = out.detach().double().abs().clamp(max=1.0)
            c.counter_ticks += float(torch.round(magnitude * self.out_steps).sum()) / batch if self.out_steps \
                else 0.0
        else:
            self._converted.append(out)
            c.cells_read_qk += cells
            c.pulse_cells_qk += pulse_cells
            c.c2p_stage1 += conversions
            c.tile_reads_qk += rows * queries * (n // self.tile) / batch
            c.query_heads += rows * queries / batch


MAX_COUNTED_WINDOW = 16384  # the prefill's window x window scores: ~2 GB and minutes on 2 cores at this size


def count_decode_actions(cell, heads: int, kv_heads: int, head_dim: int, *, window: int = 1024, tile: int = 64,
                         tokens: int = 4, seed: int = 0, token_period_s: float | None = None) -> ActionCounts:
    """Mean actions per decoded token of one layer, counted on a real decode with a full ring (steady state).

    `cell`: a surrogate path, Surrogate or CellModel. The ring is first filled by the layer's parallel
    prefill of `window` tokens; then `tokens` tokens are decoded one at a time under an `ArrayProbe`."""
    from gaincell.surrogate.attention import GainCellAttention
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.options import Execution

    if not isinstance(tokens, int) or tokens < 1:
        raise ConfigError("--tokens", f"must be a positive integer (tokens decoded while counting); got {tokens!r}")
    if not isinstance(tile, int) or tile < 1:
        raise ConfigError("--tile", f"must be a positive integer (token columns per array); got {tile!r}")
    if not isinstance(window, int) or window < tile or window % tile:
        raise ConfigError("--window", f"must be a positive multiple of --tile ({tile}); got {window!r}")
    if window > MAX_COUNTED_WINDOW:
        raise ConfigError("--window", f"is {window} tokens; the counts come from a real decode whose prefill holds "
                                      f"window x window scores, so at most {MAX_COUNTED_WINDOW} (per-token counts "
                                      "grow linearly with the window beyond it)")
    if not isinstance(cell, CellModel):
        cell = CellModel.from_surrogate(cell, token_period_s=token_period_s)
    # the torch path whatever GAINCELL_KERNEL says: the probe counts its array products (a fused kernel has none)
    layer = GainCellAttention(cell, heads, head_dim, kv_heads=kv_heads, tile=tile, window=window,
                              execution=Execution(kernel="torch"))
    generator = torch.Generator().manual_seed(seed)

    def activations(n: int):
        return (torch.randn(1, heads, n, head_dim, generator=generator) * Q_STD,
                torch.randn(1, kv_heads, n, head_dim, generator=generator) * KV_STD,
                torch.randn(1, kv_heads, n, head_dim, generator=generator) * KV_STD)

    cache = layer.new_cache()
    with torch.no_grad():
        layer(*activations(window), cache=cache)  # prefill: the ring holds a full window
        probe = ArrayProbe(cache, tile, layer.quantization.out_steps if layer.quantize else 0)
        with probe:
            for _ in range(tokens):
                layer(*activations(1), cache=cache)
    counts = probe.counts.scaled(1.0 / tokens)
    counts.kv_arrays = float(cache.k.shape[1])
    counts.cells_held = float(cache.k[0].numel() + cache.v[0].numel())
    tiles_per_head = counts.tile_reads_av / counts.query_heads
    counts.adds = counts.query_heads * max(tiles_per_head - 1, 0.0) * cache.v.shape[-1]  # with a reference column
    return counts


def closed_form_counts(heads: int, kv_heads: int, head_dim: int, window: int, tile: int) -> ActionCounts:
    """The architecture's formulas for a full ring (for cross-checking the decode's counts; no pulse widths)."""
    tiles = window // tile
    return ActionCounts(cells_written=2 * kv_heads * head_dim, cells_read_qk=heads * window * head_dim,
                        cells_read_av=heads * window * head_dim, c2p_stage1=heads * window,
                        c2p_stage2=heads * tiles * head_dim, tile_reads_qk=heads * tiles, tile_reads_av=heads * tiles,
                        adds=heads * (tiles - 1) * head_dim, query_heads=heads, kv_arrays=kv_heads,
                        cells_held=2 * kv_heads * window * head_dim)

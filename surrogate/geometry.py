"""How the keys of a parallel pass are laid out in arrays (`Geometry`), each chunk's decay and mask, and the kv
heads shared by query heads (`expand_kv`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Geometry:
    """How the keys are laid out in arrays: tile size, window (ring size), padded length, chunking."""

    tile: int
    window: int  # ring size in tokens (a multiple of tile); >= padded length means no wrap
    padded: int  # sequence length padded to a multiple of tile
    chunk: int  # queries per chunk (a multiple of tile)
    offset: float
    out_steps: int  # readout magnitude steps (levels of the counter - 1); 0 = no quantization
    rows: int = 1 << 30  # batch x head rows per chunk
    full_scale: float = 1.0  # where the C2P saturates and the readout clips; inf: neither (an ablation)
    peak: bool = False  # the C2P reference follows each query's peak score (`peak_reference`), not the offset

    @property
    def n_slots_tiles(self) -> int:
        return self.window // self.tile

    def key_tiles(self, start: int, stop: int) -> tuple[int, int]:
        """Aligned key tiles any query in [start, stop) can reach."""
        first = max(0, (start - self.window + 1) // self.tile)
        return first, -(-stop // self.tile)

    def physical_tiles(self, first: int, stop: int) -> list[int]:
        """Physical tile (ring slot tile) of each aligned key tile first..stop-1."""
        return [j % self.n_slots_tiles for j in range(first, stop)]


def chunk_decay(table: torch.Tensor, geometry: Geometry, start: int, stop: int, first: int, last: int) -> torch.Tensor:
    """Decay x causal/window mask for queries [start, stop) and aligned key tiles [first, last): tables
    (terms, ages) -> (terms, queries, keys)."""
    device, length = table.device, table.shape[-1]
    queries = torch.arange(start, stop, device=device)
    keys = torch.arange(first * geometry.tile, last * geometry.tile, device=device)
    age = queries[:, None] - keys[None, :]
    valid = (age >= 0) & (age < min(geometry.window, length))
    return torch.where(valid, table[:, age.clamp(0, length - 1)], table.new_zeros(()))


def expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., B, H_kv, T, D) -> (..., B, heads, T, D), each kv head shared by heads / H_kv query heads (leading
    dimensions, such as the decay's terms, kept)."""
    *lead, b, h_kv, t, d = x.shape
    if h_kv == heads:
        return x
    return x.unsqueeze(-3).expand(*lead, b, h_kv, heads // h_kv, t, d).reshape(*lead, b, heads, t, d)

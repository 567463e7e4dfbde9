"""The grouped options of gain-cell attention: how the parallel pass runs (`Execution`; in float32 on the CPU,
`float32_on_cpu`), the charge-to-pulse converters of one pass (`C2P`), and the layer's converters (`Converters`)
and per-cell variation (`CellVariation`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .transfers import Quantization

DEFAULT_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Execution:
    """How the parallel pass runs, never what it computes: `chunk_elements` bounds the score and pulse elements
    of one chunk of queries; `kernel` picks the implementation, "auto" / "triton" / "torch" (see
    `functional.use_triton`; None: the GAINCELL_KERNEL environment variable, else "auto")."""

    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    kernel: str | None = None


@dataclass(frozen=True, eq=False)
class C2P:
    """The charge-to-pulse converters of one pass: `threshold`, each query head's threshold (H,) above the cell's
    offset (None: 0); `peak`, the reference follows each query's peak score (`functional.peak_reference`), not the
    offset; `full_scale`, where the C2P saturates and the readout clips (inf: neither, an ablation); `gain`, each
    query head's conversion gain (H,): pulse width per unit of bit-line charge, set by the size of the head's
    integration capacitor (None: 1, the cell as characterized). A gain g scales every score of the head by g
    before the reference and threshold, so with the peak reference a key pulses when it scores within
    (1 - threshold) / g of the best one. `peak` and a `full_scale` other than 1 run on the torch path only."""

    threshold: torch.Tensor | None = None
    peak: bool = False
    full_scale: float = 1.0
    gain: torch.Tensor | None = None

    def amplified(self, q: torch.Tensor) -> torch.Tensor:
        """The hardware queries q (B, H, ..., D) with each head's gain applied: the scores are linear in q, so a
        gain on the charge is a gain on the query's pulses."""
        if self.gain is None:
            return q
        return q * self.gain.to(q.dtype).view(1, -1, *([1] * (q.dim() - 2)))


@dataclass(frozen=True)
class Converters:
    """The layer's converters: `quantize` turns their levels on; `quantization` holds the levels (None: those of
    the cell's hardware configuration; 0 for an exact converter); `saturate` off, the C2P neither saturates nor
    the readout clips (an ablation, torch path only). The layer keeps each as a switch of the same name."""

    quantize: bool = True
    quantization: Quantization | None = None
    saturate: bool = True


@dataclass(frozen=True)
class CellVariation:
    """The layer's per-cell variation and read noise, off by default: frozen per-cell draws of `scale` x the
    surrogate's fitted spread from `seed`, and fresh read noise of `read_noise_scale` x the fitted figure on every
    forward (`varied.py`). The layer checks and keeps them as `variation_scale`, `read_noise_scale` and
    `variation_seed`."""

    scale: float = 0.0
    read_noise_scale: float = 0.0
    seed: int = 0


def float32_on_cpu(method):
    """A pass of the layer on q, k, v that computes in float32 on the CPU, also inside a bfloat16 autocast (training
    with `--precision bfloat16`): the converters compare with float32 levels and the CPU passes take float32. Its
    result stays float32; the autocast casts it where the next product needs bfloat16."""
    @functools.wraps(method)
    def run(self, q, k, v, *args, **kwargs):
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return method(self, q.float(), k.float(), v.float(), *args, **kwargs)
        return method(self, q, k, v, *args, **kwargs)
    return run

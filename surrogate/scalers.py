"""The per-head affine scalers that map an LLM's q, k, v into the hardware domain and the readout back."""
from __future__ import annotations

import math

import torch
from torch import nn


class AffineScaler(nn.Module):
    """y = a * x + b per head, with an EMA of y's per-head mean and std (the target statistics)."""

    def __init__(self, heads: int, a: float = 1.0, b: float = 0.0, momentum: float = 0.1):
        super().__init__()
        self.a = nn.Parameter(torch.full((heads,), float(a)))
        self.b = nn.Parameter(torch.full((heads,), float(b)))
        self.momentum = momentum
        self.register_buffer("target_mean", torch.full((heads,), math.nan))
        self.register_buffer("target_std", torch.full((heads,), math.nan))
        self.track_statistics = False  # update the EMA targets on every forward
        self.record_batch = False  # keep this forward's per-head mean/std in `batch_mean`, `batch_std`
        self.batch_mean: torch.Tensor | None = None
        self.batch_std: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, heads, T, D)
        y = x * self.a.view(1, -1, 1, 1).to(x.dtype) + self.b.view(1, -1, 1, 1).to(x.dtype)
        if self.track_statistics or self.record_batch:
            with torch.no_grad():
                mean, std = head_statistics(y)
                if self.record_batch:
                    self.batch_mean, self.batch_std = mean, std
                if self.track_statistics:
                    for buffer, value in ((self.target_mean, mean), (self.target_std, std)):
                        fresh = torch.isnan(buffer)
                        buffer.copy_(torch.where(fresh, value, (1 - self.momentum) * buffer + self.momentum * value))
        return y


def head_statistics(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head mean and std (float32) of a (B, heads, T, D) tensor."""
    flat = y.detach().transpose(0, 1).reshape(y.shape[1], -1).float()
    return flat.mean(1), flat.std(1)

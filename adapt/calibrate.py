"""The paper's calibration of a swapped model's scalers, without gradient steps.

Every scaler (q, k, v, out of every layer) needs target statistics (per-head mean and std of its output):
recorded as EMAs by the linear intermediate fine-tune, or, when that stage is skipped, `softmax_targets`
(the hardware's input ranges for q, k, v and the unmodified softmax attention's output statistics for out).
`calibrate` then resets every scaler to a = 1, b = 0 and, on one fixed batch, repeats: forward; for every
layer, scaler and head, a <- alpha a (target_std / std) + (1 - alpha) a and
b <- alpha (b + target_mean - mean) + (1 - alpha) b, alpha decaying linearly from 1 to 0.1 over 50 iterations,
at most 100 iterations, stopping when no a or b moves by more than the tolerance (1e-4).

One deviation, measured (../shared/docs/paper-facts.md, SmolLM2 study): applied to all layers at once at full
strength the update diverges, because the first step moves every layer's input together; the per-step std
ratio is therefore clipped to [1 / max_std_ratio, max_std_ratio] (default 2; None turns the clip off).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gaincell.errors import ConfigError
from gaincell.progress import bar as progress_bar
from gaincell.surrogate.scalers import head_statistics

from .models import gaincell_layers, set_mode

Q_TARGET = (0.5, 0.22)  # read pulse width as a fraction of T_max: mean, std (inside the [0, 1] clamp)
STORED_STD_FRACTION = 0.2  # k, v: std = this x the stored range, mean = its middle


@dataclass
class CalibrationResult:
    iterations: int
    converged: bool
    changes: list[float] = field(default_factory=list)  # largest a or b move per iteration


def _scalers(model):
    return [(index, name, scaler) for index, layer in enumerate(gaincell_layers(model))
            for name, scaler in layer.scalers().items()]


@torch.no_grad()
def softmax_targets(model, batch: torch.Tensor) -> None:
    """Set every scaler's targets without a linear stage: q, k, v from the hardware's input ranges, out from
    the per-head mean/std of the unmodified (softmax) attention output on `batch`."""
    layers = gaincell_layers(model)
    modes = [layer.mode for layer in layers]
    captured, hooks = {}, []
    for index, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda module, args, output, index=index: captured.__setitem__(index, head_statistics(output))))
    try:
        set_mode(model, "ideal")
        model(batch.to(next(model.parameters()).device), use_cache=False)
    finally:
        for hook, layer, mode in zip(hooks, layers, modes):
            hook.remove()
            layer.mode = mode
    for index, layer in enumerate(layers):
        low, high = layer.cell.stored_range_v
        layer.q_scaler.target_mean.fill_(Q_TARGET[0])
        layer.q_scaler.target_std.fill_(Q_TARGET[1])
        for scaler in (layer.k_scaler, layer.v_scaler):
            scaler.target_mean.fill_(0.5 * (low + high))
            scaler.target_std.fill_(STORED_STD_FRACTION * (high - low))
        mean, std = captured[index]
        layer.out_scaler.target_mean.copy_(mean)
        layer.out_scaler.target_std.copy_(std)


def alpha_at(iteration: int, start: float = 1.0, end: float = 0.1, steps: int = 50) -> float:
    """The update strength at `iteration` (0-based): linear from `start` to `end` over `steps`, then `end`."""
    return end if iteration >= steps else start + (end - start) * iteration / steps


@torch.no_grad()
def calibrate(model, batch: torch.Tensor, *, iterations: int = 100, tolerance: float = 1e-4,
              alpha_start: float = 1.0, alpha_end: float = 0.1, alpha_steps: int = 50,
              max_std_ratio: float | None = 2.0, reset: bool = True, progress: bool = True) -> CalibrationResult:
    """Calibrate every scaler of a swapped model on one fixed `batch` (token ids (B, T)); see the module doc."""
    if iterations < 1:
        raise ConfigError("iterations", f"must be >= 1; got {iterations}")
    if max_std_ratio is not None and max_std_ratio <= 1:
        raise ConfigError("max_std_ratio", f"must be > 1 (or None for no clip); got {max_std_ratio}")
    scalers = _scalers(model)
    missing = [f"layer {i} {name}" for i, name, s in scalers
               if torch.isnan(s.target_mean).any() or torch.isnan(s.target_std).any()]
    if missing:
        raise ConfigError("targets", f"{len(missing)} scalers have no target statistics (first: {missing[0]}): run "
                                     "the linear stage (it records them) or softmax_targets first")
    batch = batch.to(next(model.parameters()).device)
    for _, _, scaler in scalers:
        if reset:
            scaler.a.fill_(1.0)
            scaler.b.fill_(0.0)
        scaler.record_batch = True
    result = CalibrationResult(0, False)
    bar = progress_bar(range(iterations), desc="calibration", unit="it", enabled=progress, transient=True)
    try:
        for iteration in bar:
            model(batch, use_cache=False)
            alpha = alpha_at(iteration, alpha_start, alpha_end, alpha_steps)
            change = 0.0
            for _, _, scaler in scalers:
                std = scaler.batch_std.to(scaler.a.device)
                ratio = torch.where(std > 1e-12, scaler.target_std / std.clamp_min(1e-12), torch.ones_like(std))
                if max_std_ratio is not None:
                    ratio = ratio.clamp(1 / max_std_ratio, max_std_ratio)
                a = alpha * scaler.a * ratio + (1 - alpha) * scaler.a
                b = alpha * (scaler.b + scaler.target_mean - scaler.batch_mean.to(scaler.b.device)) + (1 - alpha) * scaler.b
                change = max(change, float(((a - scaler.a).abs() / scaler.a.abs().clamp_min(1e-12)).max()),
                             float((b - scaler.b).abs().max()))
                scaler.a.copy_(a)
                scaler.b.copy_(b)
            result.changes.append(change)
            result.iterations = iteration + 1
            bar.set_postfix(alpha=f"{alpha:.2f}", change=f"{change:.2e}")
            if change < tolerance:
                result.converged = True
                break
    finally:
        for _, _, scaler in scalers:
            scaler.record_batch = False
    return result

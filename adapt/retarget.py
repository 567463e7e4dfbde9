"""Re-targeting: an adapted model moved to another cell, keeping what its adaptation learnt.

An adapted model's projections and scalers are fitted to its cell. For a new cell (`retarget`), every layer gets
a gain-cell attention built from the new surrogate whose scalers start from the old ones: the query's pulse
widths and the C2P thresholds and gains stay as they were, the stored k and v voltages keep their place within the stored
range (the old range mapped affinely onto the new one), the layer computes as before (its normalization and C2P
reference, `hardware.COMPUTATION_FIELDS`, unless the user sets them), and the output scaler is set so that each head's output has the mean and
standard deviation the old layer gave on the same inputs (the new cell's multiply has another gain and shape).
A short transfer or distillation against the base model (`adapt --stages transfer` or `distill`) fits the rest.
"""
from __future__ import annotations

import torch

from gaincell.hardware import COMPUTATION_FIELDS
from gaincell.surrogate.scalers import head_statistics

from .models import gaincell_layers, swap_attention
from .transfer import fit_output_scaler


@torch.no_grad()
def retarget(model, surrogate, batch: torch.Tensor, hardware: dict | None = None) -> None:
    """Move every gain-cell layer of the adapted `model` to `surrogate` (path or Surrogate), its scalers carried
    over as described above, using the layers' inputs on `batch` (B, T)."""
    old_layers = gaincell_layers(model)
    inputs, outputs, hooks = {}, {}, []
    for index, layer in enumerate(old_layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda module, args, index=index: inputs.__setitem__(index, tuple(a.detach() for a in args[:3]))))
        hooks.append(layer.register_forward_hook(
            lambda module, args, output, index=index: outputs.__setitem__(index, head_statistics(output))))
    try:
        model(batch.to(next(model.parameters()).device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    options = {"mode": old_layers[0].mode, "quantize": old_layers[0].quantize, "decay": old_layers[0].decay}
    kept = {name: getattr(old_layers[0].cell.hardware, name) for name in COMPUTATION_FIELDS}
    swap_attention(model, surrogate, hardware={**kept, **(hardware or {})}, **options)
    for index, (old, new) in enumerate(zip(old_layers, gaincell_layers(model))):
        new.q_scaler.a.copy_(old.q_scaler.a)
        new.q_scaler.b.copy_(old.q_scaler.b)
        new.c2p_threshold.copy_(old.c2p_threshold)
        new.c2p_gain.copy_(old.c2p_gain)
        (old_low, old_high), (low, high) = old.cell.stored_range_v, new.cell.stored_range_v
        stretch = (high - low) / (old_high - old_low)
        for before, after in ((old.k_scaler, new.k_scaler), (old.v_scaler, new.v_scaler)):
            after.a.copy_(before.a * stretch)
            after.b.copy_(low + (before.b - old_low) * stretch)
        mean, std = outputs[index]
        new.out_scaler.target_mean.copy_(mean)
        new.out_scaler.target_std.copy_(std)
        fit_output_scaler(new, lambda: new(*inputs[index]))

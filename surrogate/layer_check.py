"""`gaincell attention SURROGATE`: build the attention layer from a surrogate, show what it compiled to and
check it end to end (decoding = parallel pass, gradients flow, time of a forward+backward)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gaincell.compact import evaluate

from .attention import GainCellAttention
from .cellmodel import CellModel
from .file import Surrogate


def layer_check(surrogate_path: str | Path, out_dir: str | Path, layers: int = 12, seed: int = 0) -> dict:
    """Returns the figures as (name, text) rows and writes attention-layer.png/.html into `out_dir`."""
    from gaincell.plotting import Figure, Panel, Trace, save_png_and_html

    out_dir = Path(out_dir)
    surrogate = Surrogate.load(surrogate_path)
    # every array is written once per token, after all the layers before it ran
    cell = CellModel.from_surrogate(surrogate, layers=layers)
    period = cell.token_period_s
    layer = GainCellAttention(cell, 12, 64)  # tile and window of the cell's hardware configuration
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 12, 300, 64, generator=generator) for _ in range(3))
    small = GainCellAttention(cell, 12, 64, window=128)
    with torch.no_grad():
        for scaler in (small.q_scaler, small.k_scaler, small.v_scaler):
            scaler.a.fill_(0.2)
        parallel = small(q, k, v)
        cache = small.new_cache()
        decoded = torch.cat([small(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                             for t in range(q.shape[2])], dim=2)
    big = [torch.randn(1, 12, 1024, 64, generator=generator, requires_grad=True) for _ in range(3)]
    start = time.perf_counter()
    layer(*big).square().sum().backward()
    seconds = time.perf_counter() - start
    stored = np.linspace(*cell.stored_range_v, 200)
    y = stored - cell.y0_v
    to_amps = surrogate["c2p"].params["q_sat_c"] / cell.t_max_s  # multiply_k is charge per full pulse / q_sat
    curve = np.polyval(cell.cubic[::-1], y) * to_amps
    line = np.polyval(cell.line[::-1], y) * to_amps
    ages = np.arange(0, 16384, 16)
    decay = cell.decay_table(16384)[ages]
    model_id, config, params = cell.decay_model
    low, high = cell.stored_range_v
    held = [Trace(f"written at {level:.3g} V", ages.astype(float),
                  evaluate(model_id, config, params, t_s=ages * period, stored_v=np.full(ages.shape, level)))
            for level in np.linspace(low, high, 5)[1:]]
    figure = Figure(f"attention layer compiled from {Path(surrogate_path).name}", [
        Panel([Trace("fitted multiply (read current)", stored, curve), Trace("least-squares line", stored, line)],
              "A", "read current", "the multiply the layer uses (at the design's read input)", "V", "stored voltage"),
        Panel(held, "V", "stored voltage", f"what a stored token holds by age (token clock {period * 1e9:.0f} ns): "
              "the layer reads the aged voltage", "", "age (tokens)")], share_x=False)
    save_png_and_html(figure, out_dir / "attention-layer")
    below = np.nonzero(decay < np.exp(-1))[0]
    terms = layer.decay_terms(layer.window or 1024, q).aged
    rows = [("compiled multiply", f"{len(cell.cubic) - 1}-th order polynomial in (stored - {cell.y0_v:g} V)"),
            ("linear model slope", f"{cell.line[1] * to_amps * 1e6:.2f} uA/V"),
            ("token clock", f"{period * 1e9:.0f} ns ({layers} layers x {period / layers * 1e9:.0f} ns)"),
            ("age at 1/e of the reference level's stored excess",
             f"{ages[below[0]] if len(below) else '> 16384'} tokens (retention 1/e {cell.notes['decay_tau_1e_s'] * 1e3:.3g} ms)"),
            ("aged multiply over the window",
             "the product form (decay negligible)" if terms is None else
             f"{terms.terms} separable terms, largest error {100 * terms.error:.2f} % of full scale"),
            ("decoding vs parallel pass (300 tokens, window 128)", f"max |diff| {float((decoded - parallel).abs().max()):.2e}"),
            ("forward+backward, B=1 H=12 T=1024 D=64, CPU", f"{seconds:.2f} s"),
            ("gradients reach q, k, v", str(all(float(x.grad.abs().sum()) > 0 for x in big)))]
    return {"rows": rows, "decode_max_diff": float((decoded - parallel).abs().max()), "seconds": seconds}


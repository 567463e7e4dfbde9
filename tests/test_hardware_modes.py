"""Two hardware options of the layer beside the paper's: the reference-column normalization (hardware field
`normalization`: each V array has one more column written with the DAC's top level, and the head's value readouts
are divided by that column's readout, so a query's pulses weigh the values as weights that sum to one) and the C2P
reference at each query's peak score (`c2p_reference = "peak"`: a key's pulse depends on how far it scores below
the best key)."""
import dataclasses

import h5py
import pytest
import torch

from gaincell.errors import ConfigError
from gaincell.hardware import PAPER_HARDWARE, HardwareConfig
from gaincell.resources import data_path
from gaincell.surrogate.attention import GainCellAttention
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.functional import tiled_attention
from gaincell.surrogate.naive import naive_gaincell_attention
from gaincell.surrogate.options import C2P, Converters, Execution
from gaincell.surrogate.transfers import ElementwiseTransfer, transfers

HEADS, KV_HEADS, D = 4, 2, 8


def layer(normalization="reference-column", c2p_reference="offset", **options):
    cell = CellModel.from_surrogate(data_path("paper_reference.h5"), read_phases=HEADS // KV_HEADS)
    cell = dataclasses.replace(cell, hardware=cell.hardware.overridden(normalization=normalization,
                                                                       c2p_reference=c2p_reference))
    return GainCellAttention(cell, HEADS, D, kv_heads=KV_HEADS, tile=16, window=64, **options)


def inputs(t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, HEADS, t, D, generator=g), torch.rand(1, KV_HEADS, t, D, generator=g),
            torch.rand(1, KV_HEADS, t, D, generator=g))


def test_weights_sum_to_one_equal_values_read_back_as_their_level():
    """With every stored value at one level v0, the output is g(v0) / g(top) wherever a key pulsed, whatever the
    pulses (exact converters, no saturation, no decay: the arithmetic alone)."""
    attention = layer(decay=False, converters=Converters(quantize=False, saturate=False))
    q, k, _ = inputs()
    v0 = 0.7
    with torch.no_grad():
        attention.v_scaler.a.zero_(); attention.v_scaler.b.fill_(v0)  # every value stored at v0
        out = attention(q, k, torch.zeros_like(k))
        phi = attention.pulses(q, k, torch.zeros_like(k))
    value = transfers(attention.cell, None, False, False)[2]
    levels = torch.tensor([v0, attention.cell.stored_range_v[1]])
    g0, top = ElementwiseTransfer.apply(levels, value)
    pulsed = phi.sum(-1) > 0
    assert pulsed.float().mean() > 0.5
    torch.testing.assert_close(out[pulsed], torch.full_like(out[pulsed], float(g0 / top)), rtol=1e-4, atol=1e-5)


def test_the_layer_equals_a_naive_normalized_sum_forward_and_backward():
    """phi = relu(q . f(k) - offset) over the causal window, out = (phi @ g(v)) / (phi @ g(top)): the same numbers
    and gradients from plain autograd (exact converters, no saturation, no decay)."""
    attention = layer(decay=False, converters=Converters(quantize=False, saturate=False)).double()
    cell = attention.cell
    q, k, v = (x.double().requires_grad_() for x in inputs(t=48, seed=3))
    with torch.no_grad():
        attention.q_scaler.a.fill_(0.5)
    out = attention(q, k, v)
    _, key, value = transfers(cell, None, False, False)
    qh = attention.q_scaler(q).clamp(0, 1)
    fk, fv = (ElementwiseTransfer.apply(scaler(x), t).repeat_interleave(HEADS // KV_HEADS, dim=1)
              for scaler, x, t in ((attention.k_scaler, k, key), (attention.v_scaler, v, value)))
    top = ElementwiseTransfer.apply(torch.tensor([cell.stored_range_v[1]], dtype=torch.float64), value)
    age = torch.arange(48)[:, None] - torch.arange(48)[None, :]
    phi = torch.relu(qh @ fk.transpose(-1, -2) - cell.offset) * ((age >= 0) & (age < 64))
    reference = attention.out_scaler((phi @ fv) / (phi.sum(-1, keepdim=True) * top).clamp_min(1e-6))
    assert torch.allclose(out, reference, atol=1e-10)
    weights = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), weights), torch.autograd.grad(reference, (q, k, v), weights)):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("c2p_reference,seed", [("offset", 5), ("peak", 11)])
def test_decoding_token_by_token_reproduces_the_parallel_pass(c2p_reference, seed):
    attention = layer("reference-column", c2p_reference)  # the paper's converters and decay; 100 tokens wrap the window
    with torch.no_grad():
        for scaler in (attention.q_scaler, attention.k_scaler, attention.v_scaler):
            scaler.a.fill_(0.25)
    q, k, v = (torch.randn_like(x) for x in inputs(t=100, seed=seed))
    with torch.no_grad():
        parallel = attention(q, k, v)
        cache = attention.new_cache()
        steps = torch.cat([attention(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                           for t in range(100)], dim=2)
    assert parallel.shape == q.shape and parallel.abs().max() > 0.1
    assert (steps - parallel).abs().max() <= 1e-5


def test_the_option_is_checked_and_what_it_cannot_run_is_refused():
    with pytest.raises(ConfigError, match="normalization"):
        HardwareConfig(normalization="softmax")
    with pytest.raises(ConfigError, match="c2p_reference"):
        HardwareConfig(c2p_reference="mean")
    for attention in (layer(), layer("none", "peak")):
        with pytest.raises(ConfigError, match="not modelled"):
            attention.variation_scale = 1.0
    q, k, _ = inputs(t=16)
    with pytest.raises(ConfigError, match="reference column"):  # the fused kernel reads d value columns
        tiled_attention(q, k, torch.rand(1, KV_HEADS, 16, D + 1), attention.cell, decay=None, tile=16, window=64,
                        out_steps=15, execution=Execution(kernel="triton"))


def test_files_written_before_the_field_read_as_none_and_an_override_is_recorded(tmp_path):
    attrs = PAPER_HARDWARE.to_attrs()
    del attrs["normalization"]
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_group("hardware").attrs.update(attrs)
    with h5py.File(tmp_path / "old.h5", "r") as f:
        assert HardwareConfig.from_attrs(f["hardware"].attrs, "old.h5").normalization == "none"
    changed = PAPER_HARDWARE.overridden(normalization="reference-column")
    assert changed.overrides == ("normalization=reference-column",)
    assert HardwareConfig.from_attrs(changed.to_attrs(), "new") == changed
    assert not layer("none").normalized and layer().normalized


@pytest.mark.parametrize("normalization", ["none", "reference-column"])
def test_peak_reference_equals_the_naive_layer_forward_and_backward(normalization):
    """The fast path's peak reference (its custom backward included) against plain autograd on full score matrices,
    with the aged-voltage decay and a per-head threshold and gain."""
    attention = layer(normalization, "peak", converters=Converters(quantize=False)).double()
    with torch.no_grad():
        attention.q_scaler.a.fill_(0.5)
        attention.c2p_threshold.copy_(torch.linspace(-0.2, 0.3, HEADS))
        attention.c2p_gain.copy_(torch.linspace(0.5, 3.0, HEADS))
    q, k, v = (x.double().requires_grad_() for x in inputs(t=48, seed=7))
    out = attention(q, k, v)
    qs, ks, vs = attention.q_scaler(q), attention.k_scaler(k), attention.v_scaler(v)

    def naive(values):
        return naive_gaincell_attention(qs, ks, values, attention.cell, decay="surrogate", tile=16, window=64,
                                        c2p=C2P(attention.c2p_threshold, True, gain=attention.c2p_gain))

    y = naive(vs)
    if attention.normalized:  # the reference column: a value column holding the top level for every token
        y = torch.cat([y, naive(torch.full_like(vs, attention.cell.stored_range_v[1]))[..., :1]], dim=-1)
    reference = attention.out_scaler(attention._normalized(y))
    assert torch.allclose(out, reference, atol=1e-9)
    weights = torch.randn_like(out)
    inputs_and_c2p = (q, k, v, attention.c2p_threshold, attention.c2p_gain)
    for a, b in zip(torch.autograd.grad(out, inputs_and_c2p, weights),
                    torch.autograd.grad(reference, inputs_and_c2p, weights)):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-8)


def test_with_the_peak_reference_the_best_key_of_every_query_gives_a_full_pulse():
    attention = layer("none", "peak")
    q, k, v = inputs(t=40, seed=9)
    with torch.no_grad():
        phi = attention.pulses(q, k, v)
        attention.c2p_threshold.fill_(0.75)
        raised = attention.pulses(q, k, v)
    torch.testing.assert_close(phi.amax(-1), torch.ones(phi.shape[:-1]))
    torch.testing.assert_close(raised.amax(-1), torch.full(phi.shape[:-1], 0.25))
    assert (raised > 0).sum() < (phi > 0).sum()  # a higher threshold: fewer keys within the margin of the best
    with torch.no_grad():
        attention.c2p_threshold.fill_(0.0)
        attention.c2p_gain.fill_(3.0)
        sharper = attention.pulses(q, k, v)
    torch.testing.assert_close(sharper.amax(-1), torch.ones(phi.shape[:-1]))  # a gain keeps the best key's full pulse
    assert (sharper > 0).sum() < (phi > 0).sum()  # and narrows the margin: (1 - threshold) / gain
    pulsed = sharper > 0
    torch.testing.assert_close(1 - sharper[pulsed], 3.0 * (1 - phi[pulsed]))


def test_every_ablation_row_runs_on_a_peak_following_layer():
    """benchmarks/ablation.py's rows (one effect switched off each) all run on a layer whose C2P reference follows
    the peak: it sits one saturation unit below the best score, so its rows keep the saturation (the offset
    reference's rows run in tests/test_benchmark_commands.py's ablation run)."""
    c2p_reference = "peak"
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ablation import rows

    attention = layer(c2p_reference=c2p_reference)
    base = {"mode": attention.mode, "quantization": attention.quantization, "decay": attention.decay,
            "saturate": True, "thresholds": True, "gains": True}
    table = rows(attention, variation=False)
    assert not any("saturation" in label for label, _ in table)
    for label, switches in table:
        for name, value in {**base, **switches}.items():  # as ablation.apply sets every layer of a model
            setattr(attention, name, value)
        assert torch.isfinite(attention(*inputs())).all(), label

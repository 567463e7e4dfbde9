"""GainCellAttention: external truth (the paper's tile vectors), equivalences (SDPA, decoding, the naive
full-matrix implementation), gradients and bad input."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from gaincell.compact import decay_factor, evaluate, poly_terms
from gaincell.design import PRESETS
from gaincell.errors import ConfigError
from gaincell.fitting.fit import c2p_paper_default, figures
from gaincell.resources import data_path
from gaincell.surrogate.attention import GainCellAttention
from gaincell.surrogate.cellmodel import AGED_TOLERANCE, CellModel
from gaincell.errors import SurrogateError
from gaincell.surrogate.file import Component, Surrogate
from gaincell.surrogate.functional import gaincell_attention
from gaincell.surrogate.internals import attention_internals
from gaincell.surrogate.transfers import Quantization
from gaincell.surrogate.naive import naive_gaincell_attention
from gaincell.surrogate.options import C2P, Converters, Execution

REFERENCE = data_path("paper_reference.h5")
# the tile vectors' decay is exp(-1e-4 per step) on the whole product; the reference surrogate's retention is
# exponential with tau = 5 ms, so a token clock of 1e-4 x 5 ms gives exactly that factor per step
TILE_VECTOR_PERIOD_S = 1e-4 * 5e-3
# PROVENANCE.md: coefficients C00..C03, C10..C12, C20, C21, C30 (uA, input as a fraction of T_max)
PAPER_C = dict(zip([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)],
                   [0.17393044, 0.15653739, 0.14088365, 0.12679529, 5.51975209, 4.96777688, 4.4709992,
                    -1.44776001, -1.30298401, 46.05483778]))


@pytest.fixture(scope="module")
def cell():
    return CellModel.from_surrogate(REFERENCE, token_period_s=TILE_VECTOR_PERIOD_S)


@pytest.fixture(scope="module")
def vectors(shared_dir):
    data = np.load(shared_dir / "reference/gaincellattention/gaincell_tile64_vectors.npz")
    return {name: data[name] for name in data.files}


def paper_formula_scores(q, k):
    """S = poly(Q, K^T) d written out from PROVENANCE.md in numpy float64 (independent of the layer)."""
    y = np.swapaxes(k, -1, -2) - 0.45
    s = sum(c * 0.9**j * (q @ y**i) for (i, j), c in PAPER_C.items())
    age = np.arange(q.shape[-2])[:, None] - np.arange(q.shape[-2])[None, :]
    return s * np.where(age >= 0, np.exp(-1e-4 * age), 0.0)


def test_paper_tile_vectors_are_reproduced(cell, vectors):
    """The paper's layer multiplies every product by its decay factor: the product form with the reference
    level's table reproduces its vectors (the circuit's aged-voltage decay, decay="surrogate", is checked
    against SPICE in test_tile.py)."""
    q, k, v = (torch.tensor(vectors[name])[:, None] for name in "QKV")  # 10 cases as a batch, one head
    paper_decay = torch.tensor(cell.decay_table(64))
    internals = attention_internals(q, k, v, cell, decay=paper_decay, tile=64)
    s_ua = internals["S"][:, 0].numpy() * 80  # C2P saturation units -> the paper's uA x T_max units
    # the stored S are float32 values up to ~100: the float64 evaluation of the file's own formula differs
    # from them by 1.005e-4 at most, so S is checked at 1.5e-4 and against that formula at 1e-8 relative
    assert np.abs(s_ua - vectors["S"]).max() <= 1.5e-4
    formula = paper_formula_scores(vectors["Q"], vectors["K"])
    assert np.abs(s_ua - formula).max() <= 1e-8 * np.abs(formula).max()
    assert np.abs(internals["phi"][:, 0].numpy() - vectors["phi_S"]).max() <= 1e-4
    assert np.abs(internals["output"][:, 0].numpy() - vectors["output"]).max() <= 1e-4
    fast = gaincell_attention(q, k, v, cell, decay=paper_decay, tile=64)  # the training path itself
    assert np.abs(fast[:, 0].numpy() - vectors["output"]).max() <= 1e-4
    by_rate = gaincell_attention(q, k, v, cell, decay=1e-4, tile=64)  # the same decay as a rate per step
    assert torch.allclose(by_rate, fast, atol=1e-12)
    assert (vectors["phi_S"] == 0).any() and (vectors["phi_S"] == 1).any()  # both clamps are exercised


def random_qkv(batch=2, heads=4, kv_heads=2, tokens=150, dim=16, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.rand(batch, heads, tokens, dim, generator=generator, dtype=dtype)
    k = torch.rand(batch, kv_heads, tokens, dim, generator=generator, dtype=dtype) * 0.9
    v = torch.rand(batch, kv_heads, tokens, dim, generator=generator, dtype=dtype) * 0.9
    return q, k, v


@pytest.mark.parametrize("tokens,window,tile,quantize", [(150, 64, 32, False), (150, 64, 32, True),
                                                          (130, None, 64, True), (257, 128, 64, False),
                                                          (150, 64, 32, Quantization(0, 8, 32)),
                                                          (150, 64, 32, Quantization(16, 0, 0))])
def test_tiled_path_equals_the_naive_full_matrix_one(cell, tokens, window, tile, quantize):
    offset_cell = dataclasses.replace(cell, offset=0.05)  # a C2P offset exercises the masked-score handling
    q, k, v = random_qkv(tokens=tokens)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    options = dict(decay=0.01, tile=tile, window=window, quantize=quantize)
    fast = gaincell_attention(q, k, v, offset_cell, execution=Execution(4000), **options)  # many small chunks
    slow = naive_gaincell_attention(q, k, v, offset_cell, **options)
    assert fast.abs().max() > 0.05 and torch.allclose(fast, slow, atol=1e-12)
    weights = torch.randn_like(fast)
    for a, b in zip(torch.autograd.grad(fast, (q, k, v), weights), torch.autograd.grad(slow, (q, k, v), weights)):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-11)


@pytest.mark.parametrize("chunk_elements", [4000, 1 << 22])
def test_per_head_thresholds_equal_the_naive_path_and_learn(cell, chunk_elements):
    """Each head's C2P threshold shifts only its own scores, on the tiled path as on the full-matrix one (forward
    and every gradient, its own included), and a raised threshold gives fewer pulses."""
    q, k, v = (x.requires_grad_() for x in random_qkv(tokens=150, heads=2, kv_heads=2))
    threshold = torch.tensor([0.0, 0.2], dtype=q.dtype, requires_grad=True)
    options = dict(decay=0.01, tile=32, window=64, quantize=True)
    fast = gaincell_attention(q, k, v, cell, execution=Execution(chunk_elements), threshold=threshold, **options)
    slow = naive_gaincell_attention(q, k, v, cell, c2p=C2P(threshold), **options)
    assert torch.allclose(fast, slow, atol=1e-12)
    weights = torch.randn_like(fast)
    inputs = (q, k, v, threshold)
    for a, b in zip(torch.autograd.grad(fast, inputs, weights), torch.autograd.grad(slow, inputs, weights)):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-11)
    internals = attention_internals(q, k, v, cell, decay=0.01, tile=32, window=64, c2p=C2P(threshold.detach()))
    plain = attention_internals(q, k, v, cell, decay=0.01, tile=32, window=64)
    assert torch.allclose(internals["S"], plain["S"])  # the stage-1 score is the cell's; the threshold acts after it
    pulses = (internals["phi"] > 0).float().mean((0, 2, 3))
    assert torch.equal(internals["phi"][:, 0], plain["phi"][:, 0]) and pulses[1] < 0.9 * pulses[0]


def test_ideal_mode_equals_sdpa():
    torch.manual_seed(0)
    layer = GainCellAttention.from_surrogate(REFERENCE, 4, 32, mode="ideal", window=256)
    q, k, v = torch.randn(3, 2, 4, 200, 32).unbind(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (layer(q, k, v) - expected).abs().max() <= 1e-5
    # beyond the window, keys older than window are masked as in the hardware's ring buffer
    q, k, v = torch.randn(3, 1, 4, 300, 32, dtype=torch.float64).unbind(0)
    age = torch.arange(300)[:, None] - torch.arange(300)[None, :]
    scores = (q @ k.transpose(-1, -2) / 32**0.5).masked_fill(~((age >= 0) & (age < 256)), float("-inf"))
    assert (layer.double()(q, k, v) - scores.softmax(-1) @ v).abs().max() <= 1e-10


@pytest.mark.parametrize("mode,quantize,window,threshold", [("nonlinear", False, 64, 0.0), ("linear", True, 64, 0.0),
                                                            ("nonlinear", True, None, 0.0),
                                                            ("nonlinear", True, 64, 0.1)])
@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_decoding_token_by_token_reproduces_the_parallel_pass(mode, quantize, window, threshold, kernel):
    """With quantized k, v on the CPU, "auto" decodes through the compiled step (`level_decode.py`), "torch" through
    the torch decode: both reproduce the parallel pass, a prompt in one pass then token by token too."""
    layer = GainCellAttention.from_surrogate(REFERENCE, 4, 16, kv_heads=2, tile=32, window=window, mode=mode,
                                             converters=Converters(quantize), token_period_s=20e-6,
                                             execution=Execution(kernel=kernel))
    with torch.no_grad():
        for scaler in (layer.q_scaler, layer.k_scaler, layer.v_scaler):
            scaler.a.fill_(0.25)
        layer.c2p_threshold.copy_(threshold * torch.arange(4.0))  # a different C2P threshold per head
        layer.c2p_gain.copy_(1.0 + 10 * threshold * torch.arange(4.0))  # and gain
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, h, 200, 16, generator=generator) for h in (4, 2, 2))  # 200 tokens > window 64
    parallel = layer(q, k, v)
    cache = layer.new_cache(max_tokens=200)
    steps = torch.cat([layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache) for t in range(200)],
                      dim=2)
    assert parallel.abs().max() > 0.1 and (steps - parallel).abs().max() <= 1e-5
    assert cache.compiled == (quantize and kernel == "auto")
    prompt = layer.new_cache(max_tokens=200)  # a prompt in one pass, then token by token
    mixed = torch.cat([layer(q[:, :, :90], k[:, :, :90], v[:, :, :90], cache=prompt),
                       layer(q[:, :, 90:], k[:, :, 90:], v[:, :, 90:], cache=prompt)], dim=2)
    assert (mixed - parallel).abs().max() <= 1e-5 and prompt.compiled == cache.compiled


def test_the_compiled_decode_needs_numba_and_falls_back_without_it(monkeypatch):
    """Without numba the layer decodes through the torch decode, to the same outputs."""
    from gaincell.surrogate import attention

    layer = GainCellAttention.from_surrogate(REFERENCE, 2, 16, tile=16, window=32, execution=Execution(kernel="auto"))
    q, k, v = torch.randn(3, 1, 2, 40, 16, generator=torch.Generator().manual_seed(4)).unbind(0)
    outputs = []
    for installed in (True, False):
        monkeypatch.setattr(attention, "compiled_step_available", lambda: installed)
        cache = layer.new_cache()
        with torch.no_grad():
            outputs.append(torch.cat([layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                                      for t in range(40)], dim=2))
        assert cache.compiled == installed
    assert outputs[0].abs().max() > 0.1 and (outputs[0] - outputs[1]).abs().max() <= 1e-5
    monkeypatch.undo()
    layer.q_scaler.track_statistics = True  # the compiled step updates no statistics: it says so
    cache = layer.new_cache()
    with torch.no_grad(), pytest.raises(ConfigError, match="tracks no scaler statistics"):
        layer(q[:, :, :1], k[:, :, :1], v[:, :, :1], cache=cache)


def test_the_compiled_decode_reads_the_settings_the_layer_has_now():
    """Thresholds and scalers changed between two tokens (in place, as `.data` edits do) reach the compiled step
    as they reach the torch decode."""
    q, k, v = torch.randn(3, 1, 2, 30, 16, generator=torch.Generator().manual_seed(6)).unbind(0)
    outputs = []
    for kernel in ("auto", "torch"):
        layer = GainCellAttention.from_surrogate(REFERENCE, 2, 16, tile=16, window=32,
                                                 execution=Execution(kernel=kernel))
        cache, steps = layer.new_cache(), []
        with torch.no_grad():
            for t in range(30):
                if t == 15:
                    layer.c2p_threshold.data.fill_(0.2)
                    layer.q_scaler.a.data.mul_(2.0)
                steps.append(layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache))
        outputs.append(torch.cat(steps, dim=2))
        assert cache.compiled == (kernel == "auto")
    assert (outputs[0] - outputs[1]).abs().max() <= 1e-5  # a step keeping the first settings fails this (tried)


def test_the_compiled_decode_refuses_what_its_ring_was_not_made_for():
    """A ring serves one batch and the layer's converters of its first token; a value that is not a number stops
    decoding with a message; a DAC of more levels than a byte holds keeps the torch decode."""
    from gaincell.errors import GaincellError

    layer = GainCellAttention.from_surrogate(REFERENCE, 2, 16, tile=16, window=32, execution=Execution(kernel="auto"))
    x = torch.randn(3, 2, 2, 4, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        cache = layer.new_cache()
        layer(x[0, :1, :, :1], x[1, :1, :, :1], x[2, :1, :, :1], cache=cache)
        with pytest.raises(ConfigError, match="batch of 1"):
            layer(x[0, :, :, 1:2], x[1, :, :, 1:2], x[2, :, :, 1:2], cache=cache)
        layer.quantization = Quantization(16, 4, 32)
        with pytest.raises(ConfigError, match="new cache"):
            layer(x[0, :1, :, 1:2], x[1, :1, :, 1:2], x[2, :1, :, 1:2], cache=cache)
        layer.quantization = Quantization()
        with pytest.raises(GaincellError, match="not a number"):
            layer(x[0, :1, :, 1:2], x[1, :1, :, 1:2].clone().fill_(float("nan")), x[2, :1, :, 1:2], cache=cache)
        layer.quantization, cache = Quantization(16, 512, 32), layer.new_cache()
        layer(x[0, :1, :, :1], x[1, :1, :, :1], x[2, :1, :, :1], cache=cache)
        assert not cache.compiled


def test_the_compiled_readout_rounds_in_float32_as_the_torch_path():
    """A tile readout of 0.5 / 15 (a tie of the 4-bit counter in float64, not in float32) quantizes as
    `transfers.readout_sum` does."""
    from gaincell.surrogate import level_decode
    from gaincell.surrogate.transfers import readout_sum

    value = np.float32(0.5 / 15)
    out = np.zeros((1, 1), np.float32)
    level_decode._readouts(np.ones((1, 16), np.float32), np.zeros((1, 2), np.float32), np.zeros((16, 1), np.uint8),
                           np.arange(16) == 0, np.zeros(16, np.int64), np.full((1, 1), value), 16, 15, out)
    assert out[0, 0] == float(readout_sum([torch.tensor([value])], 1.0, 15)[0])


def test_unsaturated_converters_are_a_rectified_sum_over_the_window(cell):
    """saturate=False (an ablation): phi = relu(S - offset) and the tile readouts add without clipping, in the
    forward and backward pass, on the parallel pass and when decoding; the default saturates on the same input."""
    layer = GainCellAttention(dataclasses.replace(cell, offset=0.05), 2, 32, tile=16, window=32, decay=False,
                              converters=Converters(quantize=False, saturate=False)).double()
    q, k, v = random_qkv(batch=1, heads=2, kv_heads=2, tokens=48, dim=32, seed=5)
    q, k, v = q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    out = layer(q, k, v)
    qh = layer.q_scaler(q).clamp(0, 1)
    fk, fv = (naive_multiply(x, cell) for x in (layer.k_scaler(k), layer.v_scaler(v)))
    age = torch.arange(48)[:, None] - torch.arange(48)[None, :]
    phi = torch.relu(qh @ fk.transpose(-1, -2) - 0.05) * ((age >= 0) & (age < 32))
    reference = layer.out_scaler(phi @ (fv * cell.v_over_k))
    assert phi.max() > 1.5 and torch.allclose(out, reference, atol=1e-10)
    weights = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), weights), torch.autograd.grad(reference, (q, k, v), weights)):
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-9)
    with torch.no_grad():
        cache = layer.new_cache()
        steps = torch.cat([layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                           for t in range(48)], dim=2)
        assert torch.allclose(steps, out, atol=1e-10)
        layer.saturate = True
        assert (layer(q, k, v) - out).abs().max() > 0.1


def naive_multiply(stored, cell):
    """f(k) of the fitted polynomial on the clamped stored voltage (plain autograd)."""
    y = stored.clamp(*cell.stored_range_v) - cell.y0_v
    return sum(c * y**i for i, c in enumerate(cell.polynomial()))


@pytest.mark.slow
def test_gradcheck_float64(cell):
    q, k, v = random_qkv(batch=1, heads=2, kv_heads=1, tokens=20, dim=4, seed=3)
    q, k, v = q.requires_grad_(), (0.2 + 0.5 * k).requires_grad_(), v.requires_grad_()

    def function(q, k, v):
        return gaincell_attention(q, k, v, cell, decay=0.05, tile=4, window=8, execution=Execution(16))

    assert torch.autograd.gradcheck(function, (q, k, v), eps=1e-6, atol=1e-7)


def test_linear_backward_uses_the_line_gradient(cell):
    q, k, v = random_qkv(batch=1, heads=2, kv_heads=2, tokens=40, dim=8, seed=4)
    grads = {}
    for option in (False, True):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = gaincell_attention(*x, cell, decay=0.01, tile=8, window=16, linear_backward=option)
        grads[option] = (out, *torch.autograd.grad(out.square().sum(), x))
    exact, paper = grads[False], grads[True]
    # same forward, same dL/dq (float32 tolerances: the option must change dL/dk only)
    torch.testing.assert_close(exact[0], paper[0])
    torch.testing.assert_close(exact[1], paper[1])
    y = k.detach() - cell.y0_v
    slope_curve = sum(i * c * y ** (i - 1) for i, c in enumerate(cell.cubic) if i)
    # dL/dk = dL/df x f'(k) exactly; the paper's option replaces f' by the line's slope
    assert torch.allclose(exact[2] * cell.line[1], paper[2] * slope_curve, atol=1e-12)
    assert not torch.allclose(exact[2], paper[2])


def test_decay_follows_the_token_clock_in_seconds(cell):
    table = cell.decay_table(5, token_period_s=1e-3)
    assert np.allclose(table, np.exp(-np.arange(5) * 1e-3 / 5e-3))
    exact = Converters(quantize=False)
    layer = GainCellAttention.from_surrogate(REFERENCE, 1, 8, token_period_s=1e-3, converters=exact)
    layer_off = GainCellAttention.from_surrogate(REFERENCE, 1, 8, token_period_s=1e-3, converters=exact, decay=False)
    q, k, v = random_qkv(batch=1, heads=1, kv_heads=1, tokens=30, dim=8, dtype=torch.float32)
    assert not torch.allclose(layer(q, k, v), layer_off(q, k, v))


def synthetic_surrogate(**multiply_overrides) -> Surrogate:
    """A surrogate like `gaincell fit` writes for a cell: order-5 x vin-order-3 multiply, leakage decay."""
    terms = poly_terms(5, 3)
    rng = np.random.default_rng(0)
    values = rng.normal(0, 2e-6, len(terms))
    multiply = Component("multiply/poly", [f"c{i}{j}" for i, j in terms], values,
                         config={"order": 5, "vin_order": 3, "y0_v": 0.45, "vin0_v": 0.9},
                         validity={"stored_v": [0.0, 0.9], "pulse_s": [0.0, 15e-9], "vin_v": [0.5, 0.9]})
    for key, value in multiply_overrides.items():
        setattr(multiply, key, value)
    decay = Component("decay/subthreshold-leakage", ["rate_v_per_s", "vt_v", "dibl_per_v"], [60.0, 0.026, 1.0],
                      config={"hold_v": 0.0, "ref_v": 0.45})
    components = {"multiply": multiply, "decay": decay, "c2p": c2p_paper_default(15e-9),
                  "energy": figures({"e_read_j": 1e-14}, source="test"),
                  "timing": figures({"t_max_s": 15e-9}, source="test")}
    return Surrogate(components, dataclasses.replace(PRESETS["cmos-generic"], name="synthetic", v_in_v=0.8))


def test_a_fitted_cell_surrogate_compiles_exactly():
    surrogate = synthetic_surrogate()
    cell = CellModel.from_surrogate(surrogate, token_period_s=1e-4)
    stored = np.linspace(0, 0.9, 37)
    charge = surrogate.evaluate("multiply", stored_v=stored, pulse_s=np.full_like(stored, 15e-9),
                                vin_v=np.full_like(stored, 0.8))  # the design's read input
    compiled = np.polyval(cell.cubic[::-1], stored - 0.45) * 80e-6 * 15e-9
    assert np.allclose(compiled, charge, rtol=1e-12, atol=1e-25)
    assert cell.token_period_s == 1e-4 and cell.v_over_k == 2.0
    expected = decay_factor("decay/subthreshold-leakage", {"hold_v": 0.0, "ref_v": 0.45},
                            {"rate_v_per_s": 60.0, "vt_v": 0.026, "dibl_per_v": 1.0}, np.arange(4) * 1e-4)
    assert np.allclose(cell.decay_table(4), expected)


def test_ekv_multiply_is_reexpanded_with_its_residual_recorded():
    ekv = {"kn": 2e-5, "kp": 2e-5, "vtn": 0.35, "vtp": 0.35, "s": 0.05, "a_vin": 0.5}
    surrogate = synthetic_surrogate(model_id="multiply/ekv-complementary", param_names=list(ekv),
                                    values=np.array(list(ekv.values())), config={"vdd_v": 0.9})
    cell = CellModel.from_surrogate(surrogate)
    stored = np.linspace(0, 0.9, 50)
    exact = evaluate("multiply/ekv-complementary", {"vdd_v": 0.9}, ekv, stored_v=stored, pulse_s=np.ones(50),
                     vin_v=np.full(50, 0.8)) * 15e-9 / (80e-6 * 15e-9)
    assert cell.notes["polynomial_refit_rms_rel"] < 0.01
    assert np.abs(np.polyval(cell.cubic[::-1], stored - cell.y0_v) - exact).max() < 0.03 * np.abs(exact).max()


def test_bad_input_is_refused_with_the_parameter_named(cell):
    q, k, v = random_qkv(tokens=64)
    with pytest.raises(ConfigError, match="window"):
        gaincell_attention(q, k, v, cell, tile=64, window=100)
    with pytest.raises(ConfigError, match="^q: must be a 4-D"):
        gaincell_attention(q[0], k, v, cell)
    with pytest.raises(ConfigError, match="^k: .*tokens=64"):
        gaincell_attention(q, k[:, :, :10], v[:, :, :10], cell)
    with pytest.raises(ConfigError, match="^k: .*divide"):
        gaincell_attention(q, k[:, :1].expand(2, 3, 64, 16), v[:, :1].expand(2, 3, 64, 16), cell)
    with pytest.raises(ConfigError, match="decay"):
        gaincell_attention(q, k, v, cell, decay=-1.0)
    with pytest.raises(ConfigError, match="out_levels"):
        Quantization(out_levels=31)
    with pytest.raises(ConfigError, match="mode"):
        GainCellAttention(cell, 4, 16, mode="softmax")
    layer = GainCellAttention(cell, 4, 16, kv_heads=2)
    with pytest.raises(ConfigError, match="expected q"):
        layer(q[..., :8], k[..., :8], v[..., :8])


def test_validity_policy_error_or_warning():
    with pytest.raises(SurrogateError, match=r"stored_v in \[0, 1.2\].*validity \[0, 0.9\]"):
        CellModel.from_surrogate(REFERENCE, stored_range_v=(0.0, 1.2))
    with pytest.warns(UserWarning, match="extrapolating"):
        CellModel.from_surrogate(REFERENCE, stored_range_v=(0.0, 1.2), allow_extrapolation=True)
    surrogate = synthetic_surrogate()
    surrogate.design = dataclasses.replace(surrogate.design, v_in_v=0.3)  # read input below the fitted [0.5, 0.9]
    with pytest.raises(SurrogateError, match="vin_v"):
        CellModel.from_surrogate(surrogate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CellModel.from_surrogate(REFERENCE, stored_range_v=(0.1, 0.8))  # inside: silent


def test_scalers_record_target_statistics():
    layer = GainCellAttention.from_surrogate(REFERENCE, 2, 8)
    layer.q_scaler.track_statistics = True
    q = torch.randn(1, 2, 64, 8) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    layer(q, torch.randn(1, 2, 64, 8), torch.randn(1, 2, 64, 8))
    first = layer.q_scaler.target_std.clone()
    assert torch.allclose(first, torch.tensor([1.0, 3.0]), rtol=0.15)
    assert torch.isnan(layer.k_scaler.target_mean).all()  # not tracking: untouched
    layer(q * 2, torch.randn(1, 2, 64, 8), torch.randn(1, 2, 64, 8))
    assert torch.allclose(layer.q_scaler.target_std, 0.9 * first + 0.1 * 2 * first, rtol=1e-4)


def test_the_aged_multiply_is_the_fitted_curve_read_at_the_held_voltage():
    """The layer's decay ages the stored voltage (toward the hold level, by the fitted leakage) and reads it with
    the fitted multiply: its separable terms equal f(v_held(v, age)) within the expansion's tolerance, at voltages
    between the grid points and ages between the tables' entries; a longer ring's tables start with a shorter
    ring's (the terms depend on the window, not on the sequence length)."""
    cell = CellModel.from_surrogate(synthetic_surrogate(), token_period_s=2e-4)
    model_id, config, params = cell.decay_model
    ages = np.arange(64) * 2e-4
    expansion = cell.aged_expansion(ages, span_s=ages[-1])
    assert 2 <= expansion.terms <= 16 and expansion.error <= AGED_TOLERANCE < expansion.product_error
    stored = np.random.default_rng(0).uniform(0.0, 0.9, 500)
    age = np.random.default_rng(1).integers(0, 64, 500)
    held = evaluate(model_id, config, params, t_s=ages[age], stored_v=stored)
    exact = np.polyval(cell.cubic[::-1], held - cell.y0_v)
    terms = sum(np.interp(stored, expansion.grid_v, values) * table[age]
                for values, table in zip(expansion.values, expansion.tables))
    full_scale = np.abs(np.polyval(cell.cubic[::-1], expansion.grid_v - cell.y0_v)).max()
    assert np.abs(terms - exact).max() <= 2 * AGED_TOLERANCE * full_scale
    assert held.min() < 0.05 < stored.min() + 0.9  # old cells have leaked to near the hold level (0 V)
    longer = cell.aged_expansion(np.arange(128) * 2e-4, span_s=ages[-1])
    assert np.allclose(longer.tables[:, :64], expansion.tables, atol=1e-12)


def test_the_aged_decay_differs_from_the_paper_s_product_form():
    cell = CellModel.from_surrogate(synthetic_surrogate(), token_period_s=2e-4)
    q, k, v = random_qkv(batch=1, heads=1, kv_heads=1, tokens=32, dim=8, dtype=torch.float32)
    out = gaincell_attention(q, 0.45 + 0.1 * k, 0.45 + 0.1 * v, cell, decay="surrogate", tile=16)
    paper = gaincell_attention(q, 0.45 + 0.1 * k, 0.45 + 0.1 * v, cell, decay=torch.tensor(cell.decay_table(32)),
                               tile=16)
    assert torch.isfinite(out).all() and not torch.allclose(out, paper)

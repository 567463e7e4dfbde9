"""Device variation and read noise in `GainCellAttention` (per-cell draws, seeds, decoding, noise, gradients)."""
import numpy as np
import pytest
import torch

from gaincell.errors import ConfigError
from gaincell.resources import data_path
from gaincell.surrogate.attention import GainCellAttention, configure_variation
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import Surrogate
from gaincell.surrogate.options import CellVariation, Converters
from gaincell.surrogate.varied import CellDraws
from gaincell.surrogate.varied import EXACT
from test_surrogate_file_variation import example_variation

REFERENCE = data_path("paper_reference.h5")


@pytest.fixture(scope="module")
def cell():
    """The paper cell with a made-up variation; a slow token clock so the decay matters within a window."""
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation()
    return CellModel.from_surrogate(surrogate, token_period_s=20e-6)


def make_layer(cell, **options):
    options = dict(kv_heads=2, tile=32, window=64) | options
    layer = GainCellAttention(cell, 4, 16, **options)
    with torch.no_grad():
        for scaler in (layer.q_scaler, layer.k_scaler, layer.v_scaler):
            scaler.a.fill_(0.25)
    return layer


def inputs(tokens=200, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, h, tokens, 16, generator=generator, dtype=dtype) for h in (4, 2, 2))


def test_scale_zero_is_bit_identical_to_the_plain_layer(cell):
    plain = make_layer(CellModel.from_surrogate(REFERENCE, token_period_s=20e-6))
    off = make_layer(cell, variation=CellVariation(scale=0.0, read_noise_scale=0.0, seed=5))
    q, k, v = (x.requires_grad_() for x in inputs())
    expected = plain(q, k, v)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), q)
    got = off(q, k, v)
    (grad,) = torch.autograd.grad(got.square().sum(), q)
    assert torch.equal(got, expected) and torch.equal(grad, grad_expected)
    cache_plain, cache_off = plain.new_cache(), off.new_cache()
    with torch.no_grad():
        for t in range(70):
            step = slice(t, t + 1)
            assert torch.equal(plain(q[:, :, step], k[:, :, step], v[:, :, step], cache=cache_plain),
                               off(q[:, :, step], k[:, :, step], v[:, :, step], cache=cache_off))


@pytest.mark.parametrize("window,quantize", [(64, True), (64, False), (None, False)])
def test_the_same_cells_serve_training_and_decoding(cell, window, quantize):
    layer = make_layer(cell, window=window, converters=Converters(quantize),
                       variation=CellVariation(scale=2.0, seed=7))
    q, k, v = inputs()  # 200 tokens: the 64-slot ring wraps three times
    with torch.no_grad():
        parallel = layer(q, k, v)
        cache = layer.new_cache(max_tokens=200)
        steps = torch.cat([layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                           for t in range(200)], dim=2)
        prompt = layer.new_cache(max_tokens=200)
        mixed = torch.cat([layer(q[:, :, :90], k[:, :, :90], v[:, :, :90], cache=prompt),
                           layer(q[:, :, 90:], k[:, :, 90:], v[:, :, 90:], cache=prompt)], dim=2)
        layer.variation_scale = 0.0
        nominal = layer(q, k, v)
    assert (parallel - nominal).abs().max() > 0.05  # the cells matter
    for other in (steps, mixed):  # equal up to float rounding, which may flip a readout across a quantization step
        differ = (other - parallel).abs() > 1e-5
        assert differ.float().mean() <= 1e-3 and (other - parallel).abs().max() <= 1.01 / 15


def test_seeds_select_cells_and_draws_do_not_depend_on_the_ring_length(cell):
    q, k, v = inputs()
    with torch.no_grad():
        first, again, other = (make_layer(cell, variation=CellVariation(scale=1.0, seed=s))(q, k, v)
                               for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    short, long = CellDraws.draw(9, 2, 64, 16, 4, 32), CellDraws.draw(9, 2, 96, 16, 4, 32)
    assert torch.equal(short.multiply, long.multiply[:, :, :64]) and torch.equal(short.offset, long.offset[:, :64])
    assert torch.equal(short.retention, long.retention[:, :, :64])
    layers = [make_layer(cell) for _ in range(3)]
    configure_variation(layers, scale=1.0, read_noise_scale=0.5, seed=2)
    assert len({layer.variation_seed for layer in layers}) == 3 and layers[2].read_noise_scale == 0.5


def test_output_spread_grows_with_the_scale(cell):
    q, k, v = inputs(tokens=128)
    layer = make_layer(cell, converters=Converters(quantize=False))
    with torch.no_grad():
        nominal = layer(q, k, v)
        spread = []
        for scale in (0.5, 1.0, 2.0):
            deviations = []
            for seed in range(4):
                layer.variation_seed, layer.variation_scale = seed, scale
                deviations.append(layer(q, k, v) - nominal)
            spread.append(float(torch.stack(deviations).square().mean().sqrt()))
    assert 0 < spread[0] < spread[1] < spread[2]
    assert 1.5 < spread[1] / spread[0] < 2.5 and 1.5 < spread[2] / spread[1] < 2.5  # about linear in the scale


def test_read_noise_is_fresh_on_every_call_and_reproducible_from_the_global_seed(cell):
    layer = make_layer(cell, converters=Converters(quantize=False), variation=CellVariation(read_noise_scale=1.0))
    q, k, v = (x.requires_grad_() for x in inputs(tokens=96))
    torch.manual_seed(0)
    first = layer(q, k, v)
    second = layer(q, k, v)
    torch.manual_seed(0)
    repeated = layer(q, k, v)
    assert not torch.equal(first, second) and torch.equal(first, repeated)
    with torch.no_grad():
        layer.read_noise_scale = 0.0
        quiet = layer(q, k, v)
    assert 0 < (first - quiet).abs().mean() < 0.1 * quiet.abs().mean()
    (grad,) = torch.autograd.grad(first.square().sum(), q)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def per_cell_reference(layer, q, k, v):
    """The variation's arithmetic written out cell by cell in float64 (no window, no quantization): every cell
    reads its aged multiply (the layer's terms of the aged-voltage decay, interpolated here with numpy) plus its
    own multiply deviation decaying as the reference level, all times its retention factor d_ref ** (rho - 1)."""
    cell = layer.cell
    qs, ks, vs = (layer.q_scaler(q), layer.k_scaler(k), layer.v_scaler(v))
    low, high = cell.stored_range_v
    qh, ks, vs = qs.clamp(0, 1), ks.clamp(low, high), vs.clamp(low, high)
    b, h, t, d = q.shape
    arrays = layer._cell_arrays(t, t, q)
    group = h // ks.shape[1]
    terms = layer.decay_terms(t, q)
    age = torch.arange(t)[:, None] - torch.arange(t)[None, :]
    causal = age >= 0

    def by_age(table):  # (ages,) -> (T, S)
        return torch.where(causal, table[age.clamp(min=0)], torch.zeros((), dtype=table.dtype))

    def deviation(x, coefficients):  # the cell's own multiply deviation
        return sum(coefficients[..., i] * (x - cell.y0_v) ** i for i in range(coefficients.shape[-1]))

    def aged(x, dev, rho):  # (B, H_kv, S, D) stored volts -> (B, H, T, S, D): what each cell reads at each age
        grid = terms.aged.grid_v
        values = [torch.tensor(np.interp(x.numpy(), grid, row)) for row in terms.aged.values]
        read = sum(value[:, :, None] * by_age(table)[None, None, :, :, None]
                   for value, table in zip(values, terms.tables))
        reference = by_age(layer.decay_table(t, q))[None, None, :, :, None]
        read = read + deviation(x, dev)[:, :, None] * reference
        factor = reference.clamp_min(1e-300) ** (rho[None, :, None] - 1)
        return (read * factor).repeat_interleave(group, 1)

    f_k = aged(ks, arrays["k"], 1 + arrays["k_exponent"])
    f_v = cell.v_over_k * aged(vs, arrays["v"], 1 + arrays["v_exponent"])
    offset = arrays["offset"].repeat_interleave(group, 0)  # (H, T)
    x = torch.einsum("bhtd,bhtsd->bhts", qh, f_k) - cell.offset - offset[None, :, None, :]
    phi = x.clamp(0, 1) * causal
    out = torch.zeros_like(qh)
    for start in range(0, t, layer.tile):
        keys = slice(start, start + layer.tile)
        out += torch.einsum("bhts,bhtsd->bhtd", phi[..., keys], f_v[:, :, :, keys]).clamp(-1, 1)
    return layer.out_scaler(out)


@pytest.fixture(scope="module")
def wide_cell():
    """A retention spread too wide for the series (cells decaying 100x faster or slower than nominal)."""
    surrogate = Surrogate.load(REFERENCE)
    surrogate.variation = example_variation(retention_ln_sigma=1.5)
    return CellModel.from_surrogate(surrogate, token_period_s=20e-6)


@pytest.mark.parametrize("wide,terms", [(False, "series"), (True, "exact")])
def test_per_cell_decay_and_offsets_match_a_cell_by_cell_reference(cell, wide_cell, wide, terms):
    layer = make_layer(wide_cell if wide else cell, window=None, converters=Converters(quantize=False),
                       variation=CellVariation(scale=2.0 if wide else 1.0, seed=1)).double()
    q, k, v = inputs(tokens=64, dtype=torch.float64)
    with torch.no_grad():
        got = layer(q, k, v)
        expected = per_cell_reference(layer, q, k, v)
    assert (layer._cell_arrays(64, 64, q)["terms"] == EXACT) == (terms == "exact")
    assert expected.abs().max() > 0.1 and (got - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("wide", [False, True])
def test_gradients_with_variation_pass_gradcheck(cell, wide_cell, wide):
    layer = GainCellAttention(wide_cell if wide else cell, 2, 4, kv_heads=1, tile=4, window=8,
                              converters=Converters(quantize=False), variation=CellVariation(scale=2.0)).double()
    layer.q_scaler.b.data.fill_(0.3)
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 11, 4, generator=generator, dtype=torch.float64).requires_grad_()
    k, v = (torch.randn(1, 1, 11, 4, generator=generator, dtype=torch.float64).requires_grad_() for _ in range(2))
    assert torch.autograd.gradcheck(lambda q, k, v: layer(q, k, v), (q, k, v), eps=1e-6, atol=1e-6)


def test_a_surrogate_without_variation_refuses_a_nonzero_scale(cell):
    plain = CellModel.from_surrogate(REFERENCE)
    with pytest.raises(ConfigError, match="variation_scale: needs a surrogate with a variation component"):
        GainCellAttention(plain, 2, 8, variation=CellVariation(scale=1.0))
    layer = GainCellAttention(plain, 2, 8)
    with pytest.raises(ConfigError, match="read_noise_scale: needs a surrogate with a variation component"):
        layer.read_noise_scale = 0.5
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="variation_scale"):
            GainCellAttention(cell, 2, 8, variation=CellVariation(scale=bad))
    with pytest.raises(ConfigError, match="variation_seed"):
        GainCellAttention(cell, 2, 8, variation=CellVariation(seed=-1))
    assert np.isclose(cell.variation.retention_beta, 1.0)


def test_variation_refuses_heads_with_trained_c2p_gains(cell):
    """The variation and read-noise models hold at the characterized C2P gain: a layer whose heads have other gains
    says so instead of scaling the noise wrongly; with its gains switched off it runs."""
    layer = make_layer(cell, variation=CellVariation(scale=1.0, read_noise_scale=1.0))
    q, k, v = inputs(tokens=64)
    with torch.no_grad():
        layer.c2p_gain.fill_(2.0)
        with pytest.raises(ConfigError, match="variation_scale: per-cell variation and read noise are modelled at "
                                              "the characterized C2P gain only"):
            layer(q, k, v)
        layer.gains = False
        assert layer(q, k, v).abs().max() > 0

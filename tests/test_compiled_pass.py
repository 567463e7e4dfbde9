"""The parallel pass with its element-wise work compiled for the CPU (`surrogate/compiled_pass.py`, numba) against the
torch path it replaces: the same outputs (a readout on a quantizer boundary may move by a level: the products sum
in another order) and the same gradients, for every option the layer trains with; where it applies; and its
transfers, which round exactly as torch's."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gaincell.resources import data_path
from gaincell.surrogate import functional
from gaincell.surrogate.attention import GainCellAttention
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.decay import decay_terms
from gaincell.surrogate.functional import gaincell_attention, hardware_inputs
from gaincell.surrogate.options import Converters, Execution
from gaincell.surrogate.transfers import Quantization

pytest.importorskip("numba")

REFERENCE = data_path("paper_reference.h5")
STEP = 1 / Quantization().out_steps


def assert_same(compiled, reference, gradients=1e-5):
    """Outputs within one readout step, at most 0.1 % of them off by more than 1e-5; gradients within `gradients`
    of their largest magnitude."""
    (out, *grads), (out_ref, *grads_ref) = compiled, reference
    off = (out - out_ref).abs()
    assert out_ref.abs().max() > 0.1 and off.max() <= STEP + 1e-5 and (off > 1e-5).float().mean() <= 1e-3
    for grad, grad_ref in zip(grads, grads_ref):
        scale = grad_ref.abs().max()
        assert scale > 0 and (grad - grad_ref).abs().max() <= gradients * scale


def attention_node(out: torch.Tensor) -> str:
    """The name of the parallel pass's autograd node in out's graph."""
    pending, seen = [out.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in ("CompiledAttentionBackward", "_TiledAttentionBackward"):
            return type(node).__name__
        pending.extend(next_node for next_node, _ in node.next_functions)
    raise AssertionError("no parallel pass in the graph")


def run(kernel, *, tokens=100, window=64, decay=0.01, quantize=True, threshold=True, kv_heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(2, 4, tokens, 16, generator=g).requires_grad_()
    k, v = ((torch.rand(2, kv_heads, tokens, 16, generator=g) * 0.9).requires_grad_() for _ in range(2))
    theta = (torch.rand(4, generator=g) * 0.2 - 0.1).requires_grad_() if threshold else None
    out = gaincell_attention(q, k, v, REFERENCE, decay=decay, tile=16, window=window, quantize=quantize,
                             execution=Execution(kernel=kernel), threshold=theta)
    grads = torch.autograd.grad(out, [q, k, v] + ([theta] if threshold else []),
                                torch.randn(out.shape, generator=g))
    return out.detach(), *grads, attention_node(out)


@pytest.mark.parametrize("options", [
    {}, {"quantize": False}, {"window": None}, {"decay": "surrogate"}, {"decay": "surrogate", "quantize": False},
    {"tokens": 200, "window": 32}, {"threshold": False, "kv_heads": 4}, {"tokens": 16}, {"tokens": 37}])
def test_the_compiled_pass_equals_the_torch_path_forward_and_backward(options):
    """Windows that wrap (two key tiles share a physical tile and its readout), none, the aged decay's terms, exact
    converters, grouped-query heads, trained thresholds, a sequence shorter than one tile and one that pads."""
    *compiled, node = run("auto", **options)
    *reference, node_ref = run("torch", **options)
    assert (node, node_ref) == ("CompiledAttentionBackward", "_TiledAttentionBackward")
    assert_same(compiled, reference)


def layer(c2p_reference: str, kernel: str) -> GainCellAttention:
    cell = CellModel.from_surrogate(REFERENCE, read_phases=2)
    cell = dataclasses.replace(cell, hardware=cell.hardware.overridden(normalization="reference-column",
                                                                       c2p_reference=c2p_reference))
    attention = GainCellAttention(cell, 4, 8, kv_heads=2, tile=16, window=64, execution=Execution(kernel=kernel))
    with torch.no_grad():
        for scaler in (attention.q_scaler, attention.k_scaler, attention.v_scaler):
            scaler.a.fill_(0.4)
        attention.c2p_threshold.copy_(torch.tensor([0.0, 0.1, -0.05, 0.2]))
        attention.c2p_gain.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    return attention


@pytest.mark.parametrize("c2p_reference", ["offset", "peak"])
def test_a_trained_layer_gets_the_same_gradients_compiled(c2p_reference):
    """The layer as the shipped model trains it: the reference column, the peak-following C2P, per-head thresholds
    and gains, the aged decay and the paper's converters; gradients of its inputs and of every parameter."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, h, 100, 8, generator=g).requires_grad_() for h in (4, 2, 2))
    weights = torch.randn(2, 4, 100, 8, generator=g)
    results = []
    for kernel in ("auto", "torch"):
        attention = layer(c2p_reference, kernel)
        out = attention(q, k, v)
        assert attention_node(out) == ("CompiledAttentionBackward" if kernel == "auto" else "_TiledAttentionBackward")
        params = [p for p in attention.parameters() if p.requires_grad]
        results.append((out.detach(), *torch.autograd.grad(out, [q, k, v, *params], weights)))
    assert_same(*results)


def test_it_applies_to_float32_cpu_tensors_with_numba_and_kernel_auto(monkeypatch):
    """float64, kernel "torch" or numba missing: the torch path, to the same numbers."""
    x = torch.rand(1, 1, 8, 4)
    assert functional.compiled_pass_applies(x, None)
    assert not functional.compiled_pass_applies(x.double(), None)
    assert not functional.compiled_pass_applies(x, "torch")
    *compiled, _ = run("auto")
    monkeypatch.setattr(functional, "compiled_available", lambda module: False)
    assert not functional.compiled_pass_applies(x, None)
    *fallback, node = run("auto")
    assert node == "_TiledAttentionBackward"
    assert_same(compiled, fallback)
    monkeypatch.undo()


@pytest.mark.parametrize("levels", [Quantization(), Quantization(q_levels=0, kv_levels=0)])
def test_the_compiled_transfers_round_as_torch_does(levels):
    """q, f(k), g(v) bit for bit (the DACs' levels decide every later rounding), polynomial and tabulated (the aged
    decay's terms); their gradients to float32 round-off."""
    g = torch.Generator().manual_seed(2)
    x = [(torch.randn(3, 2, 50, 8, generator=g) * 0.6 + 0.4).requires_grad_() for _ in range(3)]
    cell = CellModel.from_surrogate(REFERENCE)
    aged = decay_terms("surrogate", 64, CellModel.from_surrogate(REFERENCE, token_period_s=5.85e-6), torch.float32,
                       "cpu", 64).aged
    assert aged is not None and len(aged.values) > 1
    for expansion, names in ((None, ["CompiledTransferBackward"] * 3),
                             (aged, ["CompiledTransferBackward"] + ["CompiledTabulatedBackward"] * 2)):
        outputs = [hardware_inputs(*x, cell, levels, False, False, kernel, expansion) for kernel in ("auto", "torch")]
        assert [type(y.grad_fn).__name__ for y in outputs[0]] == names
        weights = [torch.randn(y.shape, generator=g) for y in outputs[1]]
        for compiled, reference, weight, inputs in zip(*outputs, weights, x):
            assert torch.equal(compiled, reference)
            a, b = (torch.autograd.grad(y, inputs, weight, retain_graph=True)[0] for y in (compiled, reference))
            assert (b == 0).any() and (b != 0).float().mean() > 0.5  # inside and clamped
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()))


@pytest.mark.parametrize("quantize", [True, False])
def test_unsaturated_converters_run_compiled_to_the_same_numbers(quantize):
    """The ablation without saturation (the C2P and the readout unclipped), with and without the quantizers."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 40, 8, generator=g, requires_grad=True)
    weights = torch.randn(1, 2, 40, 8, generator=g)
    results = []
    for kernel in ("auto", "torch"):
        attention = GainCellAttention.from_surrogate(REFERENCE, 2, 8, tile=16, window=32,
                                                     converters=Converters(quantize=quantize, saturate=False),
                                                     execution=Execution(kernel=kernel))
        out = attention(q, q * 0.5, q.flip(2))
        results.append((out.detach(), *torch.autograd.grad(out, [q, *attention.parameters()], weights)))
        assert attention_node(out) == ("CompiledAttentionBackward" if kernel == "auto" else "_TiledAttentionBackward")
    assert_same(*results)


def test_the_compiled_pass_gives_the_same_numbers_on_two_threads():
    """The suite runs numba on one thread per test process (tests/conftest.py); here the pass's parallel loops run
    on two (in a subprocess: numba's thread count is fixed when it loads) and still equal the torch path."""
    code = ("import numba, sys; sys.path.insert(0, 'tests'); import test_compiled_pass as t; "
            "assert numba.get_num_threads() == 2, numba.get_num_threads(); "
            "*a, node = t.run('auto', decay='surrogate'); *b, _ = t.run('torch', decay='surrogate'); "
            "assert node == 'CompiledAttentionBackward', node; t.assert_same(a, b); print('same on two threads')")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_NUM_THREADS": "2"}, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert done.returncode == 0 and "same on two threads" in done.stdout, done.stderr[-3000:]

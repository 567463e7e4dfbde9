"""The fused Triton kernel (surrogate/kernel.py) equals the torch path, outputs and gradients.

Without CUDA the kernels run on CPU tensors in Triton's interpreter: TRITON_INTERPRET=1 is set only while
this module imports the kernel module (Triton reads it when the kernels are decorated), then restored, so
other tests see the environment unchanged. With CUDA the same tests run the compiled kernels.
"""
import contextlib
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the fused kernel needs the triton package (pip install triton)")

from gaincell.errors import ConfigError  # noqa: E402
from gaincell.resources import data_path  # noqa: E402
from gaincell.surrogate.attention import GainCellAttention  # noqa: E402
from gaincell.surrogate.cellmodel import CellModel  # noqa: E402
from gaincell.surrogate.decay import decay_terms  # noqa: E402
from gaincell.surrogate.functional import gaincell_attention, use_triton  # noqa: E402
from gaincell.surrogate.options import Execution  # noqa: E402
from gaincell.surrogate.transfers import Quantization  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def interpreter():
    """TRITON_INTERPRET=1 while inside (Triton reads it when kernels are decorated and while they run on the
    CPU); the previous value afterwards. Nothing on a CUDA machine."""
    previous = os.environ.get("TRITON_INTERPRET")
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous


with interpreter():
    kernel = importlib.import_module("gaincell.surrogate.kernel")
    transfer_kernel = importlib.import_module("gaincell.surrogate.transfer_kernel")
    decode_kernel = importlib.import_module("gaincell.surrogate.decode_kernel")
    if DEVICE == "cpu" and not kernel.interpreted():  # imported earlier for the GPU: rebuild for the interpreter
        kernel = importlib.reload(kernel)
        transfer_kernel = importlib.reload(transfer_kernel)
        decode_kernel = importlib.reload(decode_kernel)


@pytest.fixture(autouse=True)
def interpreted_kernels():
    with interpreter():
        yield


@pytest.fixture(scope="module")
def cell():
    """The reference cell with a C2P offset and a 5x stronger multiply, so that with head_dim 16 the scores
    and the readouts fall on both sides of both clamps (checked below)."""
    reference = CellModel.from_surrogate(data_path("paper_reference.h5"))
    return dataclasses.replace(reference, offset=0.05, cubic=tuple(5 * c for c in reference.cubic))


def inputs(batch, heads, kv_heads, tokens, dim, seed):
    """Pulse widths q in [0, 1] and stored voltages k, v over the cell's range, float32, requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.rand(batch, heads, tokens, dim, generator=generator)
    k = 0.2 + 0.6 * torch.rand(batch, kv_heads, tokens, dim, generator=generator)
    v = 0.9 * torch.rand(batch, kv_heads, tokens, dim, generator=generator)
    return [x.to(DEVICE).requires_grad_() for x in (q, k, v)]


def both_paths(cell, shape, seed=0, **options):
    """Output and gradients (q, k, v, through the fitted polynomial) of the torch path and of the kernel."""
    q, k, v = inputs(*shape, seed)
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
    results = []
    for choice in ("torch", "triton"):
        out = gaincell_attention(q, k, v, cell, execution=Execution(kernel=choice), **options)
        results.append((out.detach(), torch.autograd.grad(out, (q, k, v), weights)))
    return results


# float32 throughout: the two paths add the same products in a different order (tl.dot's blocking vs torch's
# bmm; the kernel sums tiles in registers), which moves results by a few ulps of the largest partial sum.
# 2e-5 relative to each tensor's largest entry is ~100 ulps: far below any real error (a wrong mask, a
# missing tile, a misplaced clamp changes results at the 1e-2 .. 1 level), and it holds on the GPU too.
RELATIVE = 2e-5

CASES = {  # shape (B, H, H_kv, T, D), options
    "ring wraps, T not a multiple of the tile, quantized": ((1, 2, 2, 56, 16), dict(tile=16, window=32, decay=0.02,
                                                                                   quantize=True)),
    "no window (whole sequence), grouped kv heads": ((1, 2, 1, 40, 16), dict(tile=16, window=None, decay=0.05)),
    "window = one tile (every tile wraps onto itself)": ((2, 1, 1, 48, 16), dict(tile=16, window=16, decay=None)),
}
SLOW_CASES = {
    "tile 32, three ring tiles, quantized": ((1, 2, 2, 160, 32), dict(tile=32, window=96, decay=0.01, quantize=True)),
    "window longer than the sequence, decay by the surrogate": ((1, 1, 1, 56, 16), dict(tile=16, window=128,
                                                                                        decay="surrogate")),
}


@pytest.mark.slow
def test_kernel_equals_the_torch_path_with_per_head_thresholds(cell):
    """Each head's C2P threshold reaches the kernel's scores, and its gradient (summed over the scores it shifts)
    equals the torch path's; the ring wraps."""
    q, k, v = inputs(2, 3, 3, 56, 16, 4)
    threshold = torch.tensor([0.0, 0.05, 0.15], device=DEVICE, requires_grad=True)
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    results = []
    for choice in ("torch", "triton"):
        out = gaincell_attention(q, k, v, cell, execution=Execution(kernel=choice), tile=16, window=32, decay=0.02,
                                 threshold=threshold)
        results.append((out.detach(), torch.autograd.grad(out, (q, k, v, threshold), weights)))
    (out, grads), (fused_out, fused_grads) = results
    assert (fused_out - out).abs().max() <= RELATIVE * out.abs().max()
    for name, exact, fused in zip(("q", "k", "v", "threshold"), grads, fused_grads):
        assert exact.abs().max() > 0, name
        assert (fused - exact).abs().max() <= RELATIVE * exact.abs().max(), name
    unshifted = gaincell_attention(q, k, v, cell, execution=Execution(kernel="triton"), tile=16, window=32,
                                   decay=0.02)
    assert (unshifted[:, 1:] - fused_out[:, 1:]).abs().max() > 0.01  # the thresholds change the heads they shift
    assert torch.allclose(unshifted[:, 0], fused_out[:, 0])


def check_parity(cell, shape, options):
    (out, grads), (fused_out, fused_grads) = both_paths(cell, shape, **options)
    scale = out.abs().max()
    difference = (fused_out - out).abs()
    quantization = options.get("quantize")
    if quantization:
        # A readout sum within a few ulps of a rounding boundary may round to the neighbouring level in one
        # path: allow that for at most 0.5% of outputs, each off by exactly one step.
        step = 1.0 / (Quantization() if quantization is True else quantization).out_steps
        flipped = (difference - step).abs() <= RELATIVE * scale
        assert flipped.float().mean() <= 0.005
        difference = torch.where(flipped, torch.zeros_like(difference), difference)
    assert difference.max() <= RELATIVE * scale
    for name, exact, fused in zip("qkv", grads, fused_grads):
        assert exact.abs().max() > 0, name
        assert (fused - exact).abs().max() <= RELATIVE * exact.abs().max(), name
    return out


@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_the_torch_path(cell, case):
    out = check_parity(cell, *CASES[case])
    assert out.abs().max() > 0.1  # outputs are not trivially zero


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES)
def test_kernel_equals_the_torch_path_more_settings(cell, case):
    check_parity(cell, *SLOW_CASES[case])


@pytest.mark.slow
def test_kernel_runs_the_aged_voltage_decay_s_terms(cell):
    """The circuit's decay is several separable terms (a slow token clock: the stored voltages leak within the
    window); the kernel sums them in both stages and their gradients as the torch path does (quantized: the
    quantizers are the same with any decay, `test_kernel_equals_the_torch_path_more_settings`)."""
    slow = dataclasses.replace(cell, token_period_s=2e-4)
    assert decay_terms("surrogate", 32, slow, torch.float32, "cpu", 32).tables.shape[0] >= 3
    check_parity(slow, (1, 2, 1, 40, 16), dict(tile=16, window=32, decay="surrogate", quantize=True))


@pytest.mark.slow
def test_query_blocks_smaller_than_the_tile(cell):
    """Launch settings with 16-row query blocks inside 32-token tiles (rows start inside a tile), ring wraps."""
    from gaincell.surrogate.decay import decay_table_for
    from gaincell.surrogate.functional import hardware_inputs, tiled_attention

    q, k, v = inputs(1, 2, 2, 100, 32, 3)
    qh, fk, fv = hardware_inputs(q, k, v, cell, None, False, False, kernel="torch")
    reference = tiled_attention(qh, fk, fv, cell, decay=0.02, tile=32, window=64, out_steps=0,
                                execution=Execution(kernel="torch"))
    table = decay_table_for(0.02, 64, cell, q.dtype, q.device)
    small = {name: (16, 4, 2) for name in kernel.KERNELS}
    qh, fk, fv = hardware_inputs(q, k, v, cell, None, False, False, kernel="torch")
    fused = kernel.fused_tiled_attention(qh.reshape(2, 100, 32), fk.reshape(2, 100, 32), fv.reshape(2, 100, 32),
                                         table, tile=32, ring=64, offset=cell.offset, out_steps=0, launch=small)
    weights = torch.randn(reference.shape, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    for exact, ours in zip(torch.autograd.grad(reference, (q, k, v), weights),
                           torch.autograd.grad(fused.view(1, 2, 100, 32), (q, k, v), weights)):
        assert (ours - exact).abs().max() <= RELATIVE * exact.abs().max()
    assert (fused.view(1, 2, 100, 32) - reference).abs().max() <= RELATIVE * reference.abs().max()


DECODE_CASES = {  # (C2P reference, normalization, token period): the paper's converters, quantized
    "offset reference, product-form decay": ("offset", "none", 20e-6),
    "peak reference, reference column, aged decay terms": ("peak", "reference-column", 2e-4),
}


@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_kernel_equals_the_torch_decode(case):
    """A prompt of 50 tokens through the parallel pass fills a ring of 32 (it wraps), then 4 tokens one at a time,
    grouped kv heads, each head with its own C2P threshold and gain: the fused decode kernel's outputs equal the
    torch decode's (a readout on a quantizer boundary may round to the neighbouring level in one of them)."""
    reference, normalization, period = DECODE_CASES[case]
    cell = CellModel.from_surrogate(data_path("paper_reference.h5"), read_phases=2)
    cell = dataclasses.replace(cell, token_period_s=period, hardware=cell.hardware.overridden(
        normalization=normalization, c2p_reference=reference))
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, heads, 54, 16, generator=generator).to(DEVICE) for heads in (4, 2, 2))
    layer = GainCellAttention(cell, 4, 16, kv_heads=2, tile=16, window=32).to(DEVICE)
    outputs = []
    with torch.no_grad():
        for scaler in (layer.q_scaler, layer.k_scaler, layer.v_scaler):
            scaler.a.fill_(0.25)
        layer.c2p_threshold.copy_(0.05 * torch.arange(4.0))
        layer.c2p_gain.copy_(1.0 + 0.5 * torch.arange(4.0))
        for choice in ("torch", "triton"):
            layer.execution, cache = Execution(kernel="torch"), layer.new_cache()
            layer(q[:, :, :50], k[:, :, :50], v[:, :, :50], cache=cache)
            layer.execution = Execution(kernel=choice)
            outputs.append(torch.cat([layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                                      for t in range(50, 54)], dim=2))
    assert layer.decay_terms(32, q).tables.shape[0] >= (3 if period > 1e-4 else 1)
    torch_decode, fused = outputs
    scale = torch_decode.abs().max()
    flipped = (fused - torch_decode).abs() > RELATIVE * scale
    assert scale > 0.1 and flipped.float().mean() <= 0.01, f"{int(flipped.sum())} outputs differ"


def test_decay_blocks_are_built_once_per_table_and_rebuilt_when_it_changes():
    """The blocks of a table are kept while it lives unchanged; a table changed in place, or shorter than the
    ring (zeros past its end), gives the blocks built from its current values."""
    table = torch.exp(-0.1 * torch.arange(48.0, device=DEVICE))
    first = kernel.cached_decay_blocks(table, 16, 64)
    assert kernel.cached_decay_blocks(table, 16, 64) is first
    padded = torch.cat([table, table.new_zeros(16)])
    assert torch.equal(first, kernel.decay_blocks(padded, 16, 64))
    table.mul_(0.5)
    again = kernel.cached_decay_blocks(table, 16, 64)
    assert again is not first and torch.equal(again, first * 0.5)
    assert torch.equal(kernel.cached_decay_blocks(table, 32, 64), kernel.decay_blocks(padded * 0.5, 32, 64))


@pytest.mark.parametrize("quantize", [False, True])
def test_the_fused_transfers_equal_the_torch_ones(cell, quantize):
    """q, f(k), g(v) and their gradients from one kernel each way, inputs on both sides of the stored range."""
    from gaincell.surrogate.functional import hardware_inputs
    from gaincell.surrogate.transfers import Quantization

    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.rand(2, 3, 20, 16, generator=generator) * 1.4 - 0.2 for _ in range(3))
    q, k, v = (x.to(DEVICE).requires_grad_() for x in (q, k, v))
    quantization = Quantization() if quantize else None
    results = []
    for choice in ("torch", "triton"):
        outs = hardware_inputs(q, k, v, cell, quantization, False, False, kernel=choice)
        weights = [torch.full_like(o, 0.5) + o.detach() for o in outs]
        results.append((outs, torch.autograd.grad(outs, (q, k, v), weights)))
    for exact, fused in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert exact.abs().max() > 0
        assert torch.allclose(fused, exact, rtol=1e-5, atol=1e-6 * exact.abs().max().item())


def test_the_inputs_reach_both_sides_of_every_clamp(cell):
    """The cases above mean something only if scores and readouts fall inside and outside the clamps."""
    from gaincell.surrogate.internals import attention_internals

    q, k, v = (x.detach().cpu() for x in inputs(1, 2, 2, 56, 16, 0))
    internals = attention_internals(q, k, v, cell, decay=0.02, tile=16, window=32)
    phi = internals["phi"][internals["S"] != 0]
    for inside in ((phi == 0), (phi == 1), (phi > 0) & (phi < 1)):
        assert inside.float().mean() > 0.03
    per_tile = gaincell_attention(q, k, v, cell, decay=0.02, tile=16, window=16,
                                  execution=Execution(kernel="torch"))  # one tile each
    assert 0.2 < (per_tile.abs() == 1).float().mean() < 0.8


def test_the_switch(cell, monkeypatch):
    q = torch.zeros(1, 1, 16, 16, device=DEVICE)
    assert not use_triton(q, 16, "torch")
    assert use_triton(q, 16, "triton")
    monkeypatch.setenv("GAINCELL_KERNEL", "torch")
    assert not use_triton(q, 16)
    monkeypatch.setenv("GAINCELL_KERNEL", "fast")
    with pytest.raises(ConfigError, match="GAINCELL_KERNEL: must be one of auto, triton, torch; got 'fast'"):
        use_triton(q, 16)
    with pytest.raises(ConfigError, match="kernel: the Triton kernel cannot run this case: tile 24"):
        use_triton(q, 24, "triton")
    assert not use_triton(q, 24, "auto")  # auto falls back to the torch path
    assert use_triton(q, 16, "auto") == (DEVICE == "cuda")  # auto: the kernel on CUDA only


def test_a_layer_built_for_the_torch_path_ignores_the_environment(cell, monkeypatch):
    """Execution(kernel="torch") (as the surrogate's CPU probe builds its layer) holds for the transfers too, whatever
    GAINCELL_KERNEL says."""
    from gaincell.surrogate.attention import GainCellAttention

    def refuse(*args):
        raise AssertionError("the fused transfers ran")

    monkeypatch.setenv("GAINCELL_KERNEL", "triton")
    monkeypatch.setattr(transfer_kernel.FusedTransfer, "apply", refuse)
    layer = GainCellAttention(cell, 2, 16, tile=16, window=32, execution=Execution(kernel="torch"))
    q, k, v = (x.detach().cpu() for x in inputs(1, 2, 2, 40, 16, 0))
    assert layer(q, k, v).shape == q.shape


def test_the_interpreter_setting_is_restored(monkeypatch):
    assert DEVICE == "cuda" or kernel.interpreted()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with interpreter():
        assert os.environ["TRITON_INTERPRET"] == ("1" if DEVICE == "cpu" else "0")
    assert os.environ["TRITON_INTERPRET"] == "0"
    monkeypatch.delenv("TRITON_INTERPRET")
    with interpreter():
        pass
    assert "TRITON_INTERPRET" not in os.environ


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA device")
def test_bfloat16_on_the_gpu_is_close_to_the_float32_reference(cell):
    q, k, v = (x.bfloat16() for x in inputs(2, 4, 4, 300, 64, 0))
    options = dict(tile=64, window=128, decay=0.01)
    # reference: the float32 torch path on the same (bf16-rounded) inputs; the kernel's bf16 products round
    # scores by ~2^-9, which can move a tile's readout across a quantizer level (1/15): allow rare one-level
    # moves per tile, but the typical output must agree far better than one level
    reference = gaincell_attention(q.float(), k.float(), v.float(), cell, execution=Execution(kernel="torch"),
                                   **options)
    fused = gaincell_attention(q, k, v, cell, execution=Execution(kernel="auto"), **options)
    assert fused.dtype == torch.bfloat16
    difference = (fused.float() - reference).abs()
    assert difference.mean() <= 0.01 * reference.abs().max()
    assert (difference > 1 / 15 + 0.02).float().mean() <= 0.01


@pytest.mark.slow
def test_the_kernels_compile_for_a_gpu(tmp_path):
    """The kernels compile for an sm_90 GPU (Triton's compiler, no GPU needed), with one term and with the four
    of an aged-voltage decay, and the decode step with either C2P reference: two processes share the twelve
    variants. Triton's cache is kept between test runs
    (tests/reference_cache.py's folder); Triton keys it on the kernels' sources and their dependencies, its own
    version, the target and the options, so a changed kernel is compiled afresh, and a failure is never cached."""
    import reference_cache

    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment["TRITON_CACHE_DIR"] = str(reference_cache.cache_folder() / "triton")
    runs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "kernel_compile.py"), str(part), "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=tmp_path)
            for part in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "".join(stdout for stdout, _ in outputs).count("compiled") == 12


@pytest.mark.slow
def test_gpu_check_smoke_run_writes_its_summary(tmp_path, llama_folder):
    """benchmarks/gpu_check.py --smoke: every stage on the CPU at tiny sizes, results written as they come; the
    adapt_real stage (what a lent GPU runs on SmolLM2) on a tiny Llama: it times a probe, adapts with the shipped
    layer's hardware fields and the CPU recipe's stages (transfer, distill, mlp, heads), scores both texts and
    brings back the adapter package."""
    text = (ROOT / "data" / "pride_and_prejudice_ch1-3.txt").read_text()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "train.txt").write_text(text)
    (texts / "wikitext-test.txt").write_text(text[-4000:])
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path), "--stages", "kernel,host,profile,energy,tests,adapt,adapt_real",
                           "--adapt-model", str(llama_folder), "--adapt-texts", str(texts), "--adapt-c2p-gain", "2",
                           "--adapt-recall-weight", "10"],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert "kernel vs torch" in summary and "FAILED" not in summary
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines() if line]
    assert len(records) >= 4
    # a measurement skipped because its code raised (a kernel's signature changed, say) would hide on a GPU too
    broken = [r for r in records if r["status"] == "skipped" and re.match(r"\w+(Error|Exception)\b", r.get("why", ""))]
    assert not broken, broken
    decode = next(r for r in records if r["name"].startswith("decode step"))  # the decode kernel, timed beside the torch path
    assert decode["status"] == "ok" and decode["kernel_us"] > 0 and decode["torch_path_us"] > 0
    scored = next(r for r in records if r["name"] == "adapted and scored")
    assert scored["perplexity"] > 1 and 0 <= scored["lambada_accuracy"] <= 1 and scored["tokens_seen"] > 0
    assert set(scored["stage_seconds"]) == {"transfer", "distill", "mlp", "heads"} and scored["heads"] == 2
    package = json.loads((tmp_path / "adapter" / "smollm2-gaincell-gpu.json").read_text())
    assert package["layer"]["hardware"] == {"normalization": "reference-column", "c2p_reference": "peak"}
    assert [s["kind"] for s in package["scores"]] == ["perplexity", "lambada"]
    assert (tmp_path / "adapter" / "smollm2-gaincell-gpu.safetensors").stat().st_size > 1000
    assert "C2P gain 2.0, recall weight 10" in package["command"] and "+ mlp 2 steps, then 2 heads" in package["command"]

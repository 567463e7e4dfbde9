"""The `host` stage of `gpu_check.py`: where a fused-kernel call spends its time when the GPU waits for the host.

For the kernel alone and for SDPA flash (B8 H12 T1024 D64 bf16; tiny sizes with --smoke), forward and
forward+backward:
- `host_us`: host time to submit one call (perf_counter around 50 calls queued back to back, no synchronisation
  inside; the device may still be busy when it is read);
- `queued_us`: synchronised time per call of those 50 calls (CUDA events around all of them): the larger of the
  host and the device time per call, i.e. what a training step pays when nothing else hides the host;
- `graph_us`: the same calls replayed from one captured CUDA graph (no host work per call: device time);
- the pieces of the kernel's host path one by one: the decay blocks, one bare Triton launch of the forward
  kernel, the autograd function with the blocks built beforehand.
"""
from __future__ import annotations

import time

from gpu_measurements import SMOKE_SHAPE

CALLS = 50


def queued(function, device, calls: int = CALLS, repeats: int = 3) -> dict:
    """Host submit time and synchronised time per call of `calls` calls queued back to back (microseconds):
    the median of `repeats` runs, and every run's queued time (the host of a shared machine is noisy)."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        function()  # warm-up (compiles the kernels on the first call; on the CPU nothing compiles)
    host, total = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        started = time.perf_counter()
        for _ in range(calls):
            function()
        host.append((time.perf_counter() - started) / calls * 1e6)
        if cuda:
            stop.record()
            torch.cuda.synchronize()
            total.append(start.elapsed_time(stop) / calls * 1e3)
        else:
            total.append(host[-1])
    return {"host_us": sorted(host)[len(host) // 2], "queued_us": sorted(total)[len(total) // 2],
            "queued_runs_us": [round(x, 1) for x in total]}


def graphed(function, device, calls: int = CALLS) -> dict:
    """Synchronised time per call of `function` replayed from a captured CUDA graph (device time only)."""
    import torch

    if device.type != "cuda":
        return {"graph_us": None, "why": "CUDA graphs need a GPU"}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            function()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    return {"graph_us": queued(graph.replay, device, calls)["queued_us"]}


def stage_host(report, budget, device, smoke: bool) -> None:
    import torch
    import triton

    from gaincell.resources import data_path
    from gaincell.surrogate import kernel as fused
    from gaincell.surrogate.cellmodel import CellModel

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"))
    b, h, t, d = SMOKE_SHAPE if smoke else (8, 12, 1024, 64)
    tile, window = (16, 32) if smoke else (64, 1024)
    dtype = torch.float32 if smoke else torch.bfloat16
    calls, repeats = (1, 1) if smoke else (CALLS, 3)  # the interpreter takes seconds per kernel call
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.rand(b, h, t, d, device=device, generator=generator).to(dtype).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn_like(q)
    flat = [x.detach().reshape(b * h, t, d).contiguous().requires_grad_() for x in (q, k, v)]
    table = torch.exp(-0.01 * torch.arange(window, device=device, dtype=dtype))
    blocks = fused.decay_blocks(table, tile, window)[None]  # one term (the product form)
    fk, fv = flat[1][None], flat[2][None]
    strides = fused._strides(fk, blocks)
    options = fused._launch_options(flat[0], fk, blocks, tile, "forward", None)
    out = torch.empty_like(flat[0])
    grid = (triton.cdiv(t, options["BLOCK_M"]), b * h)

    def kernel_alone():
        return fused.fused_tiled_attention(*flat, table, tile=tile, ring=window, offset=cell.offset, out_steps=15)

    offsets = torch.full((b * h,), float(cell.offset), device=device)  # each row's C2P offset (no threshold)

    def kernel_prebuilt_blocks():
        return fused.FusedTiledAttention.apply(flat[0], fk, fv, blocks, offsets, tile, window, 15, None)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    pieces = {"decay blocks": lambda: fused.decay_blocks(table, tile, window),
              "bare forward launch": lambda: fused._forward_kernel[grid](
                  flat[0], fk, fv, blocks, out, t, d, window, offsets, *strides, OUT_STEPS=15, **options),
              "empty_like": lambda: torch.empty_like(flat[0])}
    grad_q, grad_k, grad_v = torch.empty_like(flat[0]), torch.empty_like(fk), torch.empty_like(fv)
    grad_flat = grad_out.reshape(b * h, t, d)
    q_options = fused._launch_options(flat[0], fk, blocks, tile, "grad_q", None)
    kv_options = fused._launch_options(flat[0], fk, blocks, tile, "grad_kv", None)
    query_blocks = triton.cdiv(t, q_options["BLOCK_M"])
    grad_offsets = torch.empty(b * h, query_blocks, dtype=torch.float32, device=device)
    pieces["bare grad_q launch"] = lambda: fused._grad_q_kernel[(query_blocks, b * h)](
        flat[0], fk, fv, blocks, grad_flat, grad_q, grad_offsets, t, d, window, offsets, *strides, **q_options)
    pieces["bare grad_kv launch"] = lambda: fused._grad_kv_kernel[(triton.cdiv(t, tile), b * h, 1)](
        flat[0], fk, fv, blocks, grad_flat, grad_k, grad_v, t, d, window, offsets, *strides, **kv_options)

    class Context:  # what autograd hands the backward: the saved tensors and the geometry
        saved_tensors = (flat[0], fk, fv, blocks, offsets)
        geometry = (tile, window, None)

    pieces["backward called directly"] = lambda: fused.FusedTiledAttention.backward(Context, grad_flat)
    pieces["autograd of one element-wise op"] = lambda: torch.autograd.grad(flat[0] * 2, flat[0], grad_flat)

    class Twice(torch.autograd.Function):  # the same op as a Python autograd function (like the kernel's)
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    pieces["autograd of one element-wise op in a Python function"] = lambda: torch.autograd.grad(
        Twice.apply(flat[0]), flat[0], grad_flat)
    if not smoke:  # the compiled kernel launched directly: Triton's launcher without binding and cache lookup
        values = dict(q_ptr=flat[0], fk_ptr=fk, fv_ptr=fv, blocks=blocks, out_ptr=out, tokens=t, dim=d,
                      ring=window, offset_ptr=offsets, term_stride=strides[0], block_stride=strides[1],
                      OUT_STEPS=15,
                      **{k: v for k, v in options.items() if k not in ("num_warps", "num_stages")})
        try:
            compiled = pieces["bare forward launch"]()
            arguments = [values[name] for name in fused._forward_kernel.arg_names]
            pieces["compiled kernel launch"] = lambda: compiled[(*grid, 1)](*arguments)
        except Exception as exc:
            report.add("host", "compiled kernel launch", "skipped", why=f"{type(exc).__name__}: {str(exc)[:200]}")
    for name, piece in pieces.items():
        with torch.set_grad_enabled(name.startswith("autograd")):
            try:
                report.add("host", f"{name}, B{b} H{h} T{t} D{d}", **queued(piece, device, calls, repeats))
            except Exception as exc:
                report.add("host", f"{name}, B{b} H{h} T{t} D{d}", "skipped",
                           why=f"{type(exc).__name__}: {str(exc)[:200]}")

    def forward_only(function):
        def run():
            with torch.no_grad():
                function()
        return run

    def forward_backward(function, inputs):
        def run():
            torch.autograd.grad(function(), inputs, grad_out.reshape(function_shape[function]))
        return run

    function_shape = {kernel_alone: (b * h, t, d), kernel_prebuilt_blocks: (b * h, t, d), sdpa: (b, h, t, d)}
    sides = {"kernel alone": (kernel_alone, flat), "kernel, blocks built beforehand": (kernel_prebuilt_blocks, flat),
             "SDPA flash (causal)": (sdpa, (q, k, v))}
    if smoke:
        del sides["kernel, blocks built beforehand"]
    def forward_backward_one_thread(function, inputs):
        def run():
            with torch.autograd.set_multithreading_enabled(False):
                torch.autograd.grad(function(), inputs, grad_out.reshape(function_shape[function]))
        return run

    for label, make in (("fwd", lambda f, i: forward_only(f)), ("fwd+bwd", forward_backward),
                        ("fwd+bwd, backward on the calling thread", forward_backward_one_thread)):
        for side, (function, inputs) in sides.items():
            if budget.left() < 45 and not smoke:
                report.add("host", f"{label} {side}", "skipped", why="budget spent")
                continue
            run = make(function, inputs)
            figures = queued(run, device, calls, repeats)
            try:
                figures |= graphed(run, device, calls)
            except Exception as exc:  # capture can refuse an operation: the other figures still count
                figures |= {"graph_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            report.add("host", f"{label} {side}, B{b} H{h} T{t} D{d} {str(dtype)[6:]}", **figures)


def stage_model_profile(report, budget, device, smoke: bool) -> None:
    """Where one training step of a SmolLM2-shaped model with gain-cell attention spends host and device time:
    the operators with the most host time, the device kernels with the most device time (`device_ms`: the sum
    of the 25 largest), and the calls that make the host wait for the device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gpu_measurements import SMOLLM2, profiled

    from gaincell.adapt.models import swap_attention
    from gaincell.resources import data_path

    config = dict(SMOLLM2)
    if smoke:
        config.update(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    batch, seq = (1, 32) if smoke else (8, 1024)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa")).to(device)
    swap_attention(model, data_path("paper_reference.h5"), tile=16 if smoke else 64, window=32 if smoke else 1024)
    tokens = torch.randint(0, config["vocab_size"], (batch, seq + 1), device=device)

    def step():
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"), \
                torch.autograd.set_multithreading_enabled(False):
            logits = model(tokens[:, :-1], use_cache=False).logits.float()
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    events, wall = profiled(step, device, 1)
    host = sorted(((e.self_cpu_time_total, e.count, e.key[:70]) for e in events), reverse=True)[:25]
    waits = {e.key: {"count": e.count, "host_ms": e.self_cpu_time_total / 1e3} for e in events
             if any(word in e.key for word in ("Synchronize", "item", "local_scalar", "Memcpy", "nonzero"))}
    device = sorted(((getattr(e, "self_device_time_total", 0.0), e.count, e.key[:70]) for e in events
                     if e.device_type.name == "CUDA" or "kernel" in e.key.lower()), reverse=True)[:25]
    device_ms = sum(us for us, _, _ in device) / 1e3
    report.add("host", f"one training step, SmolLM2 shape B{batch} T{seq}, gain-cell attention (profiled)",
               wall_ms_profiled=wall * 1e3, device_ms=device_ms, waits=waits,
               host_top={name: {"ms": us / 1e3, "calls": calls} for us, calls, name in host},
               device_top={name: {"ms": us / 1e3, "calls": calls} for us, calls, name in device})

"""The measurements of `gpu_check.py` on the GPU (or, with --smoke, tiny sizes on the CPU): the fused kernel
against the torch path and SDPA, where its time goes, and adaptation throughput. Each stage writes every figure
to the run's `Report` as soon as it is measured and stops early when the run's `Budget` is nearly spent."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
               tie_word_embeddings=True)  # HuggingFaceTB/SmolLM2-135M config.json


def timed(function, device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak bytes above the memory in use before) of `function()`, synchronised."""
    import torch

    if device.type == "cuda":
        function()  # warm-up (compiles the kernels on the first call; on the CPU nothing compiles)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        return sorted(times)[len(times) // 2], float(torch.cuda.max_memory_allocated() - before)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], float("nan")


# smoke runs (the CPU, Triton's interpreter): the smallest shapes that still run every code path; B H T D
SMOKE_SHAPE = (1, 1, 32, 16)
SMOKE_RING_SHAPE = (1, 1, 48, 16)  # longer than the 32-token window: the ring wraps
SWEEP = [(rows, warps, stages) for rows in (32, 64) for warps in (4, 8) for stages in (2, 3)]


def stage_kernel(report, budget, device, smoke: bool) -> None:
    import torch
    from agreement import relative_difference

    from gaincell.resources import data_path
    from gaincell.surrogate import kernel as fused
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.decay import decay_table_for
    from gaincell.surrogate.decoding import decode_step
    from gaincell.surrogate.functional import gaincell_attention, hardware_inputs
    from gaincell.surrogate.options import Execution

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"))
    dtype = torch.float32 if smoke else torch.bfloat16
    tile, window = (16, 32) if smoke else (64, 1024)
    options = dict(decay=0.01, tile=tile, window=window, quantize=True)
    kernel_path, torch_path = Execution(kernel="triton"), Execution(kernel="torch")

    def qkv(b, h, t, d, dtype, grad=False):
        generator = torch.Generator(device=device).manual_seed(0)
        q = torch.rand(b, h, t, d, device=device, generator=generator).to(dtype)
        k, v = (0.9 * torch.rand(b, h, t, d, device=device, generator=generator).to(dtype) for _ in range(2))
        return [x.requires_grad_(grad) for x in (q, k, v)]

    # the sides must agree before any time means anything (float32, no quantization: no level flips)
    shape = SMOKE_RING_SHAPE if smoke else (2, 12, 1536, 64)
    q, k, v = qkv(*shape, torch.float32, grad=True)
    exact = dict(options, quantize=False)
    outs = [gaincell_attention(q, k, v, cell, execution=Execution(kernel=choice), **exact)
            for choice in ("torch", "triton")]
    weights = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(out, (q, k, v), weights) for out in outs]
    differences = [relative_difference(outs[1].detach().cpu().numpy(), outs[0].detach().cpu().numpy())]
    differences += [relative_difference(b.cpu().numpy(), a.cpu().numpy()) for a, b in zip(*grads)]
    worst = max(differences)
    report.add("kernel", f"agreement kernel vs torch path, float32, B{shape[0]} H{shape[1]} T{shape[2]} "
                         f"D{shape[3]} (ring wraps)", "ok" if worst <= 1e-4 else "FAILED",
               output_rel_diff=differences[0], grad_q_k_v_rel_diff=differences[1:], allowed=1e-4)
    del q, k, v, outs, grads
    if worst > 1e-4:
        return  # timings of sides that disagree mean nothing

    repeats = 1 if smoke else 10
    table = decay_table_for(0.01, window, cell, dtype, device)

    def kernel_alone(q, k, v, launch=None):
        """The fused attention kernel on already evaluated hardware inputs (what SDPA computes)."""
        b, h, t, d = q.shape
        return fused.fused_tiled_attention(q.reshape(b * h, t, d), k.reshape(b * h, t, d), v.reshape(b * h, t, d),
                                           table, tile=tile, ring=window, offset=cell.offset, out_steps=15,
                                           launch=launch).view(b, h, t, d)

    def measure(forward, tensors, backward):
        grad_out = torch.randn_like(tensors[0])

        def run():
            if backward:
                torch.autograd.grad(forward(), tensors, grad_out)
            else:
                with torch.no_grad():
                    forward()
        try:
            seconds, peak = timed(run, device, repeats)
            return {"ms": seconds * 1e3, "peak_MiB": peak / 2**20}
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            return {"error": f"out of memory: {str(exc)[:120]}"}

    # launch settings: every (query rows, warps, stages) of SWEEP for all three kernels, B8 H12 T1024
    b, h, t, d = SMOKE_SHAPE if smoke else (8, 12, 1024, 64)
    q, k, v = qkv(b, h, t, d, dtype, grad=True)
    for settings in SWEEP[:1] if smoke else SWEEP:
        if budget.left() < 240 and not smoke:
            report.add("kernel", f"launch {settings}", "skipped", why="budget spent")
            continue
        launch = {name: settings for name in fused.KERNELS}
        forward = measure(lambda: kernel_alone(q, k, v, launch), (q, k, v), False)
        both = measure(lambda: kernel_alone(q, k, v, launch), (q, k, v), True)
        report.add("kernel", f"launch {settings} (query rows, warps, stages), kernel alone, B{b} H{h} T{t} D{d}",
                   fwd=forward, fwd_bwd=both, defaults=fused.LAUNCH)
    del q, k, v

    shapes = [SMOKE_SHAPE] if smoke else [(8, 12, 1024, 64), (1, 12, 4096, 64)]
    for b, h, t, d in shapes:
        for backward in (False, True):
            if budget.left() < 60 and not smoke:
                report.add("kernel", f"B{b} H{h} T{t} D{d}", "skipped", why="budget spent")
                continue
            q, k, v = qkv(b, h, t, d, dtype, grad=backward)
            sides = {"kernel alone": lambda: kernel_alone(q, k, v),
                     "gain-cell attention (transfers + kernel)": lambda: gaincell_attention(
                         q, k, v, cell, execution=kernel_path, **options),
                     "torch path": lambda: gaincell_attention(q, k, v, cell, execution=torch_path, **options),
                     "SDPA flash (causal)": lambda: torch.nn.functional.scaled_dot_product_attention(
                         q, k, v, is_causal=True)}
            figures = {side: measure(forward, (q, k, v), backward) for side, forward in sides.items()}
            sdpa = figures["SDPA flash (causal)"].get("ms", float("nan"))
            report.add("kernel", f"{'fwd+bwd' if backward else 'fwd'} B{b} H{h} T{t} D{d} {str(dtype)[6:]}",
                       **figures, kernel_over_sdpa=figures["kernel alone"].get("ms", float("nan")) / sdpa,
                       attention_over_sdpa=figures["gain-cell attention (transfers + kernel)"].get(
                           "ms", float("nan")) / sdpa,
                       attention_over_torch=figures["gain-cell attention (transfers + kernel)"].get(
                           "ms", float("nan")) / figures["torch path"].get("ms", float("nan")),
                       window=window, tile=tile, launch=fused.LAUNCH)
            del q, k, v

    # the circuit's aged-voltage decay: several terms through the same kernel (SmolLM2's clock: 4 for this cell);
    # agreement with the torch path first (float32, no quantization), then time against the product form
    aged_cell = CellModel.from_surrogate(data_path("paper_reference.h5"), token_period_s=5.85e-6)
    aged = dict(options, decay="surrogate")
    shape = SMOKE_RING_SHAPE if smoke else (2, 12, 1536, 64)
    q, k, v = qkv(*shape, torch.float32, grad=True)
    outs = [gaincell_attention(q, k, v, aged_cell, execution=Execution(kernel=choice), **dict(aged, quantize=False))
            for choice in ("torch", "triton")]
    grads = [torch.autograd.grad(out, (q, k, v), torch.ones_like(out)) for out in outs]
    differences = [relative_difference(outs[1].detach().cpu().numpy(), outs[0].detach().cpu().numpy())]
    differences += [relative_difference(b.cpu().numpy(), a.cpu().numpy()) for a, b in zip(*grads)]
    agree = max(differences) <= 1e-4
    report.add("kernel", f"aged-voltage decay: agreement kernel vs torch path, float32, B{shape[0]} H{shape[1]} "
                         f"T{shape[2]} D{shape[3]}", "ok" if agree else "FAILED", output_rel_diff=differences[0],
               grad_q_k_v_rel_diff=differences[1:], allowed=1e-4)
    del q, k, v, outs, grads
    b, h, t, d = SMOKE_SHAPE if smoke else (8, 12, 1024, 64)
    if agree and (smoke or budget.left() >= 60):
        q, k, v = qkv(b, h, t, d, dtype, grad=True)
        sides = {"aged decay, kernel": lambda: gaincell_attention(q, k, v, aged_cell, execution=kernel_path, **aged),
                 "aged decay, torch path": lambda: gaincell_attention(q, k, v, aged_cell, execution=torch_path,
                                                                      **aged),
                 "product form, kernel": lambda: gaincell_attention(q, k, v, cell, execution=kernel_path, **options)}
        figures = {side: measure(forward, (q, k, v), True) for side, forward in sides.items()}
        report.add("kernel", f"fwd+bwd aged-voltage decay B{b} H{h} T{t} D{d} {str(dtype)[6:]}", **figures,
                   aged_kernel_over_product_kernel=figures["aged decay, kernel"].get("ms", float("nan"))
                   / figures["product form, kernel"].get("ms", float("nan")),
                   aged_kernel_over_torch=figures["aged decay, kernel"].get("ms", float("nan"))
                   / figures["aged decay, torch path"].get("ms", float("nan")))
        del q, k, v

    # decode: one new token per sequence against a full ring (the kernel, the torch path; SDPA over the same cache)
    b, h, slots, d = (1, 2, 32, 16) if smoke else (8, 12, 1024, 64)
    q, k, v = qkv(b, h, slots, d, dtype)
    qh, fk, fv = hardware_inputs(q[:, :, -1:], k, v, cell, None, False, False)
    ages = torch.arange(slots - 1, -1, -1, device=device)
    with torch.no_grad():
        def step(choice):
            return decode_step(qh, fk, fv, ages, table[:slots], cell, tile=tile, out_steps=15, kernel=choice)

        # a readout on a quantizer boundary may take the neighbouring level in one path: count those, they must be rare
        flipped = float(((step("triton").float() - step("torch").float()).abs() > 1e-3).float().mean())
        steps = 1 if smoke else repeats * 20  # the interpreter takes 0.2 s a step
        ours, _ = timed(lambda: step("torch"), device, steps)
        fused, _ = timed(lambda: step("triton"), device, steps)
        sdpa, _ = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q[:, :, -1:], k, v), device, steps)
    report.add("kernel", f"decode step B{b} H{h} cache {slots} D{d}", "ok" if flipped <= 0.01 else "FAILED",
               torch_path_us=ours * 1e6, kernel_us=fused * 1e6, sdpa_us=sdpa * 1e6, torch_over_sdpa=ours / sdpa,
               kernel_over_sdpa=fused / sdpa, outputs_off_by_a_level=flipped,
               note="attention core only (the ring's f(k), g(v) are written once per token); target kernel <= 2x SDPA")


def stage_profile(report, budget, device, smoke: bool) -> None:
    """Where the time of one gain-cell attention forward+backward goes: device time per kernel (torch
    profiler, 3 iterations after a warm-up) against the synchronised wall time of the same iterations."""
    import torch

    from gaincell.resources import data_path
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.functional import gaincell_attention
    from gaincell.surrogate.options import Execution

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"))
    b, h, t, d = SMOKE_SHAPE if smoke else (8, 12, 1024, 64)
    dtype = torch.float32 if smoke else torch.bfloat16
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.rand(b, h, t, d, device=device, generator=generator).to(dtype).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn_like(q)
    options = dict(decay=0.01, tile=16 if smoke else 64, window=32 if smoke else 1024, quantize=True,
                   execution=Execution(kernel=None if smoke else "triton"))

    def step():
        torch.autograd.grad(gaincell_attention(q, k, v, cell, **options), (q, k, v), grad_out)

    iterations = 3
    events, wall = profiled(step, device, iterations)
    rows = []
    for event in events:
        device_us = getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))
        if device_us > 0:
            rows.append((device_us / iterations, event.count // iterations, event.key[:60]))
    rows.sort(reverse=True)
    report.add("profile", f"gain-cell attention fwd+bwd B{b} H{h} T{t} D{d} {str(dtype)[6:]}, per iteration",
               wall_ms_profiled=wall * 1e3, device_ms=sum(r[0] for r in rows) / 1e3,
               kernels={name: {"us": us, "calls": calls} for us, calls, name in rows[:14]})


def profiled(step, device, iterations: int):
    """(operator statistics, wall seconds per iteration) of `iterations` calls of `step` under the torch
    profiler (host, and device on CUDA), after one warm-up call, synchronised at the end."""
    import torch

    step()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                          if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(iterations):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return profile.key_averages(), (time.perf_counter() - started) / iterations


def stage_adapt(report, budget, device, smoke: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gaincell.adapt.models import swap_attention
    from gaincell.adapt.train import TrainConfig, finetune
    from gaincell.adapt.transfer import TransferObjective, add_adapters, layer_groups, match_statistics
    from gaincell.resources import data_path

    config = dict(SMOLLM2)
    if smoke:
        config.update(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    batch, seq, steps = (1, 32, 2) if smoke else (8, 1024, 6)
    stream = torch.randint(0, config["vocab_size"], (200_000 if not smoke else 2_000,),
                           generator=torch.Generator().manual_seed(0))
    work = Path(tempfile.mkdtemp(prefix="gaincell-adapt-"))
    variants = [("transfer stage (scalers + LoRA r16), fused kernel", "triton", "transfer"),
                ("transfer stage (scalers + LoRA r16), torch path", "torch", "transfer"),
                ("fine-tune, gain-cell attention, fused kernel", "triton", "finetune"),
                ("fine-tune, softmax attention (unmodified model, SDPA)", None, "finetune")]
    for name, kernel, training in variants:
        if budget.left() < (20 if smoke else 90):
            report.add("adapt", name, "skipped", why="budget spent")
            continue
        if smoke and kernel == "triton":
            report.add("adapt", name, "skipped", why="smoke run: the interpreter is too slow for a model")
            continue
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa")).to(device)
        if kernel is not None:
            os.environ["GAINCELL_KERNEL"] = kernel
            swap_attention(model, data_path("paper_reference.h5"), tile=16 if smoke else 64,
                           window=32 if smoke else 1024)
        try:
            train = TrainConfig(steps=steps, batch=batch, seq=seq, lr=1e-4, warmup=1, checkpoint_every=10_000)
            options = {}
            if training == "transfer":
                match_statistics(model, stream[:seq].view(1, -1).to(device))
                model = add_adapters(model, 16)
                options = dict(objective=TransferObjective(model), groups=layer_groups(model, 2e-3, 1e-2),
                               dropout=False)
            finetune(model, stream, TrainConfig(steps=1, batch=batch, seq=seq, lr=1e-4, warmup=1, seed=1),
                     work / f"warmup-{kernel}.safetensors", progress=False, **options)  # compiles kernels, allocates
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            result = finetune(model, stream, train, work / f"run-{kernel}.safetensors", progress=False, **options)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            report.add("adapt", name, tokens_per_s=result["tokens_seen"] / result["seconds"], loss=result["loss"],
                       steps=result["steps"], batch=batch, seq=seq, peak_GiB=peak, autocast="bf16 on CUDA",
                       model="SmolLM2-135M configuration, random weights, random tokens",
                       training="adapt.transfer objective" if training == "transfer" else "adapt.train.finetune")
        except Exception as exc:  # one variant failing (e.g. out of memory) leaves the others to run
            report.add("adapt", name, "FAILED", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            os.environ.pop("GAINCELL_KERNEL", None)
            for checkpoint in work.glob("*.safetensors"):
                checkpoint.unlink()
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()

"""One prepared GPU check: run once on a lent GPU, every figure written to --out as soon as it is measured.

    python3 benchmarks/gpu_check.py --out $OUT/gpu              # on the GPU machine, from the repository root
    python3 benchmarks/gpu_check.py --smoke --out /tmp/smoke    # CPU, tiny sizes, kernel in Triton's interpreter

Stages (--stages, in the order given; each skipped once the --budget-s is nearly spent, an alarm ends the run
at the budget):
- kernel: the fused kernel must first equal the torch path on the GPU (float32, ring wraps; a disagreement
  fails the run and skips the timings); then a sweep of launch settings (query rows, warps, stages) for the
  kernel alone at B8 H12 T1024 D64; then the kernel alone, the whole gain-cell attention (fused transfers +
  kernel), the torch path and SDPA flash (causal), forward and forward+backward, for B8 H12 T1024 D64 and
  B1 H12 T4096 D64 (window 1024, tile 64, quantized readout, decay), and a decode step (torch path; SDPA over
  a 1024-token cache): CUDA-event timing (median), peak memory, the ratios to SDPA;
- profile: device time per CUDA kernel of one gain-cell attention forward+backward (torch profiler);
- energy: benchmarks/gpu_attention_baseline.py, the paper's decode workload with synchronisation and NVML
  energy minus idle power;
- tests: the kernel parity tests (tests/test_kernel.py, compiled kernels on CUDA) and `pytest -m gpu`;
- adapt: tokens/s and loss of a few steps of the transfer stage (adapt.transfer: scalers + LoRA through
  peft) with the kernel and the torch path, and of `adapt.train.finetune` with the kernel and for the
  unmodified softmax model (bf16 autocast), on a model built from SmolLM2-135M's configuration with random
  weights (throughput does not depend on the weights; the packaged weights cannot be carried to the GPU
  machine).
Files: results.jsonl (one JSON object per measurement, appended) and summary.md (rewritten after each).
Exit status 1 when a stage failed or two sides disagreed.

Runs without installing gaincell: the package folders are mapped as pyproject.toml maps them (a folder of
symlinks put on the path), and the wheels in build/gpu-wheels whose distribution is not installed (lmfit, peft,
accelerate, psutil; carry that folder to the GPU machine) are unpacked into a temporary folder on the path.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "build" / "gpu-wheels"
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
               tie_word_embeddings=True)  # HuggingFaceTB/SmolLM2-135M config.json


def importable_gaincell() -> dict[str, str]:
    """Make `import gaincell.<stage>` work from this checkout; returns the environment for subprocesses."""
    env = dict(os.environ)
    paths = []
    try:
        import gaincell.surrogate  # noqa: F401  (installed, or run from an editable install)
    except ImportError:
        shim = Path(tempfile.mkdtemp(prefix="gaincell-shim-")) / "gaincell"
        shim.mkdir()
        mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
        for entry in (ROOT / mapping["gaincell"]).iterdir():
            (shim / entry.name).symlink_to(entry)
        for package, folder in mapping.items():
            if package != "gaincell":
                (shim / package.split(".", 1)[1]).symlink_to(ROOT / folder)
        paths.append(str(shim.parent))
    missing = [wheel for wheel in sorted(WHEELS.glob("*.whl")) if not installed(wheel.name.split("-")[0])]
    if missing:  # wheels without compiled extensions for another Python: unpacking one is installing it
        target = tempfile.mkdtemp(prefix="gaincell-wheels-")
        for wheel in missing:
            zipfile.ZipFile(wheel).extractall(target)
        paths.append(target)
    for path in reversed(paths):
        sys.path.insert(0, path)
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    return env


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def versions(names=("transformers", "peft", "accelerate", "lmfit", "numpy")) -> dict[str, str]:
    return {name: importlib.metadata.version(name) if installed(name) else "absent" for name in names}


class Report:
    """results.jsonl (appended) and summary.md (rewritten) under `folder`, after every measurement."""

    def __init__(self, folder: Path, header: dict):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.header, self.records = header, []
        (folder / "results.jsonl").write_text("")
        self.add("run", "started", **header)

    def add(self, stage: str, name: str, status: str = "ok", **figures) -> dict:
        record = {"stage": stage, "name": name, "status": status, **figures, "time": time.strftime("%H:%M:%S")}
        self.records.append(record)
        with open(self.folder / "results.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.write_summary()
        print(f"[{stage}] {name}: {status} {json.dumps(figures)[:300]}", flush=True)
        return record

    def failed(self) -> bool:
        return any(r["status"] == "FAILED" for r in self.records)

    def write_summary(self) -> None:
        h = self.header
        lines = [f"# GPU check on {h['card']}", "",
                 f"{'FAILED' if self.failed() else 'no failure so far'}; torch {h['torch']} (CUDA {h['cuda']}), "
                 f"triton {h['triton']}, {'smoke run (CPU, tiny sizes)' if h['smoke'] else 'full run'}, "
                 f"command `{h['command']}`; {_fmt(h['packages'])}", ""]
        for stage, title in (("tests", "Tests"), ("kernel", "Attention: kernel vs torch path vs SDPA flash"),
                             ("energy", "GPU attention baseline (paper's decode workload)"),
                             ("profile", "Profile"), ("adapt", "Adaptation throughput"), ("run", "Run")):
            rows = [r for r in self.records if r["stage"] == stage and r["name"] != "started"]
            if rows:
                lines += [f"## {title}", ""]
                lines += [f"- **{r['name']}** ({r['status']}): " + ", ".join(
                    f"{k} {_fmt(v)}" for k, v in r.items() if k not in ("stage", "name", "status")) for r in rows]
                lines.append("")
        (self.folder / "summary.md").write_text("\n".join(lines))


def _fmt(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class OutOfTime(Exception):
    pass


def stage_tests(report: Report, budget: Budget, env: dict, smoke: bool) -> None:
    if smoke:
        report.add("tests", "pytest", "skipped", why="not in a smoke run (the smoke run is itself run by a test)")
        return
    for name, selection, limit in (
            ("kernel parity tests (tests/test_kernel.py)", ["tests/test_kernel.py", "-k", "not smoke"], 180.0),
            ("pytest -m gpu", ["-m", "gpu", "--continue-on-collection-errors"], 120.0)):
        timeout = min(limit, budget.left() - 30)
        if timeout < 20:
            report.add("tests", name, "skipped", why="budget spent")
            continue
        started = time.monotonic()
        try:
            # -P: the working directory (this checkout, whose gaincell/ lacks the stage folders) not on the path
            done = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
            # `-m gpu` collects every module: those importing packages absent on the GPU machine are collection
            # errors, not failures of the selected tests (exit status 5: none collected)
            ok = done.returncode == 0 or ("-m" in selection and " failed" not in tail and done.returncode in (1, 5))
            report.add("tests", name, "ok" if ok else "FAILED", exit_status=done.returncode, result=tail,
                       seconds=time.monotonic() - started)
            if not ok:
                (report.folder / f"pytest-{len(report.records)}.log").write_text(done.stdout + done.stderr)
        except subprocess.TimeoutExpired:
            report.add("tests", name, "FAILED", why=f"timed out after {timeout:.0f} s")


def timed(function, device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak bytes above the memory in use before) of `function()`, synchronised."""
    import torch

    function()  # warm-up (compiles the kernels on the first call)
    if device.type == "cuda":
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


SWEEP = [(rows, warps, stages) for rows in (32, 64) for warps in (4, 8) for stages in (2, 3)]


def stage_kernel(report: Report, budget: Budget, device, smoke: bool) -> None:
    import torch
    from agreement import relative_difference

    from gaincell.resources import data_path
    from gaincell.surrogate import kernel as fused
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.functional import decay_table_for, decode_step, gaincell_attention, hardware_inputs

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"))
    dtype = torch.float32 if smoke else torch.bfloat16
    tile, window = (16, 32) if smoke else (64, 1024)
    options = dict(decay=0.01, tile=tile, window=window, quantize=True)

    def qkv(b, h, t, d, dtype, grad=False):
        generator = torch.Generator(device=device).manual_seed(0)
        q = torch.rand(b, h, t, d, device=device, generator=generator).to(dtype)
        k, v = (0.9 * torch.rand(b, h, t, d, device=device, generator=generator).to(dtype) for _ in range(2))
        return [x.requires_grad_(grad) for x in (q, k, v)]

    # the sides must agree before any time means anything (float32, no quantization: no level flips)
    shape = (1, 2, 80, 16) if smoke else (2, 12, 1536, 64)
    q, k, v = qkv(*shape, torch.float32, grad=True)
    exact = dict(options, quantize=False)
    outs = [gaincell_attention(q, k, v, cell, kernel=choice, **exact) for choice in ("torch", "triton")]
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
    b, h, t, d = (1, 2, 64, 16) if smoke else (8, 12, 1024, 64)
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

    shapes = [(1, 2, 64, 16)] if smoke else [(8, 12, 1024, 64), (1, 12, 4096, 64)]
    for b, h, t, d in shapes:
        for backward in (False, True):
            if budget.left() < 60 and not smoke:
                report.add("kernel", f"B{b} H{h} T{t} D{d}", "skipped", why="budget spent")
                continue
            q, k, v = qkv(b, h, t, d, dtype, grad=backward)
            sides = {"kernel alone": lambda: kernel_alone(q, k, v),
                     "gain-cell attention (transfers + kernel)": lambda: gaincell_attention(
                         q, k, v, cell, kernel="triton", **options),
                     "torch path": lambda: gaincell_attention(q, k, v, cell, kernel="torch", **options),
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

    # decode: one new token per sequence against a full ring (torch path; SDPA over the same cache)
    b, h, slots, d = (1, 2, 32, 16) if smoke else (8, 12, 1024, 64)
    q, k, v = qkv(b, h, slots, d, dtype)
    qh, fk, fv = hardware_inputs(q[:, :, -1:], k, v, cell, None, False, False)
    ages = torch.arange(slots - 1, -1, -1, device=device)
    with torch.no_grad():
        ours, _ = timed(lambda: decode_step(qh, fk, fv, ages, table[:slots], cell, tile=tile, out_steps=15), device,
                        repeats * 20)
        sdpa, _ = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q[:, :, -1:], k, v), device,
                        repeats * 20)
    report.add("kernel", f"decode step B{b} H{h} cache {slots} D{d}", torch_path_us=ours * 1e6, sdpa_us=sdpa * 1e6,
               torch_over_sdpa=ours / sdpa, note="decode runs the torch path (no kernel); attention core only")


def stage_profile(report: Report, budget: Budget, device, smoke: bool) -> None:
    """Where the time of one gain-cell attention forward+backward goes: device time per kernel (torch
    profiler, 3 iterations after a warm-up) against the synchronised wall time of the same iterations."""
    import torch

    from gaincell.resources import data_path
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.functional import gaincell_attention

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"))
    b, h, t, d = (1, 2, 64, 16) if smoke else (8, 12, 1024, 64)
    dtype = torch.float32 if smoke else torch.bfloat16
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.rand(b, h, t, d, device=device, generator=generator).to(dtype).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn_like(q)
    options = dict(decay=0.01, tile=16 if smoke else 64, window=32 if smoke else 1024, quantize=True,
                   kernel=None if smoke else "triton")

    def step():
        torch.autograd.grad(gaincell_attention(q, k, v, cell, **options), (q, k, v), grad_out)

    step()
    iterations = 3
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
    wall = (time.perf_counter() - started) / iterations
    rows = []
    for event in profile.key_averages():
        device_us = getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))
        if device_us > 0:
            rows.append((device_us / iterations, event.count // iterations, event.key[:60]))
    rows.sort(reverse=True)
    report.add("profile", f"gain-cell attention fwd+bwd B{b} H{h} T{t} D{d} {str(dtype)[6:]}, per iteration",
               wall_ms_profiled=wall * 1e3, device_ms=sum(r[0] for r in rows) / 1e3,
               kernels={name: {"us": us, "calls": calls} for us, calls, name in rows[:14]})


def stage_energy(report: Report, budget: Budget, env: dict, device, smoke: bool) -> None:
    timeout = min(180.0, budget.left() - 20)
    if timeout < 30:
        report.add("energy", "GPU attention baseline", "skipped", why="budget spent")
        return
    out = report.folder / "gpu-attention-baseline.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_attention_baseline.py"), "--out", str(out)]
    command += ["--device", "cpu", "--tokens", "16", "--batch", "2", "--passes", "1"] if smoke else ["--device", "cuda"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        report.add("energy", "GPU attention baseline", "FAILED", why=f"timed out after {timeout:.0f} s")
        return
    if done.returncode != 0:
        report.add("energy", "GPU attention baseline", "FAILED", stderr=done.stderr[-500:])
        return
    result = json.loads(out.read_text())
    per_token = None if result["energy_per_step_j"] is None else result["energy_per_step_j"] / result["batch"]
    report.add("energy", "GPU attention baseline", device=result["device"], batch=result["batch"],
               heads=result["heads"], head_dim=result["head_dim"], tokens=result["tokens"], dtype=result["dtype"],
               latency_per_step_us=result["latency_per_step_s"] * 1e6, energy_per_step_mJ=None if per_token is None
               else result["energy_per_step_j"] * 1e3, energy_per_token_uJ=None if per_token is None
               else per_token * 1e6, idle_power_w=result["idle_power_w"], method=result["energy_method"],
               file=out.name)


def stage_adapt(report: Report, budget: Budget, device, smoke: bool) -> None:
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
                     work / f"warmup-{kernel}.pt", progress=False, **options)  # compiles kernels, allocates
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            result = finetune(model, stream, train, work / f"run-{kernel}.pt", progress=False, **options)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            report.add("adapt", name, tokens_per_s=result["tokens_seen"] / result["seconds"], loss=result["loss"],
                       steps=result["steps"], batch=batch, seq=seq, peak_GiB=peak, autocast="bf16 on CUDA",
                       model="SmolLM2-135M configuration, random weights, random tokens",
                       training="adapt.transfer objective" if training == "transfer" else "adapt.train.finetune")
        except Exception as exc:  # one variant failing (e.g. out of memory) leaves the others to run
            report.add("adapt", name, "FAILED", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            os.environ.pop("GAINCELL_KERNEL", None)
            for checkpoint in work.glob("*.pt"):
                checkpoint.unlink()
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and summary.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard limit for the whole run (seconds)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, kernel in Triton's interpreter")
    parser.add_argument("--stages", default="kernel,profile,energy,tests,adapt",
                        help="comma-separated stages in the order to run them")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported; this process only
    env = importable_gaincell()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    card = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})"
    report = Report(args.out, {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
                               "triton": triton_version, "packages": versions(),
                               "smoke": args.smoke, "command": " ".join([Path(sys.executable).name, *sys.argv])})
    if not cuda and not args.smoke:
        report.add("run", "device", "FAILED", why="no CUDA device: use --smoke for the CPU run")
        return 1
    budget = Budget(args.budget_s)

    def out_of_time(signum, frame):
        raise OutOfTime(f"the {args.budget_s:.0f} s budget is spent")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.budget_s) + 1)
    stages = {"tests": lambda: stage_tests(report, budget, env, args.smoke),
              "kernel": lambda: stage_kernel(report, budget, device, args.smoke),
              "energy": lambda: stage_energy(report, budget, env, device, args.smoke),
              "adapt": lambda: stage_adapt(report, budget, device, args.smoke),
              "profile": lambda: stage_profile(report, budget, device, args.smoke)}
    try:
        for name in args.stages.split(","):
            if name not in stages:
                parser.error(f"--stages: {name!r} is not one of {', '.join(stages)}")
            try:
                stages[name]()
            except OutOfTime:
                raise
            except Exception as exc:
                report.add(name, "stage", "FAILED", error=f"{type(exc).__name__}: {str(exc)[:500]}")
    except OutOfTime as exc:
        report.add("run", "cut off", "FAILED", why=str(exc))
    finally:
        signal.alarm(0)
    report.add("run", "finished", "FAILED" if report.failed() else "ok",
               seconds=args.budget_s - budget.left())
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())

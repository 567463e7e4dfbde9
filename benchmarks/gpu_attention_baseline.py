"""GPU (or CPU) baseline for gain-cell attention: one attention layer decoding with a KV cache, timed properly.

The paper's workload (Leroux et al. 2025): 12 heads x 64, batch 64, 1024 tokens decoded one at a time, each
step writing the new K, V into a preallocated cache and running torch's scaled_dot_product_attention of the
new query over the tokens so far (the attention core only: no projections). Unlike the paper's script, the
timing synchronises the device (torch.cuda.synchronize) around the timed loop, runs warm-up passes first and
averages over every decoded token of several passes. Energy on CUDA comes from NVML (nvidia-ml-py /
pynvml): the total-energy counter where the GPU has one, else power samples every 5 ms, minus the idle power
measured just before. On CPU (small default sizes, for testing) no energy is measured.

    python benchmarks/gpu_attention_baseline.py --device cuda --out gpu-baseline.json
    python benchmarks/gpu_attention_baseline.py --device cpu --out cpu-baseline.json     # batch 4, 2 heads, 128 tokens
    gaincell energy --surrogate surrogate.h5 --model gpt2 --gpu-baseline gpu-baseline.json

Writes a JSON `gaincell energy --gpu-baseline` reads (file_kind "gaincell gpu attention baseline").
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import torch

from gaincell import __version__
from gaincell.errors import GaincellError
from gaincell.outputs import REPORT, atomic_write_text, guard_output

FILE_KIND = "gaincell gpu attention baseline"
CPU_DEFAULTS = {"batch": 4, "heads": 2, "head_dim": 64, "tokens": 128}
GPU_DEFAULTS = {"batch": 64, "heads": 12, "head_dim": 64, "tokens": 1024}


def earlier_baseline(path: Path) -> bool:
    """Is `path` a baseline this script wrote (a small JSON object of FILE_KIND)? Such a file may be replaced."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("file_kind") == FILE_KIND


def decode_pass(batch: int, heads: int, head_dim: int, tokens: int, device: str, dtype) -> None:
    """Decode `tokens` tokens one at a time: write K, V into the cache, attend the new query to tokens 0..t."""
    generator = torch.Generator(device=device).manual_seed(0)
    k_cache = torch.zeros(batch, heads, tokens, head_dim, device=device, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    new = torch.randn(3, tokens, batch, heads, 1, head_dim, device=device, dtype=dtype, generator=generator)
    for t in range(tokens):
        q, k, v = new[0, t], new[1, t], new[2, t]  # (B, H, 1, D) each
        k_cache[:, :, t:t + 1] = k
        v_cache[:, :, t:t + 1] = v
        torch.nn.functional.scaled_dot_product_attention(q, k_cache[:, :, :t + 1], v_cache[:, :, :t + 1])


class EnergyMeter:
    """NVML energy of one GPU over a block: the total-energy counter if supported, else sampled power."""

    def __init__(self, index: int):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.method = "NVML total energy counter"
        except pynvml.NVMLError:
            self.method = "NVML power samples every 5 ms"

    def power_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def idle_power_w(self, seconds: float = 2.0) -> float:
        samples, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            samples.append(self.power_w())
            time.sleep(0.02)
        return sum(samples) / len(samples)

    def measure(self, work) -> tuple[float, float]:
        """(joules, seconds) of `work()`."""
        if self.method.startswith("NVML total"):
            start_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            start = time.perf_counter()
            work()
            seconds = time.perf_counter() - start
            return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - start_mj) / 1000.0, seconds
        samples, done = [], threading.Event()

        def sample():
            while not done.is_set():
                samples.append(self.power_w())
                time.sleep(0.005)

        thread = threading.Thread(target=sample)
        start = time.perf_counter()
        thread.start()
        work()
        seconds = time.perf_counter() - start
        done.set()
        thread.join()
        return sum(samples) / max(1, len(samples)) * seconds, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (cuda when available)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--head-dim", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=None, help="tokens decoded per pass")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (each decodes --tokens tokens)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                        help="default: float16 on CUDA, float32 on CPU")
    parser.add_argument("--out", type=Path, required=True,
                        help="JSON file to write (an existing file is replaced only when it is such a baseline)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file of another kind")
    args = parser.parse_args(argv)
    try:
        guard_output(args.out, REPORT, force=args.force or earlier_baseline(args.out))
    except GaincellError as error:
        parser.error(str(error))

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device: CUDA is not available in this torch build/machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        parser.error(f"--device: must be cuda, cuda:N, cpu or auto; got {device!r}")
    cuda = device.startswith("cuda")
    sizes = dict(GPU_DEFAULTS if cuda else CPU_DEFAULTS)
    for name in sizes:
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')}: must be a positive integer; got {value}")
            sizes[name] = value
    for name in ("passes", "warmup"):
        if getattr(args, name) < (1 if name == "passes" else 0):
            parser.error(f"--{name}: must be >= {1 if name == 'passes' else 0}; got {getattr(args, name)}")
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))

    def synchronize():
        if cuda:
            torch.cuda.synchronize(device)

    def run_passes():
        for _ in range(args.passes):
            decode_pass(**sizes, device=device, dtype=dtype)
        synchronize()

    with torch.inference_mode():
        for _ in range(args.warmup):
            decode_pass(**sizes, device=device, dtype=dtype)
        synchronize()
        meter, idle, energy_j, method = None, None, None, "not measured (CPU run)" if not cuda else ""
        if cuda:
            try:
                meter = EnergyMeter(torch.device(device).index or 0)
                idle = meter.idle_power_w()
                method = meter.method + ", minus idle power measured for 2 s before"
            except Exception as exc:  # no NVML library, no permission, ...
                meter, method = None, f"not measured: NVML unavailable ({type(exc).__name__}: {exc})"
        if meter is not None:
            joules, seconds = meter.measure(run_passes)
            energy_j = max(joules - idle * seconds, 0.0)
        else:
            start = time.perf_counter()
            run_passes()
            seconds = time.perf_counter() - start
    steps = args.passes * sizes["tokens"]
    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    result = {"written_by": f"gaincell {__version__}", "file_kind": FILE_KIND, "device": name,
              "device_kind": "cuda" if cuda else "cpu",
              **sizes, "passes": args.passes, "warmup_passes": args.warmup, "dtype": str(dtype).replace("torch.", ""),
              "latency_per_step_s": seconds / steps,
              "energy_per_step_j": None if energy_j is None else energy_j / steps,
              "idle_power_w": idle, "energy_method": method, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "command": " ".join([sys.executable, *sys.argv]),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "what": "one attention layer, KV-cache decode (cache write + SDPA), per decode step of the whole batch"}
    try:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    energy_text = "no energy" if energy_j is None else f"{result['energy_per_step_j'] * 1e3:.4g} mJ"
    print(f"{name} ({result['device_kind']}): {result['latency_per_step_s'] * 1e6:.4g} us and {energy_text} per "
          f"decode step (batch {sizes['batch']}, {sizes['heads']} x {sizes['head_dim']}, {sizes['tokens']} tokens x "
          f"{args.passes} passes); {method}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

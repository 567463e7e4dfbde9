"""SmolLM2-135M adapted by attention transfer: perplexity against adaptation time (benchmarks/RESULTS.md).

Runs the real commands one after another: `gaincell eval` of the softmax model and the naive swap, then for
every budget (--steps-list: transfer steps) `gaincell adapt --stages transfer` into its own folder and
`gaincell eval`, and for the largest budget `--stages transfer,distill` on top (--distill-steps, 0: none).
Prints a markdown table - WikiText-2 perplexity, LAMBADA accuracy, wall and CPU seconds of adaptation, tokens
seen, mean per-layer relative error - and the per-layer error of the largest budget. Every run stays in
--work; a rerun reuses what is finished (adapt resumes or skips done stages, finished evals are kept).

    .venv/bin/python benchmarks/smollm2_transfer.py --work runs/smollm2-transfer --steps-list 100,400
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from smollm2_adaptation import SHARED, evaluate, evaluation_arguments, gaincell


def adaptation_cost(folder: Path, stages: list[str], batch) -> dict:
    """Wall and CPU seconds and tokens seen of `stages` of an adapted folder, and its per-layer relative error
    against the unmodified model on `batch` (measured here, the same way for every row)."""
    from gaincell.adapt.models import load_adapted, load_pretrained
    from gaincell.adapt.transfer import layer_errors

    manifest = json.loads((folder / "adapted.json").read_text())
    records = [manifest["stages"][s] for s in stages]
    errors = layer_errors(load_adapted(folder)[0], batch, load_pretrained(manifest["base_model"])[0])
    return {"seconds": sum(r["seconds"] for r in records), "cpu_seconds": sum(r["stage_cpu_seconds"] for r in records),
            "tokens": sum(r["tokens_seen"] for r in records), "layer_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="the base model (a name or folder `gaincell adapt` takes; "
                                                               "the test suite's smoke run: a tiny Llama)")
    parser.add_argument("--train-text", default=str(SHARED / "wikitext-2" / "valid.txt"))
    parser.add_argument("--work", type=Path, default=Path("runs/smollm2-transfer"))
    evaluation_arguments(parser, lambada_items=200)
    parser.add_argument("--steps-list", default="100,400", help="transfer steps of each budget, comma-separated")
    parser.add_argument("--distill-steps", type=int, default=20, help="distill steps after the largest budget")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--scaler-lr", type=float, default=1e-2)
    parser.add_argument("--distill-lr", type=float, default=5e-4)
    parser.add_argument("--lora-rank", type=int, default=16)
    options = parser.parse_args()
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    common = ["--model", options.model, "--surrogate", options.surrogate, "--train-text", options.train_text,
              "--batch", str(options.batch), "--seq", str(options.seq), "--scaler-lr", str(options.scaler_lr),
              "--lora-rank", str(options.lora_rank), "--calibration-tokens", str(options.context),
              "--checkpoint-every", "20"]
    rows = [("softmax baseline (unmodified)", None, evaluate("softmax", options.model, work, options)),
            ("naive swap (initial scalers)", None, evaluate("naive", options.model, work, options,
                                                          "--surrogate", options.surrogate))]
    from gaincell.adapt.models import load_tokenizer, resolve_model
    from gaincell.adapt.text import token_stream

    tokenizer = load_tokenizer(resolve_model(options.model))
    batch = token_stream(options.train_text, tokenizer, options.context).unsqueeze(0)  # the calibration batch
    budgets = sorted(int(s) for s in options.steps_list.split(","))
    for steps in budgets:
        folder = work / f"transfer-{steps}"
        gaincell("adapt", *common, "--lr", str(options.lr), "--stages", "transfer", "--transfer-steps", str(steps),
                 "--out", str(folder))
        rows.append((f"transfer, {steps} steps", adaptation_cost(folder, ["transfer"], batch),
                     evaluate(f"transfer-{steps}", str(folder), work, options)))
    if options.distill_steps:
        folder = work / f"transfer-{budgets[-1]}"
        gaincell("adapt", *common, "--lr", str(options.distill_lr), "--stages", "transfer,distill",
                 "--transfer-steps", str(budgets[-1]), "--distill-steps", str(options.distill_steps),
                 "--out", str(folder))
        rows.append((f"transfer, {budgets[-1]} steps + distill, {options.distill_steps} steps",
                     adaptation_cost(folder, ["transfer", "distill"], batch),
                     evaluate(f"transfer-{budgets[-1]}-distill", str(folder), work, options)))
    hardware = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(f"\n{hardware}\n\n| model | WikiText-2 ppl ({rows[0][2]['tokens_scored']} tokens) | LAMBADA acc "
          f"({rows[0][2]['items']} items) | adaptation wall / CPU s | tokens seen | mean layer error |\n"
          "|---|---|---|---|---|---|")
    for label, cost, result in rows:
        spent = (f"{cost['seconds']:.0f} / {cost['cpu_seconds']:.0f}", f"{cost['tokens']:,}",
                 f"{sum(cost['layer_errors']) / len(cost['layer_errors']):.3f}") if cost else ("-", "0", "-")
        print(f"| {label} | {result['perplexity']:.4g} | {100 * result['lambada']:.1f} % | {' | '.join(spent)} |")
    last = rows[-1][1]
    if last:
        print(f"\nper-layer relative error, {rows[-1][0]}: " + ", ".join(f"{e:.2f}" for e in last["layer_errors"]))
    (work / "table.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How far an adapted model's scores move when its weights hardly do: the score's own jitter.

Scores the model as saved, then once per seed with the weight of every attention and MLP projection multiplied by
(1 + eps N(0, 1)) (eps 1e-6: far below what training resolves), on the issue's rows (WikiText-2 test perplexity
over the first --eval-tokens tokens in --context windows; LAMBADA over the first --lambada-items items). The
gain-cell layer quantizes (DAC levels, readout, C2P pulse counts), so a score is a rough function of the weights:
two models whose scores differ by less than this spread are not told apart by these rows.

    .venv/bin/python benchmarks/score_jitter.py --model smollm2-gaincell --seeds 4
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from smollm2_adaptation import evaluation_arguments

from gaincell import __version__
from gaincell.errors import GaincellError
from gaincell.outputs import REPORT, atomic_write_text, guard_output

MAX_EPS = 1e-2  # beyond it the perturbation changes the model, not just its rounding


def perturb(model, eps: float, seed: int) -> int:
    """Multiply the weight of every attention and MLP projection (`adapt.transfer`'s lists) by (1 + eps N(0, 1))
    in place, drawn in parameter order from a generator seeded with `seed`; returns how many matrices."""
    from gaincell.adapt.transfer import attention_projections, mlp_projections

    projections = {f"{name}.weight" for name in (*attention_projections(model), *mlp_projections(model))}
    generator, count = torch.Generator().manual_seed(seed), 0
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name in projections:
                weight.mul_(1 + eps * torch.randn(weight.shape, generator=generator).to(weight.dtype))
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an adapted folder (gaincell adapt --out) or smollm2-gaincell")
    parser.add_argument("--seeds", type=int, default=4, help="perturbed copies (seeds 1..N), besides the model as saved")
    parser.add_argument("--eps", type=float, default=1e-6, help="relative size of each weight's perturbation")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    evaluation_arguments(parser, lambada_items=200, surrogate=False)
    options = parser.parse_args()
    if not 1 <= options.seeds <= 100:
        parser.error(f"--seeds: must be within 1 .. 100; got {options.seeds}")
    if not 0 < options.eps <= MAX_EPS:
        parser.error(f"--eps: must be within 0 (excluded) .. {MAX_EPS:g}; got {options.eps}")
    try:
        if options.out:
            guard_output(options.out, REPORT, [options.wikitext, options.lambada])
        rows = measure(options)
    except GaincellError as error:
        sys.exit(f"score_jitter: {error}")
    ppl, lambada = [r["perplexity"] for r in rows], [100 * r["lambada"] for r in rows]
    print(f"| all {len(rows)}: mean +- standard deviation | {statistics.mean(ppl):.2f} +- {statistics.stdev(ppl):.2f} | "
          f"{statistics.mean(lambada):.1f} +- {statistics.stdev(lambada):.1f} % |")
    print(f"\nperplexity spans {min(ppl):.2f} .. {max(ppl):.2f} and LAMBADA {min(lambada):.1f} .. {max(lambada):.1f} % "
          f"for weights within a relative {options.eps:g} of each other: smaller differences between two models "
          "are not shown by these rows")
    if options.out:
        record = {"written_by": f"gaincell {__version__}", "model": options.model, "eps": options.eps, "rows": rows}
        atomic_write_text(options.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {options.out}")


def measure(options) -> list[dict]:
    from gaincell.adapt.evaluate import evaluate_path
    from gaincell.adapt.models import load_adapted
    from gaincell.adapt.shipped import model_folder

    folder = model_folder(options.model)
    rows = []
    print(f"| {options.model}, as | WikiText-2 ppl | LAMBADA ({options.lambada_items}) |\n|---|---|---|", flush=True)
    for seed in range(options.seeds + 1):
        model, tokenizer = load_adapted(folder)
        label = "saved" if seed == 0 else f"weights x (1 + {options.eps:g} N(0, 1)), seed {seed}"
        if seed and not perturb(model, options.eps, seed):
            raise GaincellError(f"{options.model}: no attention or MLP projection to perturb")
        text = evaluate_path(model, tokenizer, options.wikitext, options.eval_tokens, options.context, options.context,
                             None, False)
        items = evaluate_path(model, tokenizer, options.lambada, None, options.context, options.context,
                              options.lambada_items, False)
        if not math.isfinite(text["perplexity"]):
            raise GaincellError(f"{options.model}: perplexity is not finite with {label}")
        rows.append({"seed": seed, "label": label, "perplexity": text["perplexity"], "lambada": items["accuracy"],
                     "tokens_scored": text["tokens_scored"], "items": items["items"]})
        print(f"| {label} | {text['perplexity']:.2f} | {100 * items['accuracy']:.1f} % |", flush=True)
    return rows


if __name__ == "__main__":
    main()

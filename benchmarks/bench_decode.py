"""Decoding speed: `gaincell generate`'s two continuations side by side, greedy, on the same prompt.

softmax  : the softmax model through transformers' `generate` (its own KV cache).
gain-cell: the gain-cell model token by token through its layers' ring caches (`gaincell_continuation`).
The models differ only in attention (an adapted folder's weights are the base model's with the LoRA updates
merged), so the ratio is the cost of gain-cell attention in decoding. Both run `--new-tokens` tokens (no end
token stops them); tokens/s counts the new tokens over the whole call (the prompt's one parallel pass
included, the same for both). The check: each side's tokens are what its own model's parallel pass (no
cache) chooses at every step, and the gain-cell ring's logits equal the parallel pass's (a decode path that
computes another function fails the script with exit status 1).

    .venv/bin/python benchmarks/bench_decode.py                       # smollm2-gaincell, 256 and 1000 tokens
    .venv/bin/python benchmarks/bench_decode.py --new-tokens 64 --check-steps 16
    .venv/bin/python benchmarks/bench_decode.py --model smollm2 --surrogate paper   # the naive swap
"""
from __future__ import annotations

import argparse
import time

import torch

from agreement import require, require_close

PROMPT = "The history of the city"
# Logits of the ring decode against the parallel pass, relative to their full scale: float32 sums in another
# order through 30 layers, and a readout on a quantizer boundary that moves by one step (measured 2e-4 on
# smollm2-gaincell, 64 steps).
LOGIT_TOLERANCE = 2e-3


def parallel_logits(model, ids: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """One parallel pass (no cache) over prompt + tokens: the next-token logits (steps, vocab) at each step."""
    text = torch.cat([ids, ids.new_tensor([tokens])], dim=1)
    with torch.no_grad():
        return model(text, use_cache=False).logits[0, ids.shape[1] - 1:-1].float()


def worst_choice(logits: torch.Tensor, tokens: list[int]) -> float:
    """How far below the best logit of the parallel pass each decoded token's logit lies, at worst, relative to
    the logits' full scale: 0 when every greedy choice is the parallel pass's argmax (a near-tie may go either
    way)."""
    chosen = logits[torch.arange(len(tokens)), torch.tensor(tokens)]
    return float((logits.max(-1).values - chosen).max() / logits.abs().max())


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-gaincell",
                        help="an adapted folder or shipped adapted model; a plain model with --surrogate")
    parser.add_argument("--surrogate", default=None, help="for a plain model: its naive swap to this surrogate")
    parser.add_argument("--new-tokens", default="256,1000", help="comma-separated numbers of new tokens")
    parser.add_argument("--check-steps", type=int, default=64, help="steps compared with the parallel pass")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from gaincell.adapt.generate import (Decoding, gaincell_continuation, load_generation_models, prompt_ids,
                                         softmax_continuation)

    models = load_generation_models(args.model, args.surrogate)
    counts = [int(n) for n in args.new_tokens.split(",")]
    ids = prompt_ids(models.tokenizer, args.prompt, models.gaincell.config, Decoding(max_new_tokens=max(counts)))
    print(f"model: {args.model}; {models.gaincell_label} vs {models.softmax_label}; {args.threads} threads; "
          f"prompt {ids.shape[1]} tokens, greedy")
    for model, continuation in ((models.softmax, softmax_continuation), (models.gaincell, gaincell_continuation)):
        continuation(model, ids, Decoding(max_new_tokens=4))  # warm-up: first calls allocate and load kernels

    rows, longest = [], {}
    for count in counts:
        decoding = Decoding(max_new_tokens=count)
        softmax, softmax_s = timed(softmax_continuation, models.softmax, ids, decoding)
        gaincell, gaincell_s = timed(gaincell_continuation, models.gaincell, ids, decoding)
        require("new tokens", len(softmax.tokens) == len(gaincell.tokens) == count,
                f"asked for {count}; softmax gave {len(softmax.tokens)}, gain-cell {len(gaincell.tokens)}")
        rows.append((count, count / softmax_s, count / gaincell_s))
        longest = {"softmax": softmax, "gaincell": gaincell}
        print(f"{count} new tokens: softmax {count / softmax_s:.1f} tokens/s, gain-cell {count / gaincell_s:.1f} "
              f"tokens/s, ratio {softmax_s / gaincell_s:.2f}x", flush=True)

    print("\n| new tokens | softmax tokens/s | gain-cell tokens/s | gain-cell / softmax |\n|---|---|---|---|")
    for count, softmax_rate, gaincell_rate in rows:
        print(f"| {count} | {softmax_rate:.1f} | {gaincell_rate:.1f} | {gaincell_rate / softmax_rate:.2f}x |")
    print("(a ratio below 1: gain-cell attention decodes slower than the softmax model's KV cache; the rest of the "
          "model is the same)")

    steps = min(args.check_steps, len(longest["gaincell"].tokens))
    for name, model in (("softmax", models.softmax), ("gaincell", models.gaincell)):
        tokens = longest[name].tokens[:steps]
        logits = parallel_logits(model, ids, tokens)
        gap = worst_choice(logits, tokens)
        require(f"{name} decode vs its parallel pass", gap <= LOGIT_TOLERANCE,
                f"a greedy token's logit lies {gap:.1e} of full scale below the parallel pass's best")
        if name == "gaincell":
            worst = require_close("gain-cell ring-cache logits vs the parallel pass",
                                  longest[name].logits[:steps], logits, LOGIT_TOLERANCE)
            print(f"gain-cell ring decode = parallel pass over {steps} steps (logits within {worst:.1e} of full "
                  f"scale); softmax generate = its parallel pass")


if __name__ == "__main__":
    main()

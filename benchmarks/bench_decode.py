"""Decoding speed: `gaincell generate`'s two continuations side by side, greedy, on the same prompt.

softmax  : the softmax model through transformers' `generate` (its own KV cache).
gain-cell: the gain-cell model token by token through its layers' ring caches (`gaincell_continuation`).
The models differ only in attention (an adapted folder's weights are the base model's with the LoRA updates
merged), so the ratio is the cost of gain-cell attention in decoding. Both run `--new-tokens` tokens (no end
token stops them); tokens/s counts the new tokens over the whole call (the prompt's one parallel pass
included, the same for both). The check: every gain-cell layer, fed the q, k, v of a parallel pass over the
prompt and the decoded tokens, gives the same outputs through its ring cache token by token as in the
parallel pass (a decode path that computes another function fails the script with exit status 1).

    .venv/bin/python benchmarks/bench_decode.py                       # smollm2-gaincell, 256 and 1000 tokens
    .venv/bin/python benchmarks/bench_decode.py --new-tokens 64 --check-steps 16
    .venv/bin/python benchmarks/bench_decode.py --model smollm2 --surrogate paper   # the naive swap
"""
from __future__ import annotations

import argparse
import time

import torch

from agreement import require

PROMPT = "The history of the city"
# A layer's ring decode against its parallel pass on the same inputs (float32 sums in another order). The
# whole models are not compared: the rest of the model computes the prompt's projections in a batch of another
# size (round-off of 1e-6), and the converters' quantizers turn such a difference into a level now and then.
LAYER_TOLERANCE = 1e-5


def require_close_value(what: str, difference: float) -> float:
    require(what, difference <= LAYER_TOLERANCE, f"{difference:.1e} of full scale, allowed {LAYER_TOLERANCE:.0e}")
    return difference


def layer_replay_difference(model, ids: torch.Tensor, tokens: list[int]) -> float:
    """The ring decode against the parallel pass, layer by layer, on the same inputs: every gain-cell layer's
    q, k, v recorded in one parallel pass over prompt + tokens, then fed to the layer as decoding feeds it (the
    prompt in one pass, then token by token through a ring cache). The largest difference of their outputs,
    relative to each layer's largest output."""
    from gaincell.surrogate.attention import GainCellAttention

    layers = [m for m in model.modules() if isinstance(m, GainCellAttention)]
    inputs = {}

    def record(layer, args, output):  # returns None: the output stays as it is
        inputs[layer] = args[:3]

    hooks = [layer.register_forward_hook(record) for layer in layers]
    text = torch.cat([ids, ids.new_tensor([tokens])], dim=1)
    prompt = ids.shape[1]
    try:
        with torch.no_grad():
            model(text, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    worst = 0.0
    with torch.no_grad():
        for layer in layers:
            q, k, v = inputs[layer]
            parallel, cache = layer(q, k, v), layer.new_cache(text.shape[1])
            steps = [layer(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], cache=cache)]
            steps += [layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                      for t in range(prompt, text.shape[1])]
            scale = float(parallel.abs().max()) or 1.0
            worst = max(worst, float((torch.cat(steps, dim=2) - parallel).abs().max()) / scale)
    return worst


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
    worst = require_close_value("gain-cell ring decode vs the parallel pass, every layer on the same q, k, v",
                                layer_replay_difference(models.gaincell, ids, longest["gaincell"].tokens[:steps]))
    print(f"gain-cell ring decode = parallel pass, every layer, over the prompt and {steps} tokens (largest "
          f"difference {worst:.1e} of a layer's full scale)")

if __name__ == "__main__":
    main()

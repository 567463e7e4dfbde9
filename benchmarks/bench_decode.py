"""Decoding speed: `gaincell generate`'s two continuations side by side, greedy, on the same prompt.

softmax  : the softmax model through transformers' `generate` (its own KV cache).
gain-cell: the gain-cell model token by token through its layers' ring caches (`gaincell_continuation`).
The models differ only in attention (an adapted folder's weights are the base model's with the LoRA updates
merged), so the ratio is the cost of gain-cell attention in decoding. Both run `--new-tokens` tokens (no end
token stops them); tokens/s counts the new tokens over the whole call (the prompt's one parallel pass
included, the same for both); each count runs `--repeats` times per model, alternating, and the table shows the
run whose ratio is the median. The check: every gain-cell layer, fed the q, k, v of a parallel pass over the
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

from gaincell.app.commands.options import option_items, surrogate_file
from gaincell.arguments import positive_int
from gaincell.errors import ConfigError, GaincellError

from ablation import capture
from agreement import require

PROMPT = "The history of the city"
# A layer's ring decode against its parallel pass on the same inputs: float32 sums in another order (1e-6),
# except where a tile's readout sits on a boundary of the readout quantizer and moves by one level (a few
# hundredths of the layer's full scale). Allowed: outputs off by more than FLIP in at most FLIP_FRACTION of the
# elements (measured on smollm2-gaincell, 64 tokens: see benchmarks/RESULTS.md). The whole models are not
# compared: the rest of the model computes the prompt's projections in batches of another size, and the
# quantizers turn that round-off into a level now and then too.
FLIP, FLIP_FRACTION = 1e-4, 1e-4


def layer_replay_difference(model, ids: torch.Tensor, tokens: list[int]) -> tuple[float, float]:
    """The ring decode against the parallel pass, layer by layer, on the same inputs: every gain-cell layer's
    q, k, v recorded in one parallel pass over prompt + tokens, then fed to the layer as decoding feeds it (the
    prompt in one pass, then token by token through a ring cache). Returns the fraction of output elements that
    differ by more than FLIP of their layer's largest output, and the largest difference (same scale)."""
    from gaincell.adapt.models import gaincell_layers

    text = torch.cat([ids, ids.new_tensor([tokens])], dim=1)
    prompt, layers = ids.shape[1], gaincell_layers(model)
    inputs = dict(zip(layers, capture(model, text)))
    flipped, elements, worst = 0, 0, 0.0
    with torch.no_grad():
        for layer in layers:
            q, k, v = inputs[layer]
            parallel, cache = layer(q, k, v), layer.new_cache(text.shape[1])
            steps = [layer(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], cache=cache)]
            steps += [layer(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache=cache)
                      for t in range(prompt, text.shape[1])]
            difference = (torch.cat(steps, dim=2) - parallel).abs() / (float(parallel.abs().max()) or 1.0)
            flipped += int((difference > FLIP).sum())
            elements += difference.numel()
            worst = max(worst, float(difference.max()))
    return flipped / elements, worst


def token_counts(text: str) -> list[int]:
    """--new-tokens: comma-separated positive integers."""
    try:
        items = option_items(text, "--new-tokens", "comma-separated numbers of new tokens, e.g. 256,1000")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(error.problem) from None
    return [positive_int(item) for item in items]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-gaincell",
                        help="an adapted folder or shipped adapted model; a plain model with --surrogate")
    parser.add_argument("--surrogate", default=None, help="for a plain model: its naive swap to this surrogate")
    parser.add_argument("--new-tokens", type=token_counts, default="256,1000",
                        help="comma-separated numbers of new tokens")
    parser.add_argument("--check-steps", type=positive_int, default=64, help="steps compared with the parallel pass")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs of each model per count, alternating; the median ratio is reported")
    args = parser.parse_args()
    try:
        measure(args)
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def measure(args) -> None:
    torch.set_num_threads(args.threads)

    from gaincell.adapt.generate import (Decoding, gaincell_continuation, load_generation_models, prompt_ids,
                                         softmax_continuation)

    models = load_generation_models(args.model, surrogate_file(args.surrogate) if args.surrogate else None)
    counts = args.new_tokens
    ids = prompt_ids(models.tokenizer, args.prompt, models.gaincell.config, Decoding(max_new_tokens=max(counts)))
    print(f"model: {args.model}; {models.gaincell_label} vs {models.softmax_label}; {args.threads} threads; "
          f"prompt {ids.shape[1]} tokens, greedy")
    for model, continuation in ((models.softmax, softmax_continuation), (models.gaincell, gaincell_continuation)):
        continuation(model, ids, Decoding(max_new_tokens=4))  # warm-up: first calls allocate and load kernels

    rows, longest = [], {}
    for count in counts:
        decoding, rates = Decoding(max_new_tokens=count), []
        for _ in range(args.repeats):  # alternating, so a busy spell of the machine slows both sides alike
            softmax, softmax_s = timed(softmax_continuation, models.softmax, ids, decoding)
            gaincell, gaincell_s = timed(gaincell_continuation, models.gaincell, ids, decoding)
            require("new tokens", len(softmax.tokens) == len(gaincell.tokens) == count,
                    f"asked for {count}; softmax gave {len(softmax.tokens)}, gain-cell {len(gaincell.tokens)}")
            rates.append((count / softmax_s, count / gaincell_s))
            print(f"{count} new tokens: softmax {rates[-1][0]:.1f} tokens/s, gain-cell {rates[-1][1]:.1f} tokens/s, "
                  f"ratio {rates[-1][1] / rates[-1][0]:.2f}x", flush=True)
        rows.append((count, *sorted(rates, key=lambda rate: rate[1] / rate[0])[len(rates) // 2]))
        longest = {"softmax": softmax, "gaincell": gaincell}

    print(f"\nthe run of median ratio of {args.repeats}:")
    print("| new tokens | softmax tokens/s | gain-cell tokens/s | gain-cell / softmax |\n|---|---|---|---|")
    for count, softmax_rate, gaincell_rate in rows:
        print(f"| {count} | {softmax_rate:.1f} | {gaincell_rate:.1f} | {gaincell_rate / softmax_rate:.2f}x |")
    print("(a ratio below 1: gain-cell attention decodes slower than the softmax model's KV cache; the rest of the "
          "model is the same)")

    steps = min(args.check_steps, len(longest["gaincell"].tokens))
    fraction, worst = layer_replay_difference(models.gaincell, ids, longest["gaincell"].tokens[:steps])
    require("gain-cell ring decode vs the parallel pass, every layer on the same q, k, v", fraction <= FLIP_FRACTION,
            f"{fraction:.1e} of the outputs differ by more than {FLIP:g} of full scale, allowed {FLIP_FRACTION:g}")
    print(f"gain-cell ring decode = parallel pass, every layer, over the prompt and {steps} tokens ({fraction:.1e} of "
          f"the outputs off by more than {FLIP:g} of full scale, at most by {worst:.1e}: readout levels moved by "
          f"round-off)")

if __name__ == "__main__":
    main()

"""A small-scale adaptation check on CPU: SmolLM2 with a surrogate, naive swap vs calibration alone.

Used by the demo (stage "language-model adaptation"): it needs no ../shared, only the packaged SmolLM2 and
the shipped sample text (chapters 1-3 of Pride and Prejudice): the first `calibration_tokens` tokens are the
calibration batch, the following `eval_tokens` tokens are scored. The calibration is the paper's algorithm
with a shortened schedule (alpha 1 -> 0.1 over half the iterations) so it fits in the demo's minutes.
"""
from __future__ import annotations

import time

import torch

from gaincell.resources import data_path

from .calibrate import calibrate, softmax_targets
from .evaluate import perplexity
from .models import load_pretrained, swap_attention
from .text import token_stream

SAMPLE_TEXT = "pride_and_prejudice_ch1-3.txt"


def calibration_check(surrogate_path, model: str = "smollm2", calibration_tokens: int = 128, eval_tokens: int = 1024,
                      context: int = 512, iterations: int = 30, say=print) -> dict:
    """Perplexity of the softmax model, the naive swap and the calibrated swap on the sample text."""
    started = time.perf_counter()
    net, tokenizer, _ = load_pretrained(model)
    stream = token_stream(data_path(SAMPLE_TEXT), tokenizer, calibration_tokens + eval_tokens)
    batch, held_out = stream[:calibration_tokens].unsqueeze(0), stream[calibration_tokens:]
    results = {"calibration_tokens": calibration_tokens, "eval_tokens": int(held_out.numel()), "context": context}
    with torch.no_grad():
        results["softmax"] = perplexity(net, held_out, context, context, progress=False)["perplexity"]
        say(f"      softmax perplexity {results['softmax']:.4g}")
        swap_attention(net, surrogate_path)
        results["naive_swap"] = perplexity(net, held_out, context, context, progress=False)["perplexity"]
        say(f"      naive swap perplexity {results['naive_swap']:.4g}")
        softmax_targets(net, batch)
        outcome = calibrate(net, batch, iterations=iterations, alpha_steps=max(1, iterations // 2), progress=False)
        results["calibrated"] = perplexity(net, held_out, context, context, progress=False)["perplexity"]
        say(f"      calibrated ({outcome.iterations} iterations) perplexity {results['calibrated']:.4g}")
    results.update(iterations=outcome.iterations, converged=outcome.converged, changes=outcome.changes,
                   seconds=time.perf_counter() - started)
    return results

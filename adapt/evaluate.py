"""Perplexity (sliding window) and LAMBADA last-word accuracy, for gain-cell and plain HF models alike."""
from __future__ import annotations

import math

import torch

from gaincell.errors import ConfigError
from gaincell.progress import bar as progress_bar

from .text import read_items, split_last_word, token_stream


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, context: int = 1024, stride: int = 512, progress: bool = True) -> dict:
    """Sliding-window perplexity of a 1-D token tensor: windows of `context` tokens moved by `stride`; every
    token is scored at most once, with at least `context - stride` tokens of history (except in the first
    window). With stride == context the windows are disjoint and the first token of each (which has no history
    in it) is not scored: `tokens_scored` says how many were."""
    if not 0 < stride <= context:
        raise ConfigError("--stride", f"must be in 1..context ({context}); got {stride}")
    if tokens.numel() < 2:
        raise ConfigError("--data", "needs at least 2 tokens")
    device, total, scored, previous_end = _device(model), 0.0, 0, 0
    starts = list(range(0, max(tokens.numel() - 1, 1), stride))
    bar = progress_bar(starts, desc="perplexity", unit="window", enabled=progress, transient=True)
    for start in bar:
        end = min(start + context, tokens.numel())
        window = tokens[start:end].unsqueeze(0).to(device)
        fresh = end - max(previous_end, start + 1)  # tokens of this window not scored yet
        logits = model(window, use_cache=False).logits[0, -fresh - 1:-1].float()
        total += torch.nn.functional.cross_entropy(logits, window[0, -fresh:], reduction="sum").item()
        scored += fresh
        previous_end = end
        bar.set_postfix(ppl=f"{math.exp(total / scored):.4g}")
        if end == tokens.numel():
            break
    return {"perplexity": math.exp(total / scored), "nll": total / scored, "tokens_scored": scored,
            "context": context, "stride": stride}


@torch.no_grad()
def lambada_accuracy(model, tokenizer, path, limit: int | None = None, progress: bool = True) -> dict:
    """LAMBADA: the share of items whose last word the model predicts exactly (greedy, every token of the
    word), given the rest of the passage."""
    items = read_items(path, "--data")[:limit]
    device, correct = _device(model), 0
    bar = progress_bar(items, desc="lambada", unit="item", enabled=progress, transient=True)
    for number, text in enumerate(bar, 1):
        context, word = split_last_word(text, path, number)
        prefix = tokenizer(context, add_special_tokens=False)["input_ids"]
        target = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + target[:-1]], device=device)
        guess = model(ids, use_cache=False).logits[0, -len(target):].argmax(-1)
        correct += int(guess.tolist() == target)
        bar.set_postfix(acc=f"{correct / number:.3f}")
    return {"accuracy": correct / len(items), "items": len(items)}


def evaluate_path(model, tokenizer, path, max_tokens: int | None = None, context: int = 1024, stride: int = 512,
                  limit: int | None = None, progress: bool = True) -> dict:
    """Perplexity for a text file, LAMBADA accuracy for a .jsonl file."""
    if str(path).endswith(".jsonl"):
        return {"data": str(path), "kind": "lambada", **lambada_accuracy(model, tokenizer, path, limit, progress)}
    tokens = token_stream(path, tokenizer, max_tokens)
    return {"data": str(path), "kind": "perplexity", **perplexity(model, tokens, context, stride, progress)}

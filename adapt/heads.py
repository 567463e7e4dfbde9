"""The `heads` stage: a larger C2P gain for the heads that retrieve.

Copying a word from far back in the passage (what LAMBADA scores) needs a head that puts its weight on one
distant key. The gain-cell layer's pulses are spread: a key pulses within (1 - threshold) / gain of the
query's best key (peak-following C2P), and with gain 1 that window holds a third of the keys. The softmax
teacher shows which heads do the retrieval: on windows of the training text, at every next token that recalls
a rare word from far back (`train.recall_tokens`), the teacher's attention weight from that query onto the
earlier occurrences of the word. The `count` heads with the most weight get C2P gain `gain` (the head's
integration capacitor, a per-head setting of the C2P), the others keep theirs. The stage runs last; a later
distillation (a re-targeting, say) keeps these heads' gains and thresholds (`hold_heads`): trained freely,
distillation widens their windows again.
"""
from __future__ import annotations

import contextlib

import torch

from gaincell.errors import ConfigError, ModelLoadError
from gaincell.surrogate.attention import C2P_GAIN_RANGE

from .models import gaincell_layers
from .text import random_windows
from .train import common_count, far_occurrences, frequent_tokens, recall_tokens

SCORING_WINDOWS = 256  # training-text windows the teacher reads to find the heads, each as long as a passage
SCORING_LENGTH = 128  # whose last word LAMBADA asks for (about 60-130 tokens)


def check_heads(count: int, gain: float) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError("--retrieval-heads", f"must be a positive integer; got {count!r}")
    if not C2P_GAIN_RANGE[0] <= gain <= C2P_GAIN_RANGE[1]:
        raise ConfigError("--retrieval-gain", f"must be within {C2P_GAIN_RANGE[0]:g} .. {C2P_GAIN_RANGE[1]:g} (the "
                                              f"integration capacitors the C2P offers); got {gain!r}")


def scoring_windows(tokens: int) -> int:
    """How many windows the stage reads from a training text of `tokens` tokens: SCORING_WINDOWS, or as many as
    cover a shorter text about once (at least 16): more random windows of a short text only read it again."""
    return min(SCORING_WINDOWS, max(16, tokens // SCORING_LENGTH))


def word_starts(tokenizer) -> torch.Tensor:
    """(vocabulary,) True for the tokens that begin a word of three or more letters (a space, then a letter):
    the first token of a word LAMBADA asks for; the pieces inside a word are predicted from the tokens just
    before them, not retrieved."""
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    return torch.tensor([t.startswith(" ") and len(t.strip()) >= 3 and t.strip()[0].isalpha() for t in texts])


@torch.no_grad()
def retrieval_scores(teacher, stream: torch.Tensor, starts: torch.Tensor | None = None,
                     windows: int = SCORING_WINDOWS, length: int = SCORING_LENGTH,
                     seed: int = 0) -> tuple[torch.Tensor, int]:
    """((layers, heads) mean attention weight of the softmax `teacher`'s recalling queries on the earlier
    occurrences of the word they recall, number of such queries) over `windows` random windows of `stream`;
    with `starts` (`word_starts`), only queries whose next token begins a word count."""
    implementation = teacher.config._attn_implementation
    teacher.set_attn_implementation("eager")  # the only implementation that returns the weights
    device = next(teacher.parameters()).device
    common = frequent_tokens(stream, common_count(teacher.config.vocab_size)).to(device)
    starts = None if starts is None else starts.to(device)
    total, queries = None, 0
    for window in random_windows(stream, windows, min(length, stream.numel() - 2), seed):
        inputs, labels = window[None, :-1].to(device), window[None, 1:].to(device)
        recalling = recall_tokens(inputs, labels, common)[0]  # (T,)
        if starts is not None:
            recalling &= starts[labels[0]]
        if not recalling.any():
            continue
        earlier = far_occurrences(inputs, labels)[0][0]  # (T, T): where each label stood 16+ tokens back
        weights = teacher(inputs, use_cache=False, output_attentions=True).attentions  # per layer (1, H, T, T)
        mass = torch.stack([(w[0][:, recalling] * earlier[recalling]).sum((-1, -2)) for w in weights])
        total = mass if total is None else total + mass
        queries += int(recalling.sum())
    teacher.set_attn_implementation(implementation)
    if not queries:
        raise ConfigError("--train-text", "has no token that recalls a rare word from far back in a window of "
                                          f"{length} tokens: the heads stage needs prose with repeated names")
    return total.float().cpu() / queries, queries


def sharpen_heads(model, scores: torch.Tensor, count: int, gain: float) -> list[list[int]]:
    """Set C2P gain `gain` on the `count` heads with the highest `scores` (layers, heads); their [layer, head]."""
    layers = gaincell_layers(model)
    if scores.shape != (len(layers), layers[0].heads):
        raise ConfigError("model", f"has {len(layers)} layers of {layers[0].heads} heads; the teacher's weights are "
                                   f"{tuple(scores.shape)}")
    count = min(count, scores.numel())
    chosen = sorted(divmod(int(i), scores.shape[1]) for i in scores.flatten().argsort(descending=True)[:count])
    with torch.no_grad():
        for layer, head in chosen:
            layers[layer].c2p_gain[head] = gain
    return [[layer, head] for layer, head in chosen]


def check_head_indices(model, heads: list[list[int]], source) -> None:
    """Refuse sharpened heads ([layer, head], from `source`'s manifest) that are not heads of `model`."""
    layers = gaincell_layers(model)
    bad = [pair for pair in heads if not (pair[0] < len(layers) and pair[1] < layers[pair[0]].heads)]
    if bad:
        raise ModelLoadError(f"{source}: its sharpened heads {bad[:3]} are not heads of this model ({len(layers)} "
                             f"gain-cell layers of {layers[0].heads if layers else 0} heads)")


@contextlib.contextmanager
def unsharpened(model, heads: list[list[int]]):
    """`heads` ([layer, head]) at the median C2P gain of the other heads for the block, their own gains restored
    after: an MLP trained behind the sharpened heads learns to discount them (benchmarks/RESULTS.md)."""
    layers = gaincell_layers(model)
    if not heads:
        yield
        return
    sharpened = torch.zeros(len(layers), layers[0].heads, dtype=torch.bool)
    for layer, head in heads:
        sharpened[layer, head] = True
    with torch.no_grad():
        gains = torch.stack([layer.c2p_gain.detach().float().cpu() for layer in layers])
        median = float(gains[~sharpened].median()) if (~sharpened).any() else 1.0
        saved = {(layer, head): layers[layer].c2p_gain[head].clone() for layer, head in heads}
        for layer, head in heads:
            layers[layer].c2p_gain[head] = median
    try:
        yield
    finally:
        with torch.no_grad():
            for (layer, head), gain in saved.items():
                layers[layer].c2p_gain[head] = gain


def hold_heads(model, heads: list[list[int]]) -> None:
    """Keep the C2P gain and threshold of `heads` ([layer, head]) through training: their gradients are zeroed
    (the optimizer group of these parameters has no weight decay, `transfer.layer_groups`)."""
    layers = gaincell_layers(model)
    for index, layer in enumerate(layers):
        held = torch.tensor([head for at, head in heads if at == index], dtype=torch.long)
        if not len(held):
            continue
        keep = torch.ones(layer.heads)
        keep[held] = 0.0
        for parameter in (layer.c2p_gain, layer.c2p_threshold):
            parameter.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))

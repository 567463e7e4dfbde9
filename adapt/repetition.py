"""Sentence-repetition training against greedy loops (DITTO: Xu et al. 2022, "Learning to break the loop").

A language model that has begun to repeat a sentence grows surer of the repetition each time it repeats
(self-reinforcement), and greedy decoding then loops. The mlp stage's repetition weight adds DITTO's loss beside
its distillation: sentences of the training text, each repeated to fill a row of REPEAT_LENGTH tokens; at every
token of the second and later repetitions, -log(1 - |p - LAMBDA * p_before|), where p is the model's probability
of that token and p_before its probability one repetition earlier (held constant). The loss is least when each
repetition is LAMBDA times as likely as the one before, so repeating stops paying.
"""
from __future__ import annotations

import torch

from gaincell.errors import ConfigError

REPEAT_LENGTH = 256  # tokens of one row of a sentence repeated
LAMBDA = 0.5  # the probability of a repeated token relative to the repetition before, where the loss is least
SENTENCE_TOKENS = (8, 64)  # the sentences drawn: at least 8 and at most 64 tokens, ending in . ! or ?
MIN_SENTENCES = 16


def sentence_spans(stream: torch.Tensor, tokenizer) -> torch.Tensor:
    """(start, stop) in `stream` of each sentence: the tokens after one sentence end up to and including the
    next (. ! or ?), of SENTENCE_TOKENS length, without a line break or a heading's '='."""
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    ends = torch.tensor([text.strip() in (".", "!", "?") for text in texts])
    breaks = torch.tensor(["\n" in text or "=" in text for text in texts])
    stream = stream.cpu()
    at = torch.nonzero(ends[stream.clamp(max=len(ends) - 1)]).flatten()
    starts, stops = at[:-1] + 1, at[1:] + 1
    length = stops - starts
    keep = (length >= SENTENCE_TOKENS[0]) & (length <= SENTENCE_TOKENS[1])
    broken = torch.cumsum(breaks[stream.clamp(max=len(breaks) - 1)].long(), 0)
    keep &= broken[stops - 1] == broken[starts - 1]  # no break inside (the token before a start is a sentence end)
    spans = torch.stack([starts[keep], stops[keep]], 1)
    if len(spans) < MIN_SENTENCES:
        raise ConfigError("--repetition-weight", f"needs a training text of sentences: --train-text gives "
                                                 f"{len(spans)} of {SENTENCE_TOKENS[0]}-{SENTENCE_TOKENS[1]} tokens "
                                                 f"ending in . ! or ? (at least {MIN_SENTENCES})")
    return spans


def repeated_rows(stream: torch.Tensor, spans: torch.Tensor, rows: int) -> tuple[torch.Tensor, list[int]]:
    """`rows` sentences drawn with torch's generator (seeded per step by the training loop), each repeated to
    REPEAT_LENGTH tokens: token ids (rows, REPEAT_LENGTH) and each row's sentence length."""
    chosen = spans[torch.randint(len(spans), (rows,))]
    ids, lengths = [], []
    for start, stop in chosen.tolist():
        sentence = stream[start:stop]
        ids.append(sentence.repeat(REPEAT_LENGTH // len(sentence) + 1)[:REPEAT_LENGTH])
        lengths.append(stop - start)
    return torch.stack(ids), lengths


def repetition_loss(trained, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """DITTO's loss of `trained` on rows of repeated sentences (`repeated_rows`), averaged over rows."""
    logits = trained(ids[:, :-1], use_cache=False).logits.float()
    probability = torch.softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]  # of each next token
    losses = []
    for row, length in enumerate(lengths):
        now, before = probability[row, length:], probability[row, :-length].detach()
        losses.append(-torch.log((1 - (now - LAMBDA * before).abs()).clamp(min=1e-5)).mean())
    return torch.stack(losses).mean()

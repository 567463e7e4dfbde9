"""Evaluation through lm-evaluation-harness (PyPI `lm-eval`) on local files, beside `gaincell eval`.

The loaded model (plain, naive swap or adapted folder: any causal `nn.Module` with its tokenizer) is wrapped
as lm-eval's `HFLM` and evaluated on a task built in code (`ConfigurableTask`) from a path, nothing from a
hub: the input is checked (adapt.text's readers: clear ConfigErrors) and rewritten as jsonl in a temporary
folder, which lm-eval reads through the `datasets` json builder (`dataset_path: json`, local `data_files`,
HF_*_OFFLINE=1).

- A text file (.txt) is ONE document (the whole file, or its first `max_tokens` tokens), scored with
  `loglikelihood_rolling` as lm-eval's WikiText task does (word_perplexity, byte_perplexity, bits_per_byte;
  no detokenisation: the text is scored as written, as `gaincell eval` does). From the harness's summed
  loglikelihood and the harness's own tokenisation of the document, `token_perplexity` too.
- A LAMBADA file (.jsonl, a "text" field per line) is scored with `loglikelihood`: context = the text before
  its last space, continuation = " " + last word (lm-eval's lambada_openai convention, and the split
  `adapt.evaluate.lambada_accuracy` uses): acc (every continuation token greedy) and perplexity.

What agrees with gaincell's own evaluator, exactly (up to float rounding):
lm-eval scores a document of N tokens t_0..t_{N-1} (encoded without special tokens, as `gaincell eval`
does) in disjoint windows of L = `max_length` tokens: the first window's input is the prefix token p (the
tokenizer's BOS, else EOS) followed by t_0..t_{L-2}, so every token is scored, t_0 given p only; each later
window's input is the L tokens just before the L tokens it scores. On the stream s = [p, t_0, .., t_{N-1}]
that is `adapt.evaluate.perplexity(model, s, context=L + 1, stride=L)` (see `matching_perplexity`): the
same inputs, the same N scored tokens, hence the same summed NLL and token perplexity, whenever N <= L or N
is a multiple of L. Otherwise only the last window differs: lm-eval gives it a full L tokens of history,
gaincell's evaluator the shorter remainder. `gaincell eval`'s defaults (no prefix token, context 1024,
stride 512: overlapping windows with at least 512 tokens of history, t_0 unscored) measure a slightly
different quantity; the harness's windows are its (context=L+1, stride=L) case on the prefixed stream.
LAMBADA accuracy equals `lambada_accuracy`'s when lm-eval's continuation tokens (the tail of the encoded
"context + ' ' + word") equal the separately encoded " word" (true for byte-level BPE tokenizers, whose
pre-tokeniser splits before the space) and no item is longer than max_length + 1 tokens (lm-eval cuts such
items from the left, gaincell's evaluator does not).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path

import torch

from gaincell.errors import ConfigError

from .evaluate import perplexity
from .text import read_items, read_text, split_last_word

TEXT_TASK = "gaincell_text"
LAMBADA_TASK = "gaincell_lambada"


def require_lm_eval():
    """The lm_eval package (imported offline), or a ConfigError saying how to install it."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ[name] = "1"
    try:
        import lm_eval
        import lm_eval.evaluator  # noqa: F401  (simple_evaluate)
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--harness", "needs lm-evaluation-harness: pip install 'lm-eval[hf]' (or the project's "
                                       f"'lm' extra: pip install 'gaincell[lm]'); importing it failed: {exc}") from exc
    return lm_eval


def harness_model(model, tokenizer, max_length: int = 1024, batch_size: int = 1):
    """lm-eval's `HFLM` around an already-loaded causal LM (any `nn.Module` with `.config`, on its own device).
    Special tokens are not added when encoding (as in `gaincell eval`); the prefix token is lm-eval's default."""
    if max_length < 2:
        raise ConfigError("max_length", f"must be at least 2 tokens; got {max_length}")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be a positive integer; got {batch_size}")
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    with _quiet():
        return HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size,
                    add_bos_token=False)


def document_text(path, tokenizer, max_tokens: int | None = None) -> str:
    """The text of a .txt file, cut after its first `max_tokens` tokens (the whole text encoded without special
    tokens, as `adapt.text.token_stream` cuts its stream, so that a word is never split at a guessed boundary)."""
    text = read_text(path, "--data")
    if max_tokens is not None:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("--max-tokens", "needs a fast (Rust) tokenizer to cut the text at a token boundary")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        text = text[: offsets[min(max_tokens, len(offsets)) - 1][1]] if offsets else ""
    if not text.strip():
        raise ConfigError("--data", f"{path} holds no text")
    return text


def matching_perplexity(model, token_ids, prefix_token_id: int, max_length: int, progress: bool = False) -> dict:
    """gaincell's own evaluator on lm-eval's rolling windows (see the module docstring): the stream
    [prefix, *token_ids] with context = max_length + 1 and stride = max_length."""
    stream = torch.tensor([prefix_token_id, *token_ids], dtype=torch.long)
    return perplexity(model, stream, context=max_length + 1, stride=max_length, progress=progress)


def evaluate_with_harness(model, tokenizer, path, *, max_tokens: int | None = None, max_length: int = 1024,
                          limit: int | None = None, batch_size: int = 1, cross_check: bool = False) -> dict:
    """lm-eval's metrics for one data file: perplexity metrics for a text file, LAMBADA accuracy for a .jsonl
    (the first `limit` items). `max_length` is the harness window (use `gaincell eval`'s --context).
    `cross_check`: for a text file, also gaincell's own evaluator on the same tokens and windows
    (`matching_perplexity`) as `gaincell_perplexity`."""
    is_lambada = str(path).endswith(".jsonl")
    if is_lambada:
        items = read_items(path, "--data")[:limit]
        pairs = (split_last_word(text, path, number) for number, text in enumerate(items, 1))
        docs = [{"context": context, "continuation": " " + word} for context, word in pairs]
    else:
        docs = [{"text": document_text(path, tokenizer, max_tokens)}]
    lm = harness_model(model, tokenizer, max_length, batch_size)
    with tempfile.TemporaryDirectory(prefix="gaincell-harness-") as folder, _quiet():
        data = Path(folder) / "docs.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
        task = (_lambada_task if is_lambada else _text_task)(data, Path(folder) / "datasets-cache")
        samples, metrics = _run(lm, task)
    common = {"data": str(path), "evaluator": f"lm-eval {_version()}", "max_length": max_length}
    if is_lambada:
        return {**common, "kind": "lambada", "acc": metrics["acc,none"], "perplexity": metrics["perplexity,none"],
                "items": len(samples)}
    (sample,) = samples
    loglikelihood, token_ids = sample["filtered_resps"][0], lm.tok_encode(sample["target"])
    result = {**common, "kind": "perplexity", "word_perplexity": metrics["word_perplexity,none"],
              "byte_perplexity": metrics["byte_perplexity,none"], "bits_per_byte": metrics["bits_per_byte,none"],
              "token_perplexity": math.exp(-loglikelihood / len(token_ids)), "loglikelihood": loglikelihood,
              "tokens_scored": len(token_ids), "words": sample["word_perplexity"][1],
              "bytes": sample["byte_perplexity"][1], "prefix_token_id": lm.prefix_token_id}
    if cross_check:
        ours = matching_perplexity(model, token_ids, lm.prefix_token_id, max_length)
        result["gaincell_perplexity"] = ours["perplexity"]
    return result


def harness_summary(result: dict) -> str:
    """One line of an `evaluate_with_harness` result, for `gaincell eval --harness`."""
    if result["kind"] == "lambada":
        return (f"{result['evaluator']}: accuracy {result['acc']:.4f} over {result['items']} items "
                f"(last-word perplexity {result['perplexity']:.4g})")
    beside = (f" (gaincell's evaluator on the same windows: {result['gaincell_perplexity']:.4g})"
              if "gaincell_perplexity" in result else "")
    return (f"{result['evaluator']}: token perplexity {result['token_perplexity']:.4g}{beside} over "
            f"{result['tokens_scored']} tokens in windows of {result['max_length']}, word perplexity "
            f"{result['word_perplexity']:.4g}, bits/byte {result['bits_per_byte']:.4f}")


def _dataset(data: Path, cache: Path) -> dict:
    return {"dataset_path": "json", "test_split": "test",
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(cache)}}


def _text_task(data: Path, cache: Path):
    """WikiText-style rolling-loglikelihood task on the document(s) in `data`."""
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(config={
        "task": TEXT_TASK, **_dataset(data, cache), "output_type": "loglikelihood_rolling",
        "doc_to_text": "", "doc_to_target": "text",
        "metric_list": [{"metric": name, "aggregation": aggregation, "higher_is_better": False}
                        for name, aggregation in (("word_perplexity", "weighted_perplexity"),
                                                  ("byte_perplexity", "weighted_perplexity"),
                                                  ("bits_per_byte", "bits_per_byte"))]})


def _lambada_task(data: Path, cache: Path):
    """LAMBADA-style task: the last word given the rest (loglikelihood: acc = greedy, perplexity)."""
    from lm_eval.api.task import ConfigurableTask

    return ConfigurableTask(config={
        "task": LAMBADA_TASK, **_dataset(data, cache), "output_type": "loglikelihood",
        "doc_to_text": "context", "doc_to_target": "continuation",
        "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                        {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]})


def _run(lm, task) -> tuple[list[dict], dict]:
    """(per-document samples, aggregated metrics) of one task; no stderr bootstrap, no task index."""
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_defaults=False),
                                      bootstrap_iters=0, log_samples=True)
    name = task.config.task
    return results["samples"][name], results["results"][name]


def _version() -> str:
    from importlib.metadata import version

    return version("lm-eval")


@contextlib.contextmanager
def _quiet():
    """lm-eval's info/warning logging and datasets' progress bars off for the duration."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars_were_on = logger.level, not datasets.utils.are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()

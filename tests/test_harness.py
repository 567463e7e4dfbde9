"""Evaluation through lm-evaluation-harness: the same perplexity and LAMBADA accuracy as gaincell's own
evaluator on tiny random GPT-2 and Llama models, softmax ('ideal') and gain-cell ('nonlinear') attention."""
import itertools
import json
import math
import sys

import pytest
import torch

from gaincell.adapt.evaluate import lambada_accuracy
from gaincell.adapt.harness import (document_text, evaluate_with_harness, harness_model, harness_summary,
                                    matching_perplexity)
from gaincell.adapt.models import load_pretrained, set_mode, swap_attention
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import TEXT

PAPER = data_path("paper_reference.h5")
WINDOW = 32  # the harness's max_length in the perplexity tests
ITEM_WINDOW = 64  # ... and in the LAMBADA tests: longer than any item (lm-eval would cut longer ones)
AGREEMENT = 1e-5  # relative: the same sums of log-probabilities, computed from differently shaped batches


@pytest.fixture(scope="module")
def folders(gpt2_folder, llama_folder):
    return {"gpt2": gpt2_folder, "llama": llama_folder}


@pytest.fixture(scope="module")
def harness():
    return pytest.importorskip("lm_eval", reason="lm-eval (the 'lm' extra) is not installed")


def _swapped(folders, which, mode):
    model, tokenizer, _ = load_pretrained(folders[which])
    swap_attention(model, PAPER, mode=mode)
    return model, tokenizer


@pytest.mark.parametrize("mode", ["nonlinear"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_harness_perplexity_equals_gaincell_evaluator_on_the_same_windows(tmp_path, folders, harness, which, mode):
    """One window (20 tokens < 32) and three full windows (96 tokens): lm-eval's summed loglikelihood of the
    text equals gaincell's evaluator on [prefix] + tokens with context 33, stride 32 (see adapt.harness). The
    gain-cell layers only (unpadded windows: the harness calls the model alike in any mode; the padded batches
    of the LAMBADA test below run in both modes); the end compares with softmax attention."""
    model, tokenizer = _swapped(folders, which, mode)
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    stream = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    for tokens in (20, 3 * WINDOW):
        result = evaluate_with_harness(model, tokenizer, path, max_tokens=tokens, max_length=WINDOW, cross_check=True)
        ours = matching_perplexity(model, stream[:tokens], result["prefix_token_id"], WINDOW)
        assert result["gaincell_perplexity"] == ours["perplexity"]  # the same call on the harness's own tokens
        assert result["tokens_scored"] == ours["tokens_scored"] == tokens
        assert result["token_perplexity"] == pytest.approx(ours["perplexity"], rel=AGREEMENT)
        summed_nll = ours["nll"] * tokens  # lm-eval's word perplexity is the same sum over a word count
        assert result["word_perplexity"] == pytest.approx(math.exp(summed_nll / result["words"]), rel=AGREEMENT)
        assert result["bits_per_byte"] == pytest.approx(summed_nll / result["bytes"] / math.log(2), rel=AGREEMENT)
    assert f"token perplexity {result['token_perplexity']:.4g} (gaincell's evaluator" in harness_summary(result)
    if mode == "nonlinear":  # the gain-cell path was in use: softmax attention gives another number
        set_mode(model, "ideal")
        softmax = matching_perplexity(model, stream[:tokens], result["prefix_token_id"], WINDOW)["perplexity"]
        assert abs(softmax / result["token_perplexity"] - 1) > 1e-3


def _items(model, tokenizer, count: int = 3) -> tuple[list[str], int]:
    """LAMBADA-style items from short contexts in TEXT: `count` whose last word is the model's greedy one-token
    guess (right by construction) and `count` whose real next word it does not guess. Returns (items, right)."""
    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    words, right, wrong = TEXT.split(" "), [], []
    for start, length in itertools.product(range(70), (6, 8, 10)):  # TEXT repeats every 70 words
        end = start + length
        context = " ".join(words[start:end])
        with torch.no_grad():
            guess = model(torch.tensor([encode(context)])).logits[0, -1].argmax().item()
        guessed = tokenizer.decode([guess])
        if guessed[:1] == " " and guessed[1:].isalpha() and encode(guessed) == [guess]:
            right.append(context + guessed)
        elif encode(" " + words[end])[0] != guess:
            wrong.append(f"{context} {words[end]}")
        if len(right) >= count and len(wrong) >= count:
            return right[:count] + wrong[:count], count
    raise AssertionError(f"only {len(right)} contexts whose greedy next token is a word: widen the range")


@pytest.mark.parametrize("mode", ["ideal", "nonlinear"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_harness_lambada_accuracy_equals_gaincell_evaluator(tmp_path, folders, harness, which, mode):
    model, tokenizer = _swapped(folders, which, mode)
    items, right = _items(model, tokenizer)
    assert max(len(tokenizer(text)["input_ids"]) for text in items) <= ITEM_WINDOW
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in items))
    lm = harness_model(model, tokenizer, max_length=ITEM_WINDOW)
    for text in items:  # lm-eval scores the tail of encode(context + " word"): the same tokens as " word" alone
        context, _, word = text.rpartition(" ")
        assert lm._encode_pair(context, " " + word)[1] == tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    ours = lambada_accuracy(model, tokenizer, path, progress=False)
    result = evaluate_with_harness(model, tokenizer, path, max_length=ITEM_WINDOW, batch_size=3)  # padded batches
    assert result["items"] == ours["items"] == len(items)
    assert result["acc"] == ours["accuracy"] == right / len(items)
    assert evaluate_with_harness(model, tokenizer, path, max_length=ITEM_WINDOW, limit=right)["acc"] == 1.0


def test_bad_inputs_and_a_missing_lm_eval_are_clear_config_errors(tmp_path, folders, monkeypatch):
    model, tokenizer, _ = load_pretrained(folders["gpt2"])
    with pytest.raises(ConfigError, match="is not a file"):
        evaluate_with_harness(model, tokenizer, tmp_path / "absent.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a fine item"}\nnot json\n')
    with pytest.raises(ConfigError, match="line 2"):
        evaluate_with_harness(model, tokenizer, bad)
    bad.write_text('{"text": "oneword"}\n')
    with pytest.raises(ConfigError, match="no space before its last word"):
        evaluate_with_harness(model, tokenizer, bad)
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n")
    with pytest.raises(ConfigError, match="holds no text"):
        evaluate_with_harness(model, tokenizer, blank)
    good = tmp_path / "good.txt"
    good.write_text(TEXT)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    with pytest.raises(ConfigError, match=r"--harness: needs lm-evaluation-harness.*pip install"):
        evaluate_with_harness(model, tokenizer, good)


class _LongTokens:
    """A stand-in fast tokenizer whose every token is 100 characters long."""

    is_fast = True

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        return {"offset_mapping": [(start, min(start + 100, len(text))) for start in range(0, len(text), 100)]}


def test_max_tokens_cuts_after_that_many_tokens_however_long_they_are(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("x" * 9000)
    assert len(document_text(path, _LongTokens(), max_tokens=50)) == 5000
    assert len(document_text(path, _LongTokens(), max_tokens=500)) == 9000  # fewer tokens than asked: all of them

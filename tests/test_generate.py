"""Generation: decoding token by token through every layer's ring cache equals the parallel pass; sampling is
seeded; the softmax continuation is transformers' generate with the same settings; `gaincell generate`."""
import json

import pytest
import torch
from click.testing import CliRunner

from gaincell.adapt.generate import (Decoding, gaincell_continuation, load_generation_models, prompt_ids,
                                     repeated_ngrams, ring_caches, softmax_continuation)
from gaincell.adapt.models import load_pretrained, save_adapted, swap_attention
from gaincell.app.cli import main
from gaincell.errors import ConfigError
from gaincell.resources import data_path

PAPER = data_path("paper_reference.h5")
PROMPT = torch.randint(1, 300, (1, 30), generator=torch.Generator().manual_seed(0))


def _folder(which, gpt2_folder, llama_folder):
    return gpt2_folder if which == "gpt2" else llama_folder


@pytest.mark.parametrize("which,window", [("llama", 16), ("gpt2", 16), ("llama", None)])
def test_ring_cache_decoding_equals_the_parallel_pass_at_every_step(which, window, gpt2_folder, llama_folder):
    """Window 16 with tile 8: the 30-token prompt already wraps the ring, and it keeps wrapping."""
    model = swap_attention(load_pretrained(_folder(which, gpt2_folder, llama_folder))[0], PAPER, tile=8,
                           window=window)
    steps = gaincell_continuation(model, PROMPT, Decoding(max_new_tokens=12))
    assert len(steps.tokens) == 12
    text = torch.cat([PROMPT, torch.tensor([steps.tokens[:-1]])], dim=1)
    with torch.no_grad():
        parallel = model(text).logits[0, PROMPT.shape[1] - 1:]
    torch.testing.assert_close(steps.logits, parallel, rtol=0, atol=1e-4)
    assert parallel.argmax(-1).tolist() == steps.tokens


def test_ring_caches_hold_what_the_model_wrote_and_are_detached_afterwards(llama_folder):
    model = swap_attention(load_pretrained(llama_folder)[0], PAPER, tile=8, window=16)
    with torch.no_grad(), ring_caches(model, 64) as caches:
        model(PROMPT, use_cache=False)
        assert len(caches) == 2 and all(c.slots == 16 and c.next_step == 30 for c in caches)
        assert all(c.ages(29).max() == 15 for c in caches)  # only the newest 16 tokens are held
    assert all(layer.decode_cache is None for layer in model.modules() if hasattr(layer, "decode_cache"))


def test_sampling_is_reproducible_with_a_seed(gpt2_folder):
    model = swap_attention(load_pretrained(gpt2_folder)[0], PAPER, tile=8, window=16)
    sampled = Decoding(max_new_tokens=12, temperature=1.5, seed=3)
    first, again = (gaincell_continuation(model, PROMPT, sampled).tokens for _ in range(2))
    other = gaincell_continuation(model, PROMPT, Decoding(max_new_tokens=12, temperature=1.5, seed=4)).tokens
    assert first == again and first != other
    top_one = Decoding(max_new_tokens=12, temperature=1.5, top_k=1, seed=3)  # top-1 sampling is greedy
    assert gaincell_continuation(model, PROMPT, top_one).tokens == \
        gaincell_continuation(model, PROMPT, Decoding(max_new_tokens=12)).tokens


@pytest.mark.parametrize("decoding", [Decoding(max_new_tokens=10), Decoding(max_new_tokens=10, temperature=0.9,
                                                                             top_k=40, seed=7),
                                      Decoding(max_new_tokens=10, repetition_penalty=1.5),
                                      Decoding(max_new_tokens=10, temperature=0.9, seed=7, repetition_penalty=2.0)])
def test_both_paths_decode_alike_on_the_same_logits(decoding, llama_folder):
    """In 'ideal' mode (softmax, window longer than the text) the gain-cell path has the plain model's logits,
    so it must give transformers' generate's tokens: greedy and sampled alike."""
    plain = load_pretrained(llama_folder)[0]
    ideal = swap_attention(load_pretrained(llama_folder)[0], PAPER, mode="ideal", window=64)
    expected = softmax_continuation(plain, PROMPT, decoding, eos_token_id=0).tokens
    assert gaincell_continuation(ideal, PROMPT, decoding, eos_token_id=0).tokens == expected
    assert len(expected) == 10


def test_prompt_checks(gpt2_folder):
    model, tokenizer, _ = load_pretrained(gpt2_folder)  # context: 512 positions
    with pytest.raises(ConfigError, match="--prompt: is empty"):
        prompt_ids(tokenizer, "  \n", model.config, Decoding())
    long = " ".join(["truth"] * 600)
    with pytest.raises(ConfigError, match="--prompt: is [0-9]+ tokens, longer than the model's context of 512"):
        prompt_ids(tokenizer, long, model.config, Decoding())
    with pytest.raises(ConfigError, match="--max-new-tokens: 600 .* at most"):
        prompt_ids(tokenizer, "a truth", model.config, Decoding(max_new_tokens=600))
    with pytest.raises(ConfigError, match="--prompt: is not valid UTF-8 text"):  # bytes 0xff on a command line
        prompt_ids(tokenizer, "a truth \udcff", model.config, Decoding())
    for bad, option in ((dict(max_new_tokens=0), "--max-new-tokens"), (dict(temperature=-1.0), "--temperature"),
                        (dict(temperature=float("nan")), "--temperature"), (dict(top_k=5), "--top-k"),
                        (dict(temperature=1e-40), "--temperature: must be 0 .* or at least 0.001"),
                        (dict(temperature=1.0, top_k=0), "--top-k"), (dict(repetition_penalty=0.5), "--repetition"),
                        (dict(repetition_penalty=float("nan")), "--repetition-penalty: must be within 1")):
        with pytest.raises(ConfigError, match=option):
            Decoding(**bad)
    with pytest.raises(ConfigError, match="no gain-cell attention"):
        gaincell_continuation(model, PROMPT, Decoding())


def _cli(*args):
    done = CliRunner().invoke(main, ["generate", *args])
    done.returncode = done.exit_code
    return done


def test_generate_command_on_a_swapped_and_an_adapted_folder(tmp_path, llama_folder):
    done = _cli("--model", str(llama_folder), "--surrogate", "paper", "--prompt", "It is a truth",
                "--max-new-tokens", "5", "--json", str(tmp_path / "plain.json"))
    assert done.returncode == 0, done.stderr
    assert "prompt: It is a truth" in done.stdout
    assert "[softmax, " in done.stdout and "[gain-cell, naive swap" in done.stdout
    record = json.loads((tmp_path / "plain.json").read_text())
    assert record["prompt"] == "It is a truth" and 1 <= len(record["gaincell"]["tokens"]) <= 5
    for side in ("softmax", "gaincell"):
        assert record[side]["repeated_4_token_phrases"] == repeated_ngrams(record[side]["tokens"], 4)
    assert f"({len(record['gaincell']['tokens'])} tokens, {record['gaincell']['repeated_4_token_phrases']} repeated " \
           "4-token phrases)" in done.stdout
    assert 1 <= len(record["softmax"]["tokens"]) <= 5

    model, tokenizer, _ = load_pretrained(llama_folder)
    swap_attention(model, PAPER)
    adapted = save_adapted(model, tokenizer, tmp_path / "adapted", PAPER, {"base_model": str(llama_folder)})
    done = _cli("--model", str(adapted), "--prompt", "It is a truth", "--max-new-tokens", "4", "--temperature",
                "0.8", "--top-k", "20", "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert f"[softmax, base model {llama_folder}]" in done.stdout and "[gain-cell, adapted" in done.stdout
    assert "sampled (temperature 0.8, top-k 20, seed 5)" in done.stdout
    done = _cli("--model", str(adapted), "--prompt", "It is a truth", "--max-new-tokens", "4",
                "--repetition-penalty", "1.3")
    assert done.returncode == 0, done.stderr
    assert "greedy, repetition penalty 1.3" in done.stdout


def test_a_repetition_penalty_scales_the_logits_of_every_token_already_in_the_text(llama_folder):
    """Each greedy choice is the argmax of the step's logits with the logit of every token of the prompt and of the
    continuation so far divided by the penalty (multiplied where negative), and the penalty changes choices."""
    model = swap_attention(load_pretrained(llama_folder)[0], PAPER)
    penalty = 3.0
    result = gaincell_continuation(model, PROMPT, Decoding(max_new_tokens=12, repetition_penalty=penalty))
    text, changed = PROMPT[0].tolist(), 0
    for logits, token in zip(result.logits, result.tokens):
        seen = torch.tensor(sorted(set(text)))
        scores = logits.clone()
        scores[seen] = torch.where(scores[seen] > 0, scores[seen] / penalty, scores[seen] * penalty)
        assert int(scores.argmax()) == token
        changed += int(logits.argmax()) != token
        text.append(token)
    assert changed > 0


@pytest.mark.parametrize("args,message", [
    (["--prompt", ""], "error: --prompt: is empty"),
    (["--prompt", "a truth", "--max-new-tokens", "600"], "error: --max-new-tokens: 600 after a"),
    (["--prompt", "a truth", "--top-k", "3"], "error: --top-k: applies to sampling"),
    (["--prompt", "a truth", "--repetition-penalty", "0.5"], "error: --repetition-penalty: must be within 1 (none) .. 10"),
    (["--prompt", "a truth", "--surrogate", "no-such-file.h5"], "error: --surrogate: must be 'paper'"),
])
def test_generate_command_refuses_bad_arguments_clearly(args, message, gpt2_folder):
    done = _cli("--model", str(gpt2_folder), *([] if "--surrogate" in args else ["--surrogate", "paper"]), *args)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_a_plain_model_needs_a_surrogate(gpt2_folder):
    done = _cli("--model", str(gpt2_folder), "--prompt", "a truth")
    assert done.returncode == 1 and "error: --surrogate: a plain model needs one" in done.stderr


def test_an_adapted_folder_whose_base_model_is_gone_compares_with_its_own_weights(tmp_path, gpt2_folder):
    plain, tokenizer, _ = load_pretrained(gpt2_folder)
    adapted = save_adapted(swap_attention(load_pretrained(gpt2_folder)[0], PAPER), tokenizer, tmp_path / "adapted",
                           PAPER, {"base_model": str(tmp_path / "moved-away")})
    models = load_generation_models(adapted)
    assert "the adapted folder's weights" in models.softmax_label and "moved-away" in models.softmax_label
    with torch.no_grad():
        torch.testing.assert_close(models.softmax(PROMPT).logits, plain(PROMPT).logits)
    with pytest.raises(ConfigError, match="--surrogate: is for plain models"):
        load_generation_models(adapted, PAPER)

"""The mlp stage's sentence-repetition loss (adapt.repetition, DITTO) and the sharpened heads it trains behind."""
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from gaincell.adapt.heads import unsharpened
from gaincell.adapt.models import gaincell_layers, load_adapted, load_pretrained, read_manifest, swap_attention
from gaincell.adapt.repetition import (LAMBDA, REPEAT_LENGTH, SENTENCE_TOKENS, repeated_rows, repetition_loss,
                                       sentence_spans)
from gaincell.adapt.train import TrainConfig
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import TEXT

PAPER = data_path("paper_reference.h5")
# short sentences (the tiny tokenizer spells most words in several tokens), beside TEXT's long ones
SENTENCES = TEXT + "It is a truth.\nA single man must be in want of a wife. The feelings of such a man are known. " * 10


def test_sentences_are_found_in_the_token_stream_and_repeated_to_rows(llama_folder):
    tokenizer = load_pretrained(llama_folder)[1]
    stream = torch.tensor(tokenizer(SENTENCES, add_special_tokens=False)["input_ids"])
    spans = sentence_spans(stream, tokenizer)
    assert len(spans) >= 16
    for start, stop in spans.tolist():
        text = tokenizer.decode(stream[start:stop])
        assert text.rstrip().endswith(".") and "\n" not in text, text
        assert SENTENCE_TOKENS[0] <= stop - start <= SENTENCE_TOKENS[1]
        assert tokenizer.decode(stream[start - 1:start]).strip() == "."  # starts right after a sentence's end
    torch.manual_seed(0)
    ids, lengths = repeated_rows(stream, spans, 3)
    assert ids.shape == (3, REPEAT_LENGTH) and len(lengths) == 3
    for row, length in zip(ids, lengths):
        assert torch.equal(row[length:], row[:-length])  # one sentence over and over
    torch.manual_seed(0)
    assert torch.equal(repeated_rows(stream, spans, 3)[0], ids)  # the training loop's seed decides the draw
    with pytest.raises(ConfigError, match="--repetition-weight: needs a training text of sentences"):
        sentence_spans(stream[:200], tokenizer)


def _predicting(probability_of_next: float, vocab: int = 10):
    """A stand-in whose next-token distribution gives every row's actual next token `probability_of_next`."""
    def model(inputs, use_cache=False):
        rows, length = inputs.shape
        logits = torch.full((rows, length, vocab), 0.0)
        if probability_of_next is not None:
            rest = (1 - probability_of_next) / (vocab - 1)
            logits.fill_(math.log(rest) if rest > 0 else -1e9)
            following = torch.cat([inputs[:, 1:], inputs[:, :1]], 1)  # the token each position predicts
            logits.scatter_(-1, following[..., None], math.log(probability_of_next))
        return SimpleNamespace(logits=logits)
    return model


def test_the_loss_is_dittos_on_known_probabilities():
    ids = torch.tensor([[1, 2, 3, 4] * 8])
    vocab = 10
    # uniform: every repetition as likely as the one before, |p - 0.5 p| = 0.5 / V
    assert float(repetition_loss(_predicting(None, vocab), ids, [4])) == pytest.approx(
        -math.log(1 - (1 - LAMBDA) / vocab), rel=1e-5)
    # certain of every repeated token: |1 - 0.5| = 0.5, the loss log 2
    assert float(repetition_loss(_predicting(1.0, vocab), ids, [4])) == pytest.approx(math.log(2), rel=1e-4)


def test_unsharpened_holds_the_heads_at_the_others_median_gain_and_restores_them(llama_folder):
    model = load_pretrained(llama_folder)[0]
    swap_attention(model, PAPER)
    layers = gaincell_layers(model)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            layer.c2p_gain.copy_(torch.arange(layer.heads) * 0.1 + 1.0 + index)
        layers[1].c2p_gain[2] = 4.0
    before = [layer.c2p_gain.detach().clone() for layer in layers]
    others = torch.cat([before[0], before[1][[0, 1, 3]]])
    with unsharpened(model, [[1, 2]]):
        assert float(layers[1].c2p_gain.detach()[2]) == pytest.approx(float(others.median()))
        assert torch.equal(layers[0].c2p_gain.detach(), before[0])
    for layer, gains in zip(layers, before):
        assert torch.equal(layer.c2p_gain.detach(), gains)


def test_the_mlp_stage_trains_with_the_repetition_loss_behind_the_heads(tmp_path, llama_folder):
    """The command line RESULTS.md quotes, on the tiny model: an adapted model with sharpened heads, its MLPs
    trained with --repetition-weight; the heads' gains are theirs again after the stage."""
    from click.testing import CliRunner

    from gaincell.app.cli import main
    from gaincell.adapt.recipe import AdaptOptions, adapt

    text = tmp_path / "train.txt"
    text.write_text(SENTENCES)
    source = tmp_path / "adapted"
    adapt(AdaptOptions(model=str(llama_folder), surrogate=PAPER, out=source, train_text=text,
                       stages=("transfer", "heads"), transfer=TrainConfig(steps=1, batch=2, seq=32, lr=1e-2),
                       lora_rank=4, calibration_tokens=64, retrieval_heads=2, retrieval_gain=4.0),
          say=lambda *a: None)
    heads = read_manifest(source)["stages"]["heads"]["heads"]

    def run(out, *extra):
        done = CliRunner().invoke(main, ["adapt", "--model", str(source), "--surrogate", str(PAPER), "--train-text",
                                         str(text), "--stages", "mlp", "--mlp-steps", "2", "--lora-rank", "4",
                                         "--batch", "2", "--seq", "32", "--out", str(out), *extra])
        assert done.exit_code == 0, done.output
        return read_manifest(out)["stages"]["mlp"]

    plain, repeated = run(tmp_path / "plain"), run(tmp_path / "unloop", "--repetition-weight", "1")
    assert plain["config"]["repetition_weight"] == 0 and repeated["config"]["repetition_weight"] == 1
    assert "2 sharpened heads" in repeated["trained_behind"]
    assert repeated["losses"][0] > plain["losses"][0]  # the same first batch, the repetition loss added
    layers = gaincell_layers(load_adapted(tmp_path / "unloop")[0])
    for layer, head in heads:
        assert float(layers[layer].c2p_gain.detach()[head]) == 4.0
    refused = CliRunner().invoke(main, ["adapt", "--model", str(source), "--surrogate", str(PAPER), "--train-text",
                                        str(text), "--stages", "heads", "--repetition-weight", "1",
                                        "--out", str(tmp_path / "no")])
    assert refused.exit_code == 1 and "--repetition-weight: is read only by the mlp stage" in refused.output
    with pytest.raises(ConfigError, match=r"--repetition-weight: must be in \[0, 100\]"):
        TrainConfig(steps=1, repetition_weight=-1.0)
    # sharpened heads its manifest names that the model does not have: refused naming the folder
    import json

    edited = tmp_path / "edited"
    shutil.copytree(source, edited)
    manifest = json.loads((edited / "adapted.json").read_text())
    manifest["stages"]["heads"]["heads"] = [[99, 0]]
    (edited / "adapted.json").write_text(json.dumps(manifest))
    bad = CliRunner().invoke(main, ["adapt", "--model", str(edited), "--surrogate", str(PAPER), "--train-text",
                                    str(text), "--stages", "mlp", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "its sharpened heads [[99, 0]] are not heads of this model" in bad.output, bad.output


def test_a_text_without_sentences_is_refused_before_any_stage_trains(tmp_path, llama_folder):
    from click.testing import CliRunner

    from gaincell.app.cli import main

    text = tmp_path / "train.txt"
    text.write_text(TEXT)  # its sentences are longer than 64 of the tiny tokenizer's tokens
    out = tmp_path / "out"
    done = CliRunner().invoke(main, ["adapt", "--model", str(llama_folder), "--surrogate", str(PAPER), "--train-text",
                                     str(text), "--stages", "transfer,mlp", "--repetition-weight", "1", "--out", str(out)])
    assert done.exit_code == 1 and "needs a training text of sentences" in done.output, done.output
    assert "stage transfer" not in done.output and not out.exists()

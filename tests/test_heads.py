"""The heads stage (adapt.heads): the softmax teacher's retrieving heads found on the training text get a larger
C2P gain, and distillation keeps their gains and thresholds."""
import pytest
import torch

import gaincell.adapt.heads as heads_module
from gaincell.adapt.heads import (SCORING_LENGTH, SCORING_WINDOWS, hold_heads, retrieval_scores, scoring_windows,
                                  sharpen_heads, word_starts)
from gaincell.adapt.models import gaincell_layers, load_adapted, load_pretrained, read_manifest, swap_attention
from gaincell.adapt.recipe import AdaptOptions, adapt
from gaincell.adapt.train import RECALL_GAP, TrainConfig, frequent_tokens, recall_tokens
from gaincell.adapt.transfer import add_adapters, layer_groups
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import TEXT

PAPER = data_path("paper_reference.h5")


def _stream(tokenizer):
    return torch.tensor(tokenizer(TEXT, add_special_tokens=False)["input_ids"])


def test_word_starts_are_the_tokens_that_begin_a_word(llama_folder):
    tokenizer = load_pretrained(llama_folder)[1]
    starts = word_starts(tokenizer)
    assert starts.shape == (len(tokenizer),) and 0 < int(starts.sum()) < len(tokenizer)
    for token in range(len(tokenizer)):
        text = tokenizer.decode([token])
        assert bool(starts[token]) == (text[:1] == " " and text[1:2].isalpha() and len(text.strip()) >= 3), text


@pytest.mark.parametrize("words_only", [False, True])
def test_retrieval_scores_are_the_teachers_mean_weight_on_the_recalled_word(llama_folder, words_only):
    teacher, tokenizer, _ = load_pretrained(llama_folder)
    stream = _stream(tokenizer)
    starts = word_starts(tokenizer) if words_only else None
    scores, queries = retrieval_scores(teacher, stream, starts, windows=4, length=128, seed=3)
    assert teacher.config._attn_implementation != "eager"  # put back
    # the same by loops over the queries, from the weights the eager implementation returns
    teacher.set_attn_implementation("eager")
    common, expected, count = frequent_tokens(stream, 10), torch.zeros_like(scores), 0
    for window in heads_module.random_windows(stream, 4, 128, 3):
        inputs, labels = window[None, :-1], window[None, 1:]
        weights = teacher(inputs, use_cache=False, output_attentions=True).attentions
        for t in recall_tokens(inputs, labels, common)[0].nonzero().flatten().tolist():
            if words_only and not starts[labels[0, t]]:
                continue
            count += 1
            for s in range(t - RECALL_GAP + 2):
                if inputs[0, s] == labels[0, t]:
                    expected += torch.stack([w[0, :, t, s] for w in weights])
    assert queries == count > 0
    torch.testing.assert_close(scores, expected / count)
    assert scores.shape == (2, 4) and bool((scores >= 0).all() and (scores <= 1).all())


def test_common_words_are_300_or_a_30th_of_a_small_vocabulary():
    from gaincell.adapt.train import common_count

    assert common_count(49_152) == common_count(50_257) == 300 and common_count(300) == 10 and common_count(20) == 1


def test_text_without_recalled_words_is_refused(llama_folder, monkeypatch):
    teacher = load_pretrained(llama_folder)[0]
    stream = torch.arange(40).repeat(3)  # every token repeated 40 back, but all of them among the common ones
    monkeypatch.setattr(heads_module, "common_count", lambda vocab_size: 40)
    with pytest.raises(ConfigError, match="--train-text: has no token that recalls a rare word"):
        retrieval_scores(teacher, stream, windows=1, length=100)


def test_sharpen_sets_the_top_heads_and_hold_keeps_them_through_training(llama_folder):
    model, tokenizer, _ = load_pretrained(llama_folder)
    swap_attention(model, PAPER)
    scores = torch.tensor([[0.1, 0.5, 0.0, 0.2], [0.4, 0.0, 0.3, 0.05]])
    chosen = sharpen_heads(model, scores, 3, 4.0)
    assert chosen == [[0, 1], [1, 0], [1, 2]]
    gains = torch.stack([layer.c2p_gain.detach() for layer in gaincell_layers(model)])
    torch.testing.assert_close(gains, torch.tensor([[1.0, 4.0, 1.0, 1.0], [4.0, 1.0, 4.0, 1.0]]))
    with pytest.raises(ConfigError, match="model: has 2 layers of 4 heads"):
        sharpen_heads(model, torch.zeros(3, 4), 1, 2.0)

    model = add_adapters(model, 4)
    hold_heads(model, chosen)
    groups = layer_groups(model, 1e-2, 1e-1)
    assert all(g["weight_decay"] == 0.0 for g in groups[::2])  # scalers, thresholds, gains: no decay
    optimizer = torch.optim.AdamW(groups, weight_decay=0.1)
    before = [(layer.c2p_gain.detach().clone(), layer.c2p_threshold.detach().clone()) for layer in gaincell_layers(model)]
    batch = _stream(tokenizer)[:65].unsqueeze(0)
    for _ in range(3):
        logits = model(batch[:, :-1], use_cache=False).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[0, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    held = torch.zeros(2, 4, dtype=torch.bool)
    held[[0, 1, 1], [1, 0, 2]] = True
    for index, (layer, (gain, threshold)) in enumerate(zip(gaincell_layers(model), before)):
        assert torch.equal(layer.c2p_gain.detach()[held[index]], gain[held[index]])
        assert torch.equal(layer.c2p_threshold.detach()[held[index]], threshold[held[index]])
    moved = torch.cat([(layer.c2p_threshold.detach() - threshold)[~held[i]]
                       for i, (layer, (_, threshold)) in enumerate(zip(gaincell_layers(model), before))])
    assert moved.abs().max() > 0  # the other heads train


def test_heads_stage_in_the_recipe_and_kept_when_re_targeting(tmp_path, llama_folder):
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    first = tmp_path / "adapted"
    options = dict(model=str(llama_folder), surrogate=PAPER, out=first, train_text=text,
                   stages=("heads", "transfer", "distill"),  # run in the order of STAGES
                   transfer=TrainConfig(steps=2, batch=2, seq=32, lr=1e-2, scaler_lr=3e-2),
                   distill=TrainConfig(steps=2, batch=2, seq=32, lr=1e-3, scaler_lr=1e-1, distill_weight=1.0),
                   lora_rank=4, calibration_tokens=64, retrieval_heads=2, retrieval_gain=5.0)
    manifest = adapt(AdaptOptions(**options), say=lambda *a: None)
    assert manifest["stages_done"] == ["transfer", "distill", "heads"]
    record = manifest["stages"]["heads"]
    assert len(record["heads"]) == 2 and record["gain"] == 5.0 and record["recalling_queries"] > 0
    assert 16 <= record["windows_read"] < SCORING_WINDOWS  # a short text, read about once
    layers = gaincell_layers(load_adapted(first)[0])
    for layer, head in record["heads"]:
        assert float(layers[layer].c2p_gain.detach()[head]) == 5.0
    assert sum(float(g) == 5.0 for layer in layers for g in layer.c2p_gain.detach()) == 2
    # distilling the adapted model further (re-targeted or not) keeps the same heads
    second = tmp_path / "again"
    again = adapt(AdaptOptions(**{**options, "model": str(first), "out": second, "stages": ("distill",)}),
                  say=lambda *a: None)
    assert again["held_heads"] == record["heads"] == read_manifest(second)["held_heads"]
    layers = gaincell_layers(load_adapted(second)[0])
    for layer, head in record["heads"]:
        assert float(layers[layer].c2p_gain.detach()[head]) == 5.0
    # every gain set anew (--c2p-gain) leaves no sharpened head to hold
    reset = adapt(AdaptOptions(**{**options, "model": str(first), "out": tmp_path / "reset", "stages": ("distill",),
                                   "c2p_gain": 1.0}), say=lambda *a: None)
    assert "held_heads" not in reset and "held_heads" not in read_manifest(tmp_path / "reset")
    # the command line RESULTS.md quotes, on the tiny model
    from click.testing import CliRunner

    from gaincell.app.cli import main
    third = tmp_path / "cli"
    done = CliRunner().invoke(main, ["adapt", "--model", str(second), "--surrogate", str(PAPER), "--train-text",
                                     str(text), "--stages", "heads", "--retrieval-heads", "3", "--retrieval-gain", "2",
                                     "--out", str(third)])
    assert done.exit_code == 0, done.output
    assert "kept as they are" in done.output and "C2P gain 2 on the teacher's 3 most retrieving heads" in done.output
    assert len(read_manifest(third)["stages"]["heads"]["heads"]) == 3


def test_heads_options_are_checked(tmp_path):
    base = dict(model="smollm2", surrogate=PAPER, out=tmp_path / "o", train_text=tmp_path / "t.txt",
                stages=("transfer", "heads", "distill"))
    with pytest.raises(ConfigError, match="--retrieval-heads: must be a positive integer"):
        AdaptOptions(**base, retrieval_heads=0)
    with pytest.raises(ConfigError, match=r"--retrieval-gain: must be within 0.25 .. 8"):
        AdaptOptions(**base, retrieval_gain=9.0)


def test_mlp_stage_trains_the_mlps_alone_before_the_heads(tmp_path, llama_folder, gpt2_folder):
    """`--stages mlp,heads` on an adapted model: the MLP projections move, every attention weight and circuit
    setting stays (but the gains the heads stage sets after it); the command line RESULTS.md quotes."""
    from click.testing import CliRunner

    from gaincell.adapt.transfer import mlp_projections
    from gaincell.app.cli import main

    gpt2 = load_pretrained(gpt2_folder)[0]
    assert {name.rsplit(".", 1)[-1] for name in mlp_projections(gpt2)} == {"c_fc", "c_proj"}
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    source = tmp_path / "adapted"
    adapt(AdaptOptions(model=str(llama_folder), surrogate=PAPER, out=source, train_text=text, stages=("transfer",),
                       transfer=TrainConfig(steps=1, batch=2, seq=32, lr=1e-2, scaler_lr=3e-2), lora_rank=4,
                       calibration_tokens=64), say=lambda *a: None)
    out = tmp_path / "mlp"
    done = CliRunner().invoke(main, ["adapt", "--model", str(source), "--surrogate", str(PAPER), "--train-text",
                                     str(text), "--stages", "mlp,heads", "--mlp-steps", "2", "--lora-rank", "4",
                                     "--batch", "2", "--seq", "32", "--c2p-gain", "1", "--retrieval-heads", "2",
                                     "--out", str(out)])
    assert done.exit_code == 0, done.output
    manifest = read_manifest(out)
    assert manifest["stages_done"] == ["mlp", "heads"] and manifest["stages"]["mlp"]["steps"] == 2
    before, after = load_adapted(source)[0].state_dict(), load_adapted(out)[0].state_dict()
    mlps = set(mlp_projections(load_adapted(out)[0]))
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.rsplit(".", 1)[0] in mlps or name.endswith(".c2p_gain") for name in moved), moved
    assert any(name.rsplit(".", 1)[0] in mlps for name in moved)
    with pytest.raises(ConfigError, match="--lora-rank: must be > 0 for the mlp stage"):
        AdaptOptions(model="smollm2", surrogate=PAPER, out=tmp_path / "o", train_text=text, stages=("mlp",),
                     lora_rank=0)


def test_the_stage_reads_a_short_text_about_once_and_a_long_one_in_its_full_count_of_windows():
    assert scoring_windows(1_000_000) == SCORING_WINDOWS  # the novels and WikiText-2 valid (1.06 M tokens)
    assert scoring_windows(40 * SCORING_LENGTH + 5) == 40
    assert scoring_windows(100) == 16

"""Layer-wise attention transfer and distillation (adapt.transfer, the transfer/distill stages of `adapt`)."""
import json

import pytest
import torch

from gaincell.adapt.models import gaincell_layers, load_adapted, load_pretrained, swap_attention
from gaincell.adapt.recipe import AdaptOptions, adapt
from gaincell.adapt.train import TrainConfig, finetune
from gaincell.adapt.transfer import (TransferObjective, add_adapters, attention_projections, layer_errors, layer_groups,
                                     match_statistics, merge_adapters, softmax_teacher)
from gaincell.adapt.text import read_items
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import TEXT, tiny_gpt2, tiny_llama

PAPER = data_path("paper_reference.h5")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def folder(request, tmp_path_factory):
    make = tiny_gpt2 if request.param == "gpt2" else tiny_llama
    return make(tmp_path_factory.mktemp(request.param))


def _stream(tokenizer, n=3000):
    return torch.tensor(tokenizer(TEXT, add_special_tokens=False)["input_ids"][:n])


def _student(folder, rank=4):
    model, tokenizer, _ = load_pretrained(folder)
    swap_attention(model, PAPER)
    stream = _stream(tokenizer)
    match_statistics(model, stream[:64].unsqueeze(0))
    return add_adapters(model, rank), stream


def _trainable(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_adapters_sit_on_the_attention_projections_only(folder):
    model, _ = _student(folder)
    names = attention_projections(model)
    assert names and all(any(p in name for p in ("q_proj", "k_proj", "v_proj", "o_proj", "attn.c_attn", "attn.c_proj"))
                         for name in names)
    trainable = _trainable(model)
    assert any("lora_" in name for name in trainable)
    assert all("lora_" in name or ".gaincell." in name for name in trainable)  # the rest is frozen
    assert not any("mlp" in name for name in trainable)


def test_statistics_match_starts_the_transfer_near_the_softmax_output(folder):
    model, tokenizer, _ = load_pretrained(folder)
    swap_attention(model, PAPER)
    batch = _stream(tokenizer)[:128].unsqueeze(0)
    untouched = sum(layer_errors(model, batch))
    match_statistics(model, batch)
    matched = layer_errors(model, batch)
    assert sum(matched) < untouched
    assert all(error < 2.0 for error in matched)  # close to "predict the mean" (1.0), not orders of magnitude off
    for layer in gaincell_layers(model):  # q lands on the pulse-width targets of the calibration
        assert torch.allclose(layer.q_scaler.target_mean, torch.full_like(layer.q_scaler.target_mean, 0.5))


def test_all_layers_at_once_equal_each_layer_trained_alone(tmp_path, folder):
    config = TrainConfig(steps=3, batch=2, seq=48, lr=1e-2, scaler_lr=3e-2, checkpoint_every=100)
    together, stream = _student(folder)
    objective = TransferObjective(together)
    finetune(together, stream, config, tmp_path / "together.safetensors", groups=layer_groups(together, config.lr, config.scaler_lr),
             objective=objective, dropout=False, progress=False)
    alone, _ = _student(folder)
    modules_groups = layer_groups(alone, config.lr, config.scaler_lr)
    per_layer = len(modules_groups) // len(gaincell_layers(alone))
    for index in range(len(gaincell_layers(alone))):
        finetune(alone, stream, config, tmp_path / f"alone{index}.safetensors",
                 groups=modules_groups[index * per_layer:(index + 1) * per_layer],
                 objective=TransferObjective(alone, layers=[index]), dropout=False, progress=False)
    a, b = _trainable(together), _trainable(alone)
    assert a.keys() == b.keys()
    moved = 0
    initial = _trainable(_student(folder)[0])
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
        moved += not torch.equal(a[name], initial[name])
    assert moved == len(a)  # every scaler and adapter trained


def test_the_attention_weight_objective_moves_the_pulses_toward_the_teachers_weights(tmp_path, folder):
    """--attention-weight: the KL of the teacher's attention weights to the normalised C2P pulses is finite and
    non-negative, reaches the thresholds and scalers, and training with it lowers it more than without it."""
    config = dict(steps=10, batch=2, seq=48, lr=1e-2, scaler_lr=3e-2, checkpoint_every=100)
    window = _stream(load_pretrained(folder)[1])[:97].view(1, 97).repeat(2, 1)

    def divergence(model):
        probe = TransferObjective(model, attention_weight=1.0, attention_queries=32)
        try:
            probe(model, window, 0.0)
        finally:
            probe.remove()
        model.zero_grad()
        return sum(probe.last_divergences) / len(probe.last_divergences)

    ends = {}
    for weight in (0.0, 1.0):
        model, stream = _student(folder)
        start = divergence(model)
        assert 0 <= start < 20
        objective = TransferObjective(model, attention_weight=weight, attention_queries=32)
        finetune(model, stream, TrainConfig(attention_weight=weight, **config), tmp_path / f"w{weight}.safetensors",
                 groups=layer_groups(model, 1e-2, 3e-2), objective=objective, dropout=False, progress=False)
        objective.remove()
        assert len(objective.last_divergences) == (len(gaincell_layers(model)) if weight else 0)
        ends[weight] = divergence(model)
        if weight:
            assert all(layer.c2p_threshold.abs().max() > 0 for layer in gaincell_layers(model))
            assert all((layer.c2p_gain != 1).any() for layer in gaincell_layers(model))  # the gains train too
    assert ends[1.0] < ends[0.0] and ends[1.0] < start


def test_transfer_lowers_every_layers_error_and_merging_keeps_the_function(tmp_path, folder):
    model, stream = _student(folder)
    batch = stream[:96].unsqueeze(0)
    before = layer_errors(model, batch)
    config = TrainConfig(steps=12, batch=2, seq=48, lr=1e-2, scaler_lr=3e-2, checkpoint_every=100)
    finetune(model, stream, config, tmp_path / "t.safetensors", groups=layer_groups(model, config.lr, config.scaler_lr),
             objective=TransferObjective(model), dropout=False, progress=False)
    after = layer_errors(model, batch)
    assert all(a < b for a, b in zip(after, before)), (before, after)
    with torch.no_grad():
        logits = model(batch, use_cache=False).logits
        with softmax_teacher(model):
            teacher = model(batch, use_cache=False).logits
        merged = merge_adapters(model)
        assert not hasattr(merged, "peft_config")
        assert torch.allclose(merged(batch, use_cache=False).logits, logits, atol=1e-4)
        plain = load_pretrained(folder)[0]
        assert torch.allclose(plain(batch, use_cache=False).logits, teacher, atol=1e-4)  # the teacher is the original


def test_transfer_and_distill_stages_resume_save_and_reload(tmp_path, folder):
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    out = tmp_path / "adapted"
    options = dict(model=str(folder), surrogate=PAPER, out=out, train_text=text, stages=("transfer", "distill"),
                   transfer=TrainConfig(steps=4, batch=2, seq=32, lr=1e-2, scaler_lr=3e-2, checkpoint_every=1),
                   distill=TrainConfig(steps=2, batch=2, seq=32, lr=1e-3, distill_weight=1.0, checkpoint_every=1),
                   lora_rank=4, calibration_tokens=64, c2p_gain=1.5)
    straight = adapt(AdaptOptions(**options), say=lambda *a: None)
    assert straight["stages_done"] == ["transfer", "distill"]
    assert straight["c2p_gain_start"] == 1.5  # every head starts at the given gain and trains from there
    gains = torch.cat([layer.c2p_gain.detach() for layer in gaincell_layers(load_adapted(out)[0])])
    assert 0 < (gains - 1.5).abs().max() < 0.5
    record = straight["stages"]["transfer"]
    assert record["steps"] == 4 and record["tokens_seen"] == 4 * 2 * 32 and record["lora_rank"] == 4
    errors = record["layer_errors"]
    assert len(errors["before"]) == len(errors["after"]) == len(gaincell_layers(load_adapted(out)[0]))
    assert straight["stages"]["distill"]["steps"] == 2 and "cpu_seconds" in straight["stages"]["distill"]
    model, tokenizer = load_adapted(out)
    assert json.loads((out / "adapted.json").read_text())["stages_done"] == ["transfer", "distill"]
    batch = _stream(tokenizer)[:40].unsqueeze(0)
    reference = model(batch, use_cache=False).logits

    resumed_out = tmp_path / "resumed"
    calls = {"n": 0}
    original = TransferObjective.__call__

    def stop_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    TransferObjective.__call__ = stop_on_third
    try:
        with pytest.raises(KeyboardInterrupt, match="step 2"):
            adapt(AdaptOptions(**{**options, "out": resumed_out}), say=lambda *a: None)
    finally:
        TransferObjective.__call__ = original
    assert (resumed_out / "checkpoints" / "transfer.safetensors").is_file()
    adapt(AdaptOptions(**{**options, "out": resumed_out}), say=lambda *a: None)
    again = load_adapted(resumed_out)[0](batch, use_cache=False).logits
    assert torch.allclose(again, reference, atol=1e-4)


def test_bad_transfer_options_are_refused(tmp_path, folder):
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    base = dict(model=str(folder), surrogate=PAPER, out=tmp_path / "o", train_text=text)
    with pytest.raises(ConfigError, match="--lora-rank"):
        AdaptOptions(**base, stages=("transfer",), lora_rank=-1)
    with pytest.raises(ConfigError, match="--distill"):
        AdaptOptions(**base, stages=("distill",), distill=TrainConfig(steps=2, distill_weight=0.0))
    with pytest.raises(ConfigError, match="--scaler-lr"):
        TrainConfig(steps=2, scaler_lr=0.0)
    with pytest.raises(ConfigError, match="transfer without linear"):
        AdaptOptions(**base, stages=("linear", "transfer"))
    with pytest.raises(ConfigError, match=r"--c2p-gain: must be within 0.25 .. 8"):
        AdaptOptions(**base, stages=("transfer",), c2p_gain=10.0)
    model, _, _ = load_pretrained(folder)
    swap_attention(model, PAPER)
    smallest = 64 if "gpt2" in str(folder) else 32  # width 64; the tiny Llama's k/v projections give 2 x 16
    with pytest.raises(ConfigError, match=f"--lora-rank.*at most {smallest}"):
        add_adapters(model, smallest + 1)
    add_adapters(model, smallest)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 5}\n')
    with pytest.raises(ConfigError, match="'text' must be a string"):
        read_items(bad)


def test_resuming_with_another_lora_rank_is_a_clear_error(tmp_path, folder):
    config = TrainConfig(steps=3, batch=1, seq=32, lr=1e-2, checkpoint_every=1)
    for rank, raised in ((4, None), (2, ConfigError)):
        model, stream = _student(folder, rank)
        objective = TransferObjective(model)
        run = lambda: finetune(model, stream, config, tmp_path / "t.safetensors", groups=layer_groups(model, 1e-2),
                               objective=objective, dropout=False, progress=False)
        if raised:
            with pytest.raises(raised, match="--resume"):
                run()
        else:
            run()


def test_a_head_with_a_constant_readout_keeps_a_unit_gain():
    from gaincell.adapt.transfer import set_affine
    from gaincell.surrogate.scalers import AffineScaler

    scaler = AffineScaler(3)
    scaler.target_mean.fill_(0.0)
    scaler.target_std.fill_(1.0)
    with torch.no_grad():  # as in match_statistics
        set_affine(scaler, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.0, 1e-9]))
    assert torch.allclose(scaler.a, torch.tensor([2.0, 1.0, 1.0]))  # not 1e12: a constant head is not blown up
    assert torch.allclose(scaler.b, torch.tensor([-1.0, -0.5, -0.5]))


def test_recall_tokens_are_rare_words_repeated_from_far_back():
    """`recall_tokens` marks a next token that repeats a word seen 16 or more tokens back (and not since), unless the
    word is common in the training text or already occurred more than three times."""
    from gaincell.adapt.train import recall_tokens

    window = torch.arange(1000, 1041)  # 41 distinct tokens: no label repeats an input
    window[3] = window[30] = 7  # a rare word 27 tokens back: recalled at label position 29
    window[5] = window[24] = window[34] = 8  # recalled at 23; at 33 the copy 10 tokens back answers it
    window[2] = window[38] = 9  # a common word: never counted
    inputs, labels = window[None, :-1], window[None, 1:]
    mask = recall_tokens(inputs, labels, common=torch.tensor([9]))
    assert mask[0].nonzero().flatten().tolist() == [23, 29]
    window[4] = window[6] = window[8] = window[10] = 7  # five earlier occurrences: too frequent to be a recall
    assert recall_tokens(window[None, :-1], window[None, 1:], torch.tensor([9]))[0].nonzero().flatten().tolist() == [23]


def test_the_recall_weight_weighs_those_tokens_in_the_distillation_loss(llama_folder):
    """With --recall-weight W the loss is the per-token KL averaged with weight 1 + W on the recall tokens: 0 gives
    the plain mean, and a weight moves the loss toward those tokens' KL."""
    from gaincell.adapt.train import _language_model_loss, frequent_tokens, recall_tokens

    student, stream = _student(llama_folder)
    teacher = load_pretrained(llama_folder)[0]
    window = stream[:65].view(1, 65)
    common = frequent_tokens(stream, 20)
    mask = recall_tokens(window[:, :-1], window[:, 1:], common)
    assert 0 < mask.sum() < mask.numel()
    losses = {w: _language_model_loss(student, window, 0.0, teacher=teacher, common=common,
                                      config=TrainConfig(steps=1, distill_weight=1.0, recall_weight=w))
              for w in (0.0, 5.0)}
    with torch.no_grad():
        inputs = window[:, :-1]
        kl = torch.nn.functional.kl_div(torch.log_softmax(student(inputs).logits.float(), -1),
                                        torch.log_softmax(teacher(inputs).logits.float(), -1), log_target=True,
                                        reduction="none").sum(-1)[0]
    weights = 1 + 5.0 * mask[0].float()
    assert losses[0.0] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert losses[5.0] == pytest.approx(((kl * weights).sum() / weights.sum()).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="--recall-weight"):
        TrainConfig(steps=1, recall_weight=-1.0)

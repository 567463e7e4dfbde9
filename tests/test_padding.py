"""Padded batches through gain-cell attention: every real token gets the logits it gets alone; masks that are
not key padding over a causal mask are refused."""
import pytest
import torch

from gaincell.adapt.models import gaincell_layers, load_pretrained, real_tokens, set_mode, swap_attention
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import tiny_gpt2, tiny_llama

PAPER = data_path("paper_reference.h5")
LONG, SHORT = 37, 21  # with tile 8 and window 16, both cross tiles and wrap the ring


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    make = tiny_llama if request.param == "llama" else tiny_gpt2
    net, _, _ = load_pretrained(make(tmp_path_factory.mktemp(request.param)))
    return swap_attention(net, PAPER, tile=8, window=16)


def _sequences():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(1, 300, (LONG,), generator=generator), torch.randint(1, 300, (SHORT,), generator=generator)


def _padded_batch(side: str):
    """Ids, attention mask and position ids (counting real tokens only) of the two sequences, padded on `side`."""
    ids, mask = torch.zeros(2, LONG, dtype=torch.long), torch.zeros(2, LONG, dtype=torch.long)
    for row, sequence in enumerate(_sequences()):
        where = slice(LONG - len(sequence), LONG) if side == "left" else slice(0, len(sequence))
        ids[row, where], mask[row, where] = sequence, 1
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0), mask.bool()


@pytest.mark.parametrize("mode", ["nonlinear", "ideal"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_every_real_token_gets_the_logits_of_its_sequence_run_alone(model, side, mode):
    set_mode(model, mode)
    ids, mask, positions, real = _padded_batch(side)
    with torch.no_grad():
        alone = [model(sequence[None]).logits[0] for sequence in _sequences()]
        batched = model(ids, attention_mask=mask, position_ids=positions).logits
        unmasked = model(ids).logits  # without the mask: padding attended, other positions, tiles, ring slots
    for row, expected in enumerate(alone):
        torch.testing.assert_close(batched[row][real[row]], expected, rtol=0, atol=1e-5)
    if side == "left":  # (right padding only follows the real tokens: causality alone hides it)
        assert (unmasked[1][real[1]] - alone[1]).abs().max() > 1e-2


def test_ideal_mode_padded_batch_equals_the_softmax_model_padded(model):
    """The reference side: the unmodified model's own (sdpa) padded pass gives the same real-token logits
    (with a window longer than the text, as the unmodified model has none)."""
    set_mode(model, "ideal")
    ids, mask, positions, real = _padded_batch("left")
    layers = gaincell_layers(model)
    try:
        for layer in layers:
            layer.window = 64
        with torch.no_grad():
            swapped = model(ids, attention_mask=mask, position_ids=positions).logits
            model.set_attn_implementation("sdpa")
            softmax = model(ids, attention_mask=mask, position_ids=positions).logits
    finally:
        model.set_attn_implementation("gaincell")
        for layer in layers:
            layer.window = 16
    torch.testing.assert_close(swapped[real], softmax[real], rtol=0, atol=1e-4)


def test_masks_other_than_padding_are_refused(model):
    set_mode(model, "nonlinear")
    ids, _, _, _ = _padded_batch("right")
    holes = torch.ones_like(ids)
    holes[1, 5] = 0  # a hole inside the real tokens
    packed = torch.cat([torch.arange(20), torch.arange(LONG - 20)]).expand(2, -1)  # two documents in one row
    with torch.no_grad():
        with pytest.raises(ConfigError, match="attention_mask.*padding over a causal mask"):
            model(ids, attention_mask=holes)
        with pytest.raises(ConfigError, match="attention_mask.*padding over a causal mask"):
            model(ids, position_ids=packed)


def test_four_dimensional_masks_are_read_or_refused():
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    keep = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = (causal & keep[:, None, :])[:, None]
    assert torch.equal(real_tokens(padded, 2, 5), keep)
    additive = torch.zeros(2, 1, 5, 5).masked_fill(~padded, torch.finfo(torch.float32).min)
    assert torch.equal(real_tokens(additive, 2, 5), keep)
    assert real_tokens(causal.expand(2, 1, 5, 5), 2, 5) is None
    for bad in (torch.ones(2, 1, 5, 5, dtype=torch.bool),  # bidirectional
                (causal & (torch.arange(5)[:, None] - torch.arange(5)[None, :] < 2)).expand(2, 1, 5, 5),  # window 2
                torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)):  # a hole
        with pytest.raises(ConfigError, match="attention_mask"):
            real_tokens(bad, 2, 5)
    with pytest.raises(ConfigError, match="attention bias"):
        real_tokens(additive + 0.5 * padded, 2, 5)

"""A small-scale adaptation check on CPU: SmolLM2 with a surrogate - naive swap, calibration, attention transfer.

Used by the demo (stage "language-model adaptation"): it needs no ../shared, only the packaged SmolLM2 and
the shipped sample text (chapters 1-3 of Pride and Prejudice), cut into three parts: the first
`calibration_tokens` tokens are the calibration batch, the following `eval_tokens` tokens are scored, the
rest is the transfer's training text (its first window is the transfer's statistics-match batch). The calibration is the paper's algorithm with a shortened schedule
(alpha 1 -> 0.1 over half the iterations); the transfer is the `transfer` stage of `gaincell adapt` with a few
steps (adapt.transfer). Finally one prompt is continued by the softmax model and the transferred gain-cell model.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from gaincell.resources import data_path

from .calibrate import calibrate, softmax_targets
from .evaluate import perplexity
from .generate import Decoding, GenerationModels, generate_both
from .models import load_pretrained, swap_attention
from .text import token_stream
from .train import TrainConfig
from .transfer import train_transfer

SAMPLE_TEXT = "pride_and_prejudice_ch1-3.txt"
PROMPT = "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that"


def adaptation_check(surrogate_path, model: str = "smollm2", calibration_tokens: int = 128, eval_tokens: int = 1024,
                     context: int = 512, iterations: int = 30, transfer: TrainConfig | None = None,
                     lora_rank: int = 8, prompt: str = PROMPT, new_tokens: int = 24, say=print) -> dict:
    """Perplexity of the softmax model, the naive swap, the calibrated swap and the transferred model on the
    sample text, the transfer's loss per step, and `prompt` continued by the softmax and transferred models."""
    transfer = transfer or TrainConfig(steps=24, batch=1, seq=context, lr=2e-3, scaler_lr=1e-2, checkpoint_every=10**6)
    started = time.perf_counter()
    softmax_model, tokenizer, _ = load_pretrained(model)
    net = copy.deepcopy(softmax_model)
    stream = token_stream(data_path(SAMPLE_TEXT), tokenizer)
    batch = stream[:calibration_tokens].unsqueeze(0)
    held_out = stream[calibration_tokens:calibration_tokens + eval_tokens]
    training = stream[calibration_tokens + eval_tokens:]
    results = {"calibration_tokens": calibration_tokens, "eval_tokens": int(held_out.numel()), "context": context,
               "transfer_text_tokens": int(training.numel())}

    def score(name: str, label: str, network) -> None:
        results[name] = perplexity(network, held_out, context, context, progress=False)["perplexity"]
        say(f"      {label} perplexity {results[name]:.4g}")

    with torch.no_grad():
        score("softmax", "softmax", net)
        swap_attention(net, surrogate_path)
        score("naive_swap", "naive swap", net)
        softmax_targets(net, batch)
        outcome = calibrate(net, batch, iterations=iterations, alpha_steps=max(1, iterations // 2), progress=False)
        score("calibrated", f"calibrated ({outcome.iterations} iterations)", net)
    results.update(iterations=outcome.iterations, converged=outcome.converged, changes=outcome.changes)

    transferred = swap_attention(copy.deepcopy(softmax_model), surrogate_path)
    with tempfile.TemporaryDirectory() as scratch:
        # matched and trained on windows as long as the scored ones: without softmax normalisation the readout
        # grows with the number of keys a query sees, so statistics of shorter windows do not carry over
        transferred, trained = train_transfer(transferred, training, training[:transfer.seq].unsqueeze(0), transfer,
                                              Path(scratch) / "transfer.safetensors", lora_rank=lora_rank, progress=False)
    score("transferred", f"attention transfer ({transfer.steps} steps, LoRA rank {lora_rank})", transferred)
    results.update(transfer_losses=trained["losses"], transfer_steps=transfer.steps,
                   transfer_tokens=trained["tokens_seen"], transfer_seconds=trained["seconds"], lora_rank=lora_rank)

    models = GenerationModels(transferred, softmax_model, tokenizer, "gain-cell, after transfer", "softmax")
    softmax_text, gaincell_text = generate_both(models, prompt, Decoding(max_new_tokens=new_tokens))
    results.update(prompt=prompt, softmax_continuation=softmax_text.text, gaincell_continuation=gaincell_text.text,
                   seconds=time.perf_counter() - started)
    return results

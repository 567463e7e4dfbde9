"""Text generation: a prompt continued by the gain-cell model through every layer's own ring cache, beside the
softmax model's continuation from transformers' `generate` with the same decoding settings.

The gain-cell path is the hardware's decode path: the prompt goes through the parallel pass, which writes
every layer's ring buffer, then one token per step, each layer reading only its `RingCache` (`ring_caches`
attaches them; the attention-interface function passes a layer's cache on). Positions are passed explicitly,
so RoPE and GPT-2's position table see each token's true position; transformers' KV cache is not used
(`use_cache=False`). Any prompt fits the arrays (the ring wraps once the text is longer than the window); the
limit is the model's context (its position table, or the positions RoPE was trained on). In 'ideal' mode (plain
softmax, which has no ring buffer) the whole text is run again at every step instead.

Decoding: greedy (temperature 0), or sampled with a temperature and optional top-k from a seeded generator,
through transformers' own logits processors, so that both continuations are decoded alike; an optional
repetition penalty (transformers' `RepetitionPenaltyLogitsProcessor`: the logit of every token already in the
text divided by it where positive, multiplied where negative) applies to greedy and sampled decoding. Both stop at the
tokenizer's end-of-sequence token. Sampled draws are equal for equal logits on CPU, where `generate`'s global
generator and the gain-cell path's own CPU generator start from the same seed (tested); on CUDA `generate` draws
from the CUDA generator, so the two sampled continuations use different random streams.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gaincell.errors import ConfigError, GaincellError, ModelLoadError

from .models import ADAPTED_MANIFEST, gaincell_layers, load_adapted, load_pretrained, read_manifest, swap_attention
from .shipped import model_folder


MIN_TEMPERATURE = 1e-3  # below it sampling is greedy in effect, and logits / temperature can overflow to inf
MAX_REPETITION_PENALTY = 10.0  # beyond it every token of the prompt is all but banned


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen: greedy when temperature is 0, else sampled (temperature, top-k, seed); a
    repetition penalty above 1 makes tokens already in the text less likely in both."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens", f"must be a positive integer; got {self.max_new_tokens!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and (self.temperature == 0 or self.temperature >= MIN_TEMPERATURE)):
            raise ConfigError("--temperature", f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g} (sampled); got "
                                               f"{self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError("--top-k", f"must be a positive integer; got {self.top_k!r}")
        if self.top_k is not None and not self.sampled:
            raise ConfigError("--top-k", "applies to sampling: give --temperature > 0 as well (temperature 0 is greedy)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError("--seed", f"must be a non-negative integer; got {self.seed!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and not isinstance(self.repetition_penalty, bool)
                and 1.0 <= self.repetition_penalty <= MAX_REPETITION_PENALTY):
            raise ConfigError("--repetition-penalty", f"must be within 1 (none) .. {MAX_REPETITION_PENALTY:g}; got "
                                                      f"{self.repetition_penalty!r}")

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def describe(self) -> str:
        penalty = f", repetition penalty {self.repetition_penalty:g}" if self.repetition_penalty != 1 else ""
        if not self.sampled:
            return f"greedy{penalty}"
        return f"sampled (temperature {self.temperature:g}, top-k {self.top_k or 'off'}, seed {self.seed}{penalty})"

    def warpers(self):
        """transformers' logits processors for this setting, in `generate`'s order (empty when plain greedy or
        plain sampling)."""
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                  TopKLogitsWarper)

        warpers = LogitsProcessorList()
        if self.repetition_penalty != 1:
            warpers.append(RepetitionPenaltyLogitsProcessor(float(self.repetition_penalty)))
        if self.sampled and self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.sampled and self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        return warpers

    def generation_config(self, eos_token_id: int | None):
        """The same setting for transformers' `generate`, every sampling knob given (none left to defaults)."""
        from transformers import GenerationConfig

        return GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=self.sampled, num_beams=1,
                                temperature=float(self.temperature) if self.sampled else 1.0,
                                top_k=(self.top_k or 0) if self.sampled else None,  # greedy: no flag to warn about
                                top_p=1.0, typical_p=1.0, repetition_penalty=float(self.repetition_penalty),
                                eos_token_id=eos_token_id, pad_token_id=eos_token_id)


@dataclass
class Continuation:
    """The new tokens of one continuation, its text, and (gain-cell path) each step's next-token logits."""

    label: str
    tokens: list[int]
    text: str = ""
    logits: torch.Tensor | None = field(default=None, repr=False)  # (steps, vocab), float32, on the CPU


REPEAT_NGRAM = 4  # tokens in the phrases `repeated_ngrams` counts by default


def repeated_ngrams(tokens: list[int], n: int = REPEAT_NGRAM) -> int:
    """How many of the runs of `n` consecutive tokens in `tokens` occur earlier in it (overlaps counted): 0 when
    no phrase of n tokens repeats; a continuation stuck in a loop of L tokens adds about one per token."""
    if n < 1:
        raise ConfigError("--ngram", f"must be a positive integer; got {n!r}")
    runs = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(runs) - len(set(runs))


def context_length(config) -> int | None:
    """The model's context in positions (GPT-2's n_positions, Llama's max_position_embeddings)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def prompt_ids(tokenizer, prompt: str, config, decoding: Decoding) -> torch.Tensor:
    """The prompt as (1, P) token ids (the tokenizer's own special tokens, as a user prompting the model gets),
    checked: not empty, and prompt + new tokens within the model's context. A prompt longer than the gain-cell
    window is fine (the ring wraps)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("--prompt", "is empty; give the text to continue")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. bytes that are not UTF-8 on the command line (kept as surrogates)
        raise ConfigError("--prompt", f"is not valid UTF-8 text (character {exc.start}: {prompt[exc.start]!r})") from exc
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    length, context = ids.shape[1], context_length(config)
    if length == 0:
        raise ConfigError("--prompt", f"{prompt!r} gives no tokens")
    if context is not None and length > context:
        raise ConfigError("--prompt", f"is {length} tokens, longer than the model's context of {context} positions")
    if context is not None and length + decoding.max_new_tokens > context:
        raise ConfigError("--max-new-tokens", f"{decoding.max_new_tokens} after a {length}-token prompt goes past the "
                                              f"model's context of {context} positions; at most {context - length}")
    return ids


@contextlib.contextmanager
def ring_caches(model, max_tokens: int):
    """Attach a fresh ring cache to every gain-cell layer of `model` (holding `max_tokens` when a layer has no
    window) for the duration of the block; the model's forward then decodes through them."""
    layers = gaincell_layers(model)
    if not layers:
        raise ConfigError("model", "has no gain-cell attention (swap_attention or an adapted folder)")
    for layer in layers:
        layer.decode_cache = layer.new_cache(max_tokens)
    try:
        yield [layer.decode_cache for layer in layers]
    finally:
        for layer in layers:
            layer.decode_cache = None


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _choose(decoding: Decoding, warpers, text: torch.Tensor, logits: torch.Tensor, generator) -> int:
    """The next token from (1, vocab) logits: the argmax (after the repetition penalty, if any), or a draw from
    the processed distribution."""
    if not decoding.sampled:
        return int(warpers(text, logits).argmax(-1))  # an empty list returns the logits as they are
    probabilities = warpers(text, logits).softmax(-1).cpu()
    if not bool(torch.isfinite(probabilities).all()):
        raise GaincellError("the gain-cell model's next-token logits are not finite (NaN or inf): nothing to sample "
                            "from; check the model with `gaincell eval`")
    return int(torch.multinomial(probabilities, 1, generator=generator))


@torch.no_grad()
def gaincell_continuation(model, ids: torch.Tensor, decoding: Decoding, eos_token_id: int | None = None,
                          label: str = "gain-cell") -> Continuation:
    """Continue (1, P) prompt ids token by token: the prompt through the parallel pass (writing every layer's
    ring cache), then one token per step through the caches; the logits of every step are kept."""
    layers = gaincell_layers(model)
    if not layers:
        raise ConfigError("model", "has no gain-cell attention (swap_attention or an adapted folder)")
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        raise ConfigError("ids", f"must be one prompt of shape (1, tokens); got {tuple(ids.shape)}")
    device = _model_device(model)
    text = ids.to(device)
    recompute = any(layer.mode == "ideal" for layer in layers)
    warpers, generator = decoding.warpers(), torch.Generator().manual_seed(decoding.seed)
    tokens, step_logits = [], []
    total = text.shape[1] + decoding.max_new_tokens
    caches = contextlib.nullcontext() if recompute else ring_caches(model, total)
    with caches:
        fed, positions = text, torch.arange(text.shape[1], device=device)
        for _ in range(decoding.max_new_tokens):
            logits = model(fed, position_ids=positions[None], use_cache=False).logits[:, -1].float()
            step_logits.append(logits[0].cpu())
            token = _choose(decoding, warpers, text, logits, generator)
            tokens.append(token)
            if token == eos_token_id:
                break
            text = torch.cat([text, text.new_tensor([[token]])], dim=1)
            end = text.shape[1]
            fed, positions = (text, torch.arange(end, device=device)) if recompute else \
                (text[:, -1:], torch.arange(end - 1, end, device=device))
    return Continuation(label, tokens, logits=torch.stack(step_logits))


@torch.no_grad()
def softmax_continuation(model, ids: torch.Tensor, decoding: Decoding, eos_token_id: int | None = None,
                         label: str = "softmax") -> Continuation:
    """Continue (1, P) prompt ids with transformers' `generate` (its own KV cache), seeded like the gain-cell
    path; the model's saved generation defaults are set aside so that only `decoding` applies."""
    from transformers import GenerationConfig

    device = _model_device(model)
    ids = ids.to(device)
    saved, model.generation_config = model.generation_config, GenerationConfig()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(decoding.seed)
            out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 generation_config=decoding.generation_config(eos_token_id))
    finally:
        model.generation_config = saved
    return Continuation(label, out[0, ids.shape[1]:].tolist())


@dataclass
class GenerationModels:
    """The gain-cell model, the softmax model it is compared with, the tokenizer and what each one is."""

    gaincell: torch.nn.Module
    softmax: torch.nn.Module
    tokenizer: object
    gaincell_label: str
    softmax_label: str


def load_generation_models(model_spec: str | Path, surrogate: str | Path | None = None) -> GenerationModels:
    """An adapted folder (its gain-cell model, and its manifest's base model as the softmax model), or a plain
    model with a surrogate (the naive swap, and the plain model itself)."""
    folder = model_folder(model_spec)
    if (folder / ADAPTED_MANIFEST).is_file():
        if surrogate is not None:
            raise ConfigError("--surrogate", "is for plain models; an adapted folder carries its own")
        gaincell, tokenizer = load_adapted(folder)
        base = read_manifest(folder).get("base_model")
        try:
            if not base:
                raise ModelLoadError("the manifest names no base model")
            softmax = load_pretrained(base)[0]
            softmax_label = f"softmax, base model {base}"
        except (ConfigError, ModelLoadError) as exc:
            # the folder's own weights with softmax attention (its saved config selects sdpa)
            softmax = _plain_weights(folder)
            softmax_label = f"softmax, the adapted folder's weights (base model {base!r} not loadable: {exc})"
        return GenerationModels(gaincell, softmax, tokenizer, f"gain-cell, adapted {folder}", softmax_label)
    if surrogate is None:
        raise ConfigError("--surrogate", "a plain model needs one ('paper' or a surrogate file) for its gain-cell "
                                         "continuation; an adapted folder carries its own")
    softmax, tokenizer, _ = load_pretrained(folder)
    gaincell = swap_attention(load_pretrained(folder)[0], surrogate)
    return GenerationModels(gaincell, softmax, tokenizer, "gain-cell, naive swap (initial scalers)",
                            f"softmax, {model_spec}")


def _plain_weights(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()


def generate_both(models: GenerationModels, prompt: str, decoding: Decoding) -> tuple[Continuation, Continuation]:
    """(softmax, gain-cell) continuations of `prompt`, with their texts."""
    ids = prompt_ids(models.tokenizer, prompt, models.gaincell.config, decoding)
    eos = models.tokenizer.eos_token_id
    pair = (softmax_continuation(models.softmax, ids, decoding, eos, models.softmax_label),
            gaincell_continuation(models.gaincell, ids, decoding, eos, models.gaincell_label))
    for continuation in pair:
        continuation.text = models.tokenizer.decode(continuation.tokens, skip_special_tokens=True)
    return pair

"""Attention shapes of language models (layers, query and KV heads, head size): known ones by name, or read from a
Hugging Face config.json. The adaptation swaps attention by them; the energy model counts actions by them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """What the attention hardware of a model must hold: layers, query and KV heads, head size."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    width: int
    context: int | None
    source: str

    def __post_init__(self):
        for field_name in ("layers", "heads", "kv_heads", "head_dim", "width"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError("--model", f"{self.name}: {field_name} must be a positive integer; got {value!r}")
        if self.heads % self.kv_heads:
            raise ConfigError("--model", f"{self.name}: kv_heads ({self.kv_heads}) must divide heads ({self.heads})")

    @property
    def group(self) -> int:
        """Query heads sharing one KV head (1 for multi-head attention)."""
        return self.heads // self.kv_heads


KNOWN = {
    "gpt2": ModelConfig("gpt2", 12, 12, 12, 64, 768, 1024,
                        "GPT-2 small (Radford et al. 2019; HF config n_layer=12, n_head=12, n_embd=768, n_positions=1024)"),
    "smollm2": ModelConfig("smollm2", 30, 9, 3, 64, 576, 8192,
                           "SmolLM2-135M (HF config: 30 layers, 9 query heads, 3 KV heads, head dim 64, hidden 576)"),
}
ALLOWED = "gpt2, smollm2, or a folder holding a Hugging Face config.json"


def _field(config: dict, path: Path, *names: str, default=None):
    for name in names:
        if name in config:
            return config[name]
    if default is not None:
        return default
    raise ConfigError("--model", f"{path} has none of {', '.join(names)}; allowed: {ALLOWED} with GPT-2 keys "
                                 "(n_layer, n_head, n_embd) or Llama keys (num_hidden_layers, num_attention_heads, "
                                 "hidden_size)")


def load_model_config(spec: str) -> ModelConfig:
    """A known name (gpt2, smollm2) or a folder with config.json (GPT-2 or Llama-style keys)."""
    key = str(spec).strip().lower()
    if key in KNOWN:
        return KNOWN[key]
    path = Path(spec)
    if not path.exists():
        raise ConfigError("--model", f"{spec!r} is neither a known model nor an existing folder; allowed: {ALLOWED}")
    file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(file.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ConfigError("--model", f"cannot read {file} as a Hugging Face config.json ({exc}); allowed: {ALLOWED}") \
            from None
    return model_config_from_dict(config, file, path.name)


def model_config_from_dict(config: dict, source, fallback_name: str = "model") -> ModelConfig:
    """The attention shape from a Hugging Face config as a dict (GPT-2 or Llama-style keys)."""
    layers = _field(config, source, "n_layer", "num_hidden_layers")
    heads = _field(config, source, "n_head", "num_attention_heads")
    width = _field(config, source, "n_embd", "hidden_size")
    kv_heads = _field(config, source, "num_key_value_heads", default=heads)
    head_dim = config.get("head_dim") or (width // heads if isinstance(width, int) and isinstance(heads, int) and heads
                                          else None)
    context = config.get("n_positions", config.get("max_position_embeddings"))
    name = config.get("_name_or_path") or config.get("model_type") or fallback_name
    return ModelConfig(str(name), layers, heads, kv_heads, head_dim, width, context, str(source))

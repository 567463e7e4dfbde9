"""Tiny random-init language models in real Hugging Face folders, with a real (small, trained) tokenizer."""
from pathlib import Path

import torch

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
        "the rightful property of some one or other of their daughters. ") * 20


def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 300) trained on TEXT with the tokenizers library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         special_tokens=["<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")


def tiny_gpt2(folder: Path, layers: int = 2, width: int = 64, heads: int = 4) -> Path:
    """A random-init GPT-2 saved as a normal HF folder (config, safetensors, tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, n_positions=512, vocab_size=300)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_llama(folder: Path, layers: int = 2, width: int = 64, heads: int = 4, kv_heads: int = 2) -> Path:
    """A random-init Llama (RoPE, grouped-query KV) saved as a normal HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=layers, hidden_size=width, intermediate_size=2 * width,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=300,
                         max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder

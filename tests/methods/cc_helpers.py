"""Shared by the CC-Tuning test modules: a few examples and tiny random models (hidden 32, 3 layers) of five
architectures, for the byte-level BPE tokenizer with a ChatML template of `tests/tiny.py`."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
)

from harness.data.base import Example

EXAMPLES = [
    Example("1", "fr", "traduis le chat noir", "the black cat", "translate the black cat"),
    Example("2", "de", "übersetze den großen hund bitte", "the big dog", "translate the big dog please"),
    Example("3", "en", "name a colour", "blue", "name a colour"),
    Example("4", "fr", "dis bonjour au monde entier", "hello whole world", "say hello to the whole world"),
    Example("5", "de", "zähle bis drei", "one two three", "count to three"),
    Example("6", "fr", "quelle est la capitale", "paris", "what is the capital"),
]

ARCHS = ["llama", "qwen2", "gpt2", "gemma", "gemma3"]


def make_config(arch: str, vocab: int, layers: int = 3):
    ids = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 2}  # as in tests.tiny
    common = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers}
    common |= {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **ids}
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "gemma":
        return GemmaConfig(**common, head_dim=8)
    if arch == "gemma3":  # sliding-window attention (window 4 < prompt length) and post-FFN norms
        return Gemma3TextConfig(**common, head_dim=8, sliding_window=4, query_pre_attn_scalar=8)
    if arch == "gpt2":
        no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_positions=256, **ids, **no_dropout
        )
    raise ValueError(arch)


def make_model(arch: str, vocab: int = 400, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, vocab))
    # a random model's attention is near-uniform: sharpen the weights so that fusion visibly matters
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0) if p.dim() > 1 else None
    return model.eval()


def random_rows(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=g).tolist() for n in (9, 6, 12)]

"""Shared by the test_cc_faithful_* modules: tiny random Llama / Qwen2 / Mistral models (hidden 32,
3 layers), a right-padded CC training batch and a few prompts."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from harness.training.trainer import pad_collate

CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}


def tiny_lm(arch: str = "llama", vocab: int = 400, seed: int = 0, initializer_range: float = 0.02):
    """A random 3-layer model with untied embeddings (so an embedding row's gradient comes from the
    input side only) and no dropout."""
    config = CONFIGS[arch](
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, tie_word_embeddings=False,
        initializer_range=initializer_range,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # a random model's attention is near-uniform: sharpen it so that paths matter
        for p in model.parameters():
            p.mul_(3.0) if p.dim() > 1 else None
    return model


ENGLISH_TOKENS = range(200, 300)  # the English prompts' tokens; the non-English pass uses 3..99 only


def cc_batch() -> dict[str, torch.Tensor]:
    """Two right-padded examples of different lengths: non-English prompt + response, English prompt."""
    g = torch.Generator().manual_seed(1)
    items = []
    for prompt_len, response_len, english_len in ((7, 4, 6), (5, 6, 9)):
        prompt = torch.randint(3, 100, (prompt_len,), generator=g).tolist()
        response = torch.randint(3, 100, (response_len,), generator=g).tolist()
        english = torch.randint(ENGLISH_TOKENS.start, ENGLISH_TOKENS.stop, (english_len,), generator=g).tolist()
        items.append({"input_ids": prompt + response, "labels": [-100] * prompt_len + response,
                      "rst": prompt_len - 1, "en_input_ids": english, "en_rst": english_len - 1})  # fmt: skip
    return pad_collate(0)(items)


PROMPTS = ["traduis le chat noir", "zähle bis drei", "quelle est la capitale de la France"]

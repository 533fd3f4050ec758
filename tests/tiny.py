"""A tiny random Llama and a byte-level BPE tokenizer with a ChatML template, built offline.

For tests that need a real `transformers` model end to end (lm-eval, training loops) but not a
meaningful one: `tiny_llama(tiny_tokenizer())` takes well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Premise: A man is playing a guitar. Hypothesis: A person plays music.",
    "If you have to choose one of these options, your answer would be: (1) Entail (2) Neutral (3) Contradict",
    "Please summarize the following content into one sentence.",
    "Please answer the following multiple choice question. (A) (B) (C) (D)",
    "What is the topic of the following sentence? science/technology, travel, politics, sports",
    "Janet's ducks lay 16 eggs per day. How much does she make? The answer is 18.",
    "Jibu lako litakuwa: Inajumuisha, Kupingana. 你的答案是：蕴涵 中立 矛盾。 उत्तर होगा",
]


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few sentences: encodes any text (every byte is in the vocab)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0, max_positions: int = 512
) -> LlamaForCausalLM:
    """A randomly initialised 2-layer Llama (hidden size 32) matching `tokenizer`'s vocabulary."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"

# per family: special tokens, (bos, eos), and words that are one token in the real vocabulary
FAMILY_TOKENS = {
    "qwen2": (["<|im_start|>", "<|im_end|>"], ("<|endoftext|>", "<|im_end|>"), ["assistant", "system", "user"]),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]"], ("<s>", "</s>"), []),
    "llama3": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ("<|begin_of_text|>", "<|eot_id|>"),
        ["assistant", "user", "\n\n"],
    ),
}


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """`tiny_tokenizer` with the special tokens and the real chat template (tests/fixtures) of a model
    family of the CC-Tuning paper: "qwen2" (Qwen2.5), "mistral" (Mistral-7B v0.3), "llama3"."""
    special, (bos, eos), words = FAMILY_TOKENS[family]
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": special})
    tok.add_tokens(words)
    tok.bos_token, tok.eos_token = bos, eos
    tok.chat_template = (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
    return tok


def save_tiny_model(folder: Path) -> Path:
    """`tiny_llama` with `tiny_tokenizer`, saved as a checkpoint folder (a `--model` for the commands)."""
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder

"""Prompt templating shared by training and evaluation (and by methods that locate a prompt position).

The prompt is the chat-templated instruction with the generation prompt appended; for a tokenizer
without a chat template a plain template of ours is used.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, instruction: str) -> str:
    """The templated prompt, ending where the response starts."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_PROMPT.format(instruction=instruction)


def format_response(tokenizer, instruction: str, output: str) -> str:
    """The text that follows the prompt in a full conversation: the response and its end-of-turn marker."""
    prompt = format_prompt(tokenizer, instruction)
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}],
            tokenize=False,
        )
        if full.startswith(prompt) and output in full[len(prompt) :]:
            return full[len(prompt) :].rstrip("\n") if full.endswith("\n") else full[len(prompt) :]
    return output + (tokenizer.eos_token or "")


def encode_prompt(tokenizer, instruction: str) -> list[int]:
    return tokenizer(format_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 on prompt tokens: only the response is learned
    prompt_len: int  # the RST is at prompt_len - 1
    truncated: bool  # the response was cut to fit max_length


def encode_example(tokenizer, instruction: str, output: str, max_length: int) -> Encoded | None:
    """Tokenise prompt and response separately (so the prompt boundary is exact) and mask the prompt.

    Returns None when the prompt alone does not leave room for one response token.
    """
    prompt_ids = encode_prompt(tokenizer, instruction)
    response_ids = tokenizer(format_response(tokenizer, instruction, output), add_special_tokens=False)[
        "input_ids"
    ]
    if len(prompt_ids) >= max_length:
        return None
    room = max_length - len(prompt_ids)
    truncated = len(response_ids) > room
    response_ids = response_ids[:room]
    return Encoded(
        input_ids=prompt_ids + response_ids,
        labels=[-100] * len(prompt_ids) + response_ids,
        prompt_len=len(prompt_ids),
        truncated=truncated,
    )

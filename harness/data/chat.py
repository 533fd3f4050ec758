"""Prompt templating shared by training, CC-Tuning's Response Start Token (RST), and evaluation.

The prompt is the chat-templated instruction with the generation prompt appended; for a tokenizer
without a chat template a plain template of ours is used.

The RST is `len(prompt_ids) - rst_offset(tokenizer, mode)`: with `rst=last` (the default) the last
prompt token, for any template; with `rst=authors` the token the CC-Tuning authors pick for the template
families their code supports (`train_utils/tag_locate.py` in their repository): for Llama-3 the last
token too, for Qwen2 (ChatML) the `assistant` token before the final newline, for Mistral the token
before `[/INST]`. The markers after the instruction are special tokens, so the offset from the end is
the same for every prompt of a tokenizer: right padding keeps the RST at `len - offset`, left padding at
column `-offset`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.plumbing.errors import HarnessError, unknown

RST_MODES = ("last", "authors")

# The authors' RST per template family: (marker token, step from its last occurrence, description).
AUTHORS_RST: tuple[tuple[str, int, str], ...] = (
    ("<|end_header_id|>", 1, "Llama-3: the token after the last <|end_header_id|> (the last prompt token)"),
    ("<|im_start|>", 1, "Qwen2 / ChatML: the token after the last <|im_start|> ('assistant')"),
    ("[/INST]", -1, "Mistral: the token before the last [/INST]"),
)

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


def rst_offset(tokenizer, mode: str = "last") -> int:
    """How many tokens from the end of a templated prompt its RST is (1: the last token)."""
    return _locate(tokenizer, mode)[0]


def describe_rst(tokenizer, mode: str = "last") -> str:
    """The RST rule in words, e.g. for the dry run and the run log."""
    offset, rule = _locate(tokenizer, mode)
    return f"rst={mode}: {rule} (prompt length - {offset})"


def _locate(tokenizer, mode: str) -> tuple[int, str]:
    if mode not in RST_MODES:
        raise unknown("RST mode", mode, RST_MODES, "option rst of method 'cc'")
    if mode == "last":
        return 1, "the last prompt token"
    ids = encode_prompt(tokenizer, "x")
    vocab = tokenizer.get_vocab()
    for marker, step, rule in AUTHORS_RST:
        if marker not in vocab:
            continue
        found = [i for i, t in enumerate(ids) if t == vocab[marker]]
        if found and 0 <= found[-1] + step < len(ids):
            return len(ids) - (found[-1] + step), rule
    raise HarnessError(
        "rst=authors: the prompt template of this tokenizer has none of the markers the authors locate the "
        f"RST by ({', '.join(m for m, _, _ in AUTHORS_RST)}: Llama-3, Qwen2, Mistral); use rst=last"
    )

"""CC-Tuning's Response Start Token (RST): which prompt token its activations are taken at and fused into.

The RST is `len(prompt_ids) - rst_offset(tokenizer, mode)`: with `rst=last` (the default) the last
prompt token, for any template; with `rst=authors` the token the CC-Tuning authors pick for the template
families their code supports (`train_utils/tag_locate.py` in their repository): for Llama-3 the last
token too, for Qwen2 (ChatML) the `assistant` token before the final newline, for Mistral the token
before `[/INST]`. The markers after the instruction are special tokens, so the offset from the end is
the same for every prompt of a tokenizer: right padding keeps the RST at `len - offset`, left padding at
column `-offset`.
"""

from __future__ import annotations

from harness.data.chat import encode_prompt
from harness.plumbing.errors import HarnessError, unknown

RST_MODES = ("last", "authors")

# The authors' RST per template family: (marker token, step from its last occurrence, description).
AUTHORS_RST: tuple[tuple[str, int, str], ...] = (
    ("<|end_header_id|>", 1, "Llama-3: the token after the last <|end_header_id|> (the last prompt token)"),
    ("<|im_start|>", 1, "Qwen2 / ChatML: the token after the last <|im_start|> ('assistant')"),
    ("[/INST]", -1, "Mistral: the token before the last [/INST]"),
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

"""What `harness translate` translates (`harness.data.translate`): a `Unit` is one text with its source and
target language; `source_text` picks the text of an example under `--src-lang`, `units_for` turns a
recipe's examples into the distinct units to translate (line by line, or whole), and `split_lines` /
`join_lines` take a multi-line instruction apart and put its translated lines back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.data.base import Example


@dataclass(frozen=True)
class Unit:
    """One text to translate from `src` into `tgt` (ISO 639-1)."""

    text: str
    src: str
    tgt: str


def split_lines(text: str) -> list[str]:
    """The non-blank lines of `text`, stripped: the units of a line-by-line translation."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def join_lines(text: str, translated: dict[str, str]) -> str:
    """`text` with each non-blank line replaced by its translation, blank lines kept."""
    return "\n".join(translated[line.strip()] if line.strip() else line for line in text.split("\n"))


def source_text(example: Example, src_lang: str) -> tuple[str, str] | None:
    """(text, language) of `example` to translate under `--src-lang src_lang`, or None (see the module doc
    of `harness.data.translate`)."""
    if src_lang == "auto":
        return example.instruction, example.lang
    if example.lang == src_lang:
        return example.instruction, src_lang
    if src_lang == "en" and example.instruction_en:
        return example.instruction_en, "en"
    return None


def units_for(
    examples: Iterable[Example], tgt_langs: Sequence[str], src_lang: str = "auto", by_line: bool = True
) -> list[Unit]:
    """The distinct units that translate the examples' instructions into `tgt_langs` (own language skipped)."""
    units: dict[Unit, None] = {}
    for example in examples:
        source = source_text(example, src_lang)
        if source is None:
            continue
        text, src = source
        for tgt in tgt_langs:
            if tgt == src:
                continue
            for piece in split_lines(text) if by_line else [text]:
                units[Unit(piece, src, tgt)] = None
    return list(units)

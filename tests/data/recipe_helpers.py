"""Shared by the recipe test modules: the valid languages message, benchmark rows, JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

from harness.data.base import LANGUAGES, data_dir, read_jsonl

VALID_LANGS = ", ".join(sorted(LANGUAGES))


def benchmark_row(task: str, lang: str, i: int) -> dict:
    return read_jsonl(data_dir() / "benchmarks" / task / f"{lang}.jsonl")[i]


def write_jsonl(path: Path, lines: list[dict | str]) -> str:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return str(path)

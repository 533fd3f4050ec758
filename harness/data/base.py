"""Where the shared data lives, the training example type, and a strict JSONL reader."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.plumbing.errors import HarnessError, unknown

# The 22 languages of the benchmarks (ISO 639-1).
LANGUAGES: tuple[str, ...] = (
    "ar", "bn", "de", "el", "en", "es", "eu", "fr", "hi", "id", "ja",
    "ko", "pt", "ru", "sw", "te", "th", "tr", "ur", "vi", "yo", "zh",
)  # fmt: skip

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic", "bn": "Bengali", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "eu": "Basque", "fr": "French", "hi": "Hindi", "id": "Indonesian",
    "ja": "Japanese", "ko": "Korean", "pt": "Portuguese", "ru": "Russian", "sw": "Swahili",
    "te": "Telugu", "th": "Thai", "tr": "Turkish", "ur": "Urdu", "vi": "Vietnamese",
    "yo": "Yoruba", "zh": "Chinese",
}  # fmt: skip

# ISO 639-1 -> FLORES-200 code (NLLB-200's and SIB-200's names). Arabic is Modern Standard Arabic, Swahili
# swh, Chinese Simplified.
FLORES_CODES: dict[str, str] = {
    "ar": "arb_Arab", "bn": "ben_Beng", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "eu": "eus_Latn", "fr": "fra_Latn", "hi": "hin_Deva", "id": "ind_Latn",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "pt": "por_Latn", "ru": "rus_Cyrl", "sw": "swh_Latn",
    "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn", "ur": "urd_Arab", "vi": "vie_Latn",
    "yo": "yor_Latn", "zh": "zho_Hans",
}  # fmt: skip

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def user_data_dir() -> Path:
    """Where `harness data fetch` builds the data folder by default: `$XDG_CACHE_HOME/cc-harness/data`, else
    `~/.cache/cc-harness/data`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cc-harness" / "data"


# Written by `harness data fetch` when every file it built matches the manifest: a fetch that was killed,
# or that found a differing file, leaves a folder the harness does not read from.
FETCHED_MARKER = ".fetched.json"


def data_dir() -> Path:
    """The data folder: `$HARNESS_DATA`; else the user cache folder when `harness data fetch` finished
    building it there (`FETCHED_MARKER`); else `../shared/data` beside the project (or the cwd), the offline
    fallback."""
    env = os.environ.get("HARNESS_DATA")
    if env:
        path = Path(env).expanduser()
        if not (path / "benchmarks").is_dir():
            raise HarnessError(f"HARNESS_DATA={env} has no benchmarks/ folder; point it at the shared data folder")
        return path
    cache = user_data_dir()
    if (cache / FETCHED_MARKER).is_file() and (cache / "benchmarks").is_dir():
        return cache
    candidates = [PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if (path / "benchmarks").is_dir():
            return path
    raise HarnessError(
        f"data not found: run `harness data fetch` (builds it into {cache}), set HARNESS_DATA to a data folder, "
        "or place the shared data at " + " or ".join(str(p) for p in dict.fromkeys(candidates))
    )


def check_languages(langs: list[str], valid: list[str] | tuple[str, ...], where: str = "--langs") -> None:
    for lang in langs:
        if lang not in valid:
            raise unknown("language", lang, valid, where)


@dataclass(frozen=True)
class Example:
    """One instruction-tuning example. `instruction_en` is the English instruction with the same content
    (None when the source has no English parallel; CC-Tuning then refuses the example)."""

    id: str
    lang: str
    instruction: str
    output: str
    instruction_en: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; any defect is an error naming file:line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: is a directory, expected a JSONL file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise HarnessError(f"{path}:{line}: not valid UTF-8 (byte {e.start}); save the file as UTF-8") from None
    seen_any = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise HarnessError(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise HarnessError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        seen_any = True
        yield lineno, obj
    if not seen_any:
        raise HarnessError(f"{path}: empty file, expected one JSON object per line")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]

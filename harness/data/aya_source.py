"""Reading the Aya dataset for the `aya` recipe (`harness.data.recipes`): its Hub id, the map from Aya's
`language_code` values to the harness's languages, the script check that drops romanised rows, and the
loader of its train split from the Hub or from a local copy (a folder, or a .jsonl / .json / .parquet
file), whose failures become `HarnessError`s saying how to save a local copy.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from harness.plumbing.errors import HarnessError

AYA_DATASET = "CohereForAI/aya_dataset"

# Aya's `language_code` (ISO 639-3, individual languages) -> ours. Arabic is Standard Arabic (arb):
# the Aya dialect codes (ary, arz, ars, acq, apc, ajp, ...) are left out, the benchmarks being in MSA.
# Both Simplified and Traditional Chinese rows carry "zho". The macrolanguage codes (ara, swa, cmn,
# ...) are accepted too, for copies that use them.
AYA_LANGUAGE_CODES: dict[str, str] = {
    "arb": "ar", "ara": "ar",
    "ben": "bn",
    "deu": "de",
    "ell": "el",
    "eng": "en",
    "spa": "es",
    "eus": "eu",
    "fra": "fr",
    "hin": "hi",
    "ind": "id",
    "jpn": "ja",
    "kor": "ko",
    "por": "pt",
    "rus": "ru",
    "swh": "sw", "swa": "sw",
    "tel": "te",
    "tha": "th",
    "tur": "tr",
    "urd": "ur",
    "vie": "vi",
    "yor": "yo",
    "zho": "zh", "cmn": "zh",
}  # fmt: skip

# Unicode-name prefixes of each non-Latin language's script: Aya has romanised rows (Hindi and Urdu
# in Latin letters) that would teach the wrong script.
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "ar": ("ARABIC",), "ur": ("ARABIC",), "bn": ("BENGALI",), "el": ("GREEK",), "hi": ("DEVANAGARI",),
    "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL",), "ru": ("CYRILLIC",), "te": ("TELUGU",),
    "th": ("THAI",), "zh": ("CJK",),
}  # fmt: skip


def in_script(text: str, lang: str) -> bool:
    """At least a fifth of the first 400 characters' letters are in the language's script."""
    prefixes = _SCRIPTS.get(lang)
    if prefixes is None:
        return True
    letters = [c for c in text[:400] if c.isalpha()]
    hits = sum(unicodedata.name(c, "").startswith(prefixes) for c in letters)
    return not letters or hits * 5 >= len(letters)


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).suffix.lower() in (
        ".jsonl",
        ".json",
        ".parquet",
    )


def load_aya_table(source: str) -> Any:
    """The Aya train split from the Hub id `source`, or from a local folder / .jsonl / .parquet file."""
    from datasets import load_dataset  # imported here: it takes a second

    local = Path(source).expanduser()
    try:
        if local.is_file():
            suffix = local.suffix.lower()
            builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
            if builder is None:
                raise HarnessError(
                    f"{local}: expected a .jsonl, .json or .parquet file (or a folder) in the Aya format"
                )
            return load_dataset(builder, data_files=str(local), split="train")
        if local.is_dir():
            return load_dataset(str(local), split="train")
        if _looks_like_path(source):
            raise HarnessError(f"{source}: no such file or folder (expected a local copy of {AYA_DATASET})")
        return load_dataset(source, split="train")
    except HarnessError:
        raise
    except Exception as e:
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise HarnessError(
            f"could not load the Aya dataset from '{source}' ({type(e).__name__}: {reason}); without network, "
            f"save it elsewhere with datasets.load_dataset('{AYA_DATASET}', split='train').to_json('aya.jsonl') "
            "and pass that file as --recipe-path"
        ) from None

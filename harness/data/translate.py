"""Machine translation of a recipe's instructions with a Hugging Face translation model: `harness translate`.

    harness translate --model facebook/nllb-200-distilled-600M --tgt-lang sw,yo --out translations.jsonl

The output file is also the cache: one JSONL row per translated unit,
`{"model", "src", "tgt", "sha", "text", "translation"}`, keyed by (model, src, tgt, sha256 of the
text). Rows are appended and flushed to disk one batch at a time, so a run that is killed keeps every
finished batch; running the same command again translates only what is missing (a last line cut short
by the kill is dropped; the file is a `harness.data.resumable.ResumableJsonl`). The `aug_mt` and `aug_en`
methods read the file through `Translations` (`--method-opt translations=FILE`).

Which texts: the instructions of the recipe's examples (same options as `harness run`: `--recipe`,
`--recipe-path`, `--train-langs`, `--train-limit`, `--seed`), into every `--tgt-lang`. `--src-lang auto`
(the default) translates each example's instruction from its own language; `--src-lang L` translates
only text in L: the instructions of the examples in L, and for `en` the English instruction
(`instruction_en`) of every example that has one. A multi-line instruction is translated line by line
(these are sentence-level models; a template line shared by many instructions is translated once) and
put back together with the same line breaks; `--whole` translates each instruction as one text. The
units to translate are made by `harness.data.translation_units`.

Models and language codes (the harness's codes are ISO 639-1, `harness.data.base.LANGUAGES`); the
convention is read off the tokenizer:
- NLLB-200 (`eng_Latn` in the vocabulary): FLORES-200 codes (`NLLB_CODES`: sw -> swh_Latn); the
  tokenizer's `src_lang` is set per batch and `forced_bos_token_id` is the target code's token;
- M2M100 (`__en__` in the vocabulary): ISO 639-1 codes as they are, the same two settings (M2M100
  has no Basque or Telugu: asking for them is an error);
- MarianMT with several targets (`>>xxx<<` tokens): the target token (`MARIAN_CODES`: sw -> >>swh<<
  or >>swa<<, whichever the model has) is put in front of every source text;
- any other sequence-to-sequence model (e.g. a one-pair `Helsinki-NLP/opus-mt-en-sw`) translates one
  fixed pair: the job may hold one source and one target language only, taken as given.
transformers 5 has no translation pipeline; `Translator` does what its `TranslationPipeline` did:
set the source language on the tokenizer, encode a padded batch, `generate` with the target's forced
first token, decode without special tokens.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness.data.base import FLORES_CODES, LANGUAGES, check_languages
from harness.data.recipes import RecipeOptions, load_recipe
from harness.data.resumable import ResumableJsonl
from harness.data.translation_units import Unit, join_lines, split_lines, units_for
from harness.plumbing.errors import HarnessError

log = logging.getLogger(__name__)

# ISO 639-1 -> FLORES-200 code, as NLLB-200 names its languages.
NLLB_CODES: dict[str, str] = FLORES_CODES

# ISO 639-1 -> the codes multi-target OPUS-MT models may use in their `>>code<<` tokens, in order of
# preference (ISO 639-1, then ISO 639-3 individual language, macrolanguage, script variants).
MARIAN_CODES: dict[str, tuple[str, ...]] = {
    "ar": ("ar", "arb", "ara"), "bn": ("bn", "ben"), "de": ("de", "deu"), "el": ("el", "ell"),
    "en": ("en", "eng"), "es": ("es", "spa"), "eu": ("eu", "eus"), "fr": ("fr", "fra"),
    "hi": ("hi", "hin"), "id": ("id", "ind"), "ja": ("ja", "jpn"), "ko": ("ko", "kor"),
    "pt": ("pt", "por"), "ru": ("ru", "rus"), "sw": ("sw", "swh", "swa", "swc"), "te": ("te", "tel"),
    "th": ("th", "tha"), "tr": ("tr", "tur"), "ur": ("ur", "urd"), "vi": ("vi", "vie"),
    "yo": ("yo", "yor"), "zh": ("zh", "cmn_Hans", "zho_Hans", "cmn", "zho"),
}  # fmt: skip

NLLB, M2M100, MARIAN_MULTI, SINGLE_PAIR = "nllb", "m2m100", "marian-multi", "single-pair"


def model_name(model: str) -> str:
    """The model's name in the cache: the absolute path of a local folder, else the Hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def text_sha(text: str) -> str:
    """The cache key of a text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- language codes --------------------------------------------------------------------------------


def detect_convention(tokenizer) -> str:
    """How the model names languages: `NLLB`, `M2M100`, `MARIAN_MULTI` or `SINGLE_PAIR` (see the module doc)."""
    vocab = tokenizer.get_vocab()
    if "eng_Latn" in vocab:
        return NLLB
    if "__en__" in vocab or hasattr(tokenizer, "get_lang_id"):
        return M2M100
    if getattr(tokenizer, "supported_language_codes", None):
        return MARIAN_MULTI
    return SINGLE_PAIR


def language_code(convention: str, lang: str, tokenizer) -> str:
    """The model's name for language `lang` (ISO 639-1): an NLLB code, an M2M100 code, or a full Marian
    `>>code<<` token. An error when the model does not have the language."""
    if convention == NLLB:
        code = NLLB_CODES[lang]
        candidates = [code]
    elif convention == M2M100:
        code = lang
        candidates = [f"__{lang}__"]
        if candidates[0] in getattr(tokenizer, "lang_token_to_id", {}):
            return code
    elif convention == MARIAN_MULTI:
        supported = set(tokenizer.supported_language_codes)
        candidates = [f">>{c}<<" for c in MARIAN_CODES[lang]]
        code = next((c for c in candidates if c in supported), "")
    else:
        return lang
    vocab = tokenizer.get_vocab()
    if not code or not any(c in vocab for c in candidates):
        raise HarnessError(
            f"the translation model ({convention} language codes) has no code for '{lang}' "
            f"(looked for {', '.join(candidates)}); choose other --tgt-lang / --src-lang languages or another model"
        )
    return code


# --- the translator --------------------------------------------------------------------------------


class Translator:
    """A sequence-to-sequence translation model and its tokenizer; `translate_batch` is one `generate` call."""

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 256,
        num_beams: int = 1,
        trust_remote_code: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.name = model_name(model)
        if not Path(self.name).exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
            raise HarnessError(
                f"--model {model}: no such folder; give a local model folder or a Hub id like org/name"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(self.name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise HarnessError(
                f"--model {model}: cannot load it as a translation (sequence-to-sequence) model: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
            ) from None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.convention = detect_convention(self.tokenizer)
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        limits = [
            self.tokenizer.model_max_length,
            getattr(self.model.config, "max_position_embeddings", None),
        ]
        self.max_input_tokens = min(int(v) for v in limits if v)
        log.info("translation model %s (%s language codes) on %s", model, self.convention, self.device)

    def check(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Fail before any work when the model lacks a language, or translates one pair and more are asked."""
        pairs = sorted(set(pairs))
        if self.convention == SINGLE_PAIR:
            if len({s for s, _ in pairs}) > 1 or len({t for _, t in pairs}) > 1:
                raise HarnessError(
                    f"--model {self.name} translates one fixed language pair (its tokenizer names no languages), "
                    f"but the job asks for {', '.join(f'{s}->{t}' for s, t in pairs)}; pass one --src-lang and "
                    "one --tgt-lang, or use a multilingual model (NLLB-200, M2M100)"
                )
            return
        for src, tgt in pairs:
            language_code(self.convention, src, self.tokenizer)
            language_code(self.convention, tgt, self.tokenizer)

    def _inputs(self, texts: list[str], src: str, tgt: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The encoded batch and the extra `generate` arguments that select the languages."""
        tok = self.tokenizer
        extra: dict[str, Any] = {}
        if self.convention in (NLLB, M2M100):
            tok.src_lang = language_code(self.convention, src, tok)
            tgt_code = language_code(self.convention, tgt, tok)
            if self.convention == NLLB:
                extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(tgt_code)
            elif hasattr(tok, "get_lang_id"):
                extra["forced_bos_token_id"] = tok.get_lang_id(tgt_code)
            else:
                extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(f"__{tgt_code}__")
        elif self.convention == MARIAN_MULTI:
            token = language_code(self.convention, tgt, tok)
            texts = [f"{token} {t}" for t in texts]
        inputs = tok(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_input_tokens
        )
        return {k: v.to(self.device) for k, v in inputs.items()}, extra

    def translate_batch(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        inputs, extra = self._inputs(texts, src, tgt)
        with torch.no_grad():
            out = self.model.generate(  # (batch, target length)
                **inputs,
                **extra,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
            )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


# --- batched, cached translation -------------------------------------------------------------------


def cache_key(model: str, unit: Unit) -> str:
    return f"{model}\t{unit.src}\t{unit.tgt}\t{text_sha(unit.text)}"


@dataclass
class TranslateStats:
    units: int = 0  # distinct units asked for
    cached: int = 0  # already in the file
    translated: int = 0  # translated now
    batches: int = 0  # `generate` calls

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def translate_units(
    units: Sequence[Unit], translator: Translator, out: Path, batch_size: int = 16
) -> TranslateStats:
    """Translate the units that `out` does not hold yet, `batch_size` at a time per language pair (similar
    lengths together), appending each finished batch to `out`."""
    if batch_size < 1:
        raise HarnessError(f"--batch-size {batch_size}: must be at least 1")
    cache = ResumableJsonl(out)
    units = list(dict.fromkeys(units))
    todo = [u for u in units if cache_key(translator.name, u) not in cache]
    stats = TranslateStats(units=len(units), cached=len(units) - len(todo))
    if not todo:
        return stats
    translator.check((u.src, u.tgt) for u in todo)
    groups: dict[tuple[str, str], list[Unit]] = {}
    for unit in todo:
        groups.setdefault((unit.src, unit.tgt), []).append(unit)
    with tqdm(total=len(todo), desc="translating", unit="text") as bar:
        for (src, tgt), group in sorted(groups.items()):
            group.sort(key=lambda u: (len(u.text), u.text))  # less padding per batch
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                outputs = translator.translate_batch([u.text for u in batch], src, tgt)
                cache.append([
                    {"key": cache_key(translator.name, u), "model": translator.name, "src": src, "tgt": tgt,
                     "sha": text_sha(u.text), "text": u.text, "translation": t}
                    for u, t in zip(batch, outputs, strict=True)
                ])  # fmt: skip
                stats.batches += 1
                stats.translated += len(batch)
                bar.update(len(batch))
    return stats


def translate_recipe(
    model: str,
    tgt_langs: Sequence[str],
    out: Path,
    recipe: str = "mini-parallel",
    recipe_path: str | None = None,
    train_langs: Sequence[str] | None = None,
    train_limit: int | None = 200,
    seed: int = 0,
    src_lang: str = "auto",
    by_line: bool = True,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    num_beams: int = 1,
    trust_remote_code: bool = False,
) -> TranslateStats:
    """`harness translate`: translate the instructions of a recipe's examples into `tgt_langs`, cached
    in `out`. The model is loaded only when something is left to translate."""
    if not tgt_langs:
        raise HarnessError("--tgt-lang: give at least one target language, e.g. --tgt-lang sw,yo")
    check_languages(list(tgt_langs), LANGUAGES, where="--tgt-lang")
    if src_lang != "auto":
        check_languages([src_lang], LANGUAGES, where="--src-lang (or auto)")
    options = RecipeOptions(
        langs=tuple(train_langs) if train_langs else None, per_lang=train_limit, seed=seed, path=recipe_path
    )
    examples = load_recipe(recipe, options)
    units = units_for(examples, tgt_langs, src_lang, by_line)
    if not units:
        raise HarnessError(
            f"nothing to translate: recipe '{recipe}' has no {src_lang} text outside the target languages "
            f"{', '.join(tgt_langs)}"
        )
    cache = ResumableJsonl(out)
    if all(cache_key(model_name(model), u) in cache for u in units):
        return TranslateStats(units=len(units), cached=len(units))
    translator = Translator(model, max_new_tokens, num_beams, trust_remote_code)
    return translate_units(units, translator, out, batch_size)


# --- reading translations --------------------------------------------------------------------------


class Translations:
    """The translations of a `harness translate` file: `get(text, src, tgt)` looks the whole text up, else
    puts it together line by line. Rows of every model in the file count; where one text has several
    (several models), the first row in the file wins. Empty translations count as missing."""

    def __init__(self, rows: Iterable[dict[str, Any]], source: str = "") -> None:
        self.source = source
        self._index: dict[tuple[str, str, str], str] = {}
        self.models: set[str] = set()
        for row in rows:
            translation = str(row.get("translation") or "").strip()
            if translation:
                self._index.setdefault((str(row["src"]), str(row["tgt"]), str(row["sha"])), translation)
                self.models.add(str(row.get("model")))

    @classmethod
    def load(cls, path: str | Path) -> Translations:
        path = Path(path).expanduser()
        if not path.is_file():
            raise HarnessError(f"translations file {path}: not found (write one with `harness translate`)")
        rows = list(ResumableJsonl(path).rows.values())
        for i, row in enumerate(rows, 1):
            missing = [k for k in ("src", "tgt", "sha", "translation") if k not in row]
            if missing:
                raise HarnessError(
                    f"{path}: row {i} lacks {', '.join(missing)}; not a `harness translate` file"
                )
        translations = cls(rows, str(path))
        if len(translations.models) > 1:
            log.warning("%s holds translations from %d models; the first row per text is used", path,
                        len(translations.models))  # fmt: skip
        return translations

    def __len__(self) -> int:
        return len(self._index)

    def get(self, text: str, src: str, tgt: str) -> str | None:
        whole = self._index.get((src, tgt, text_sha(text)))
        if whole is not None:
            return whole
        found: dict[str, str] = {}
        for line in split_lines(text):
            translation = self._index.get((src, tgt, text_sha(line)))
            if translation is None:
                return None
            found[line] = translation
        return join_lines(text, found) if found else None

"""Test-set decontamination: does a training text overlap a benchmark test item?

The check follows lm-evaluation-harness's decontamination (n-gram overlap with the test documents):

- text is normalised: Unicode NFKC, lowercase, every punctuation or symbol character replaced by a
  space;
- space-delimited text is compared by **word 8-grams**;
- Chinese and Japanese (and any text mostly in CJK characters) by **character 13-grams**, whitespace
  dropped. Inside such text a run of other letters or digits (a Latin name, a number) counts as one
  token, so that one long English word shared by two Chinese sentences ("massachusetts" is 13
  letters) is not a match;
- Thai (and any text mostly in Thai, Lao, Myanmar or Khmer letters) by **character 32-grams**. Thai
  letters are not CJK morphemes: a Thai word takes about four code points (vowel and tone marks are
  code points of their own), so 13 of them are one or two words. Measured on the shared data,
  13-grams flag 557 of the 701 SIB training sentences (on "scientist", "as soon as possible", ...),
  26-grams 10, 32-grams 2 (on "President of the United States George W. Bush");
- a text too short to hold one n-gram overlaps when it equals a whole normalised test sentence (of
  at least 3 words / 5 CJK / 12 Thai characters: "yes." is not evidence of contamination).

What counts as a test item, per language (`benchmark_groups`): the `prompt` and `answer` of every
`<data>/benchmarks/*/<lang>.jsonl` and the SIB-200 dev and test sentences of
`<data>/parallel/flores_sib/<lang>.jsonl`; the English index also holds every `prompt_en` and the
English SIB sentences. MGSM's few-shot exemplars are not test items and are not indexed.

Prompt templates are not test content: an n-gram (or short sentence) found in at least 10% of the
items of one file, and in at least 20 of them, is boilerplate ("If you have to choose one of these
options, your answer would be:") and is left out of the index, as is publisher boilerplate inside
XL-Sum articles ("click here for the BBC Hindi app"). Test content stays well below that: the most
shared passages (an XQuAD context: at most 17 of 1190 questions; an MMMLU moral-scenarios stem: 72
of 1000) sit in 1-7% of items.

Each `TestSetIndex` is built once per process and language (well under a second for most; the
English one reads every benchmark file and takes a few seconds) and keeps its n-grams as a sorted
int64 array (8 bytes each). Hashes are Python's own (stable within a process, which is all a
per-process cache needs): equal n-grams always match, and a hash collision can only flag a clean
text, never miss a contaminated one. Check many texts with `overlaps_many` / `texts_overlap`: one
vectorised look-up instead of one per text.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.data.base import Example, data_dir, iter_jsonl
from harness.plumbing.errors import HarnessError

N_WORDS = 8
N_CHARS = 13
N_THAI_CHARS = 32
BOILERPLATE_FRACTION = 0.10
BOILERPLATE_MIN_ITEMS = 20


@dataclass(frozen=True)
class Mode:
    """How one kind of text is compared: the n-gram size (in tokens), and the fewest tokens a test
    sentence needs to be matched whole when a training text is too short for one n-gram."""

    name: str
    n: int
    min_short: int


WORDS = Mode("words", N_WORDS, 3)
CJK = Mode("cjk", N_CHARS, 5)
THAI = Mode("thai", N_THAI_CHARS, 12)
LANGUAGE_MODES: dict[str, Mode] = {"zh": CJK, "ja": CJK, "th": THAI}  # the rest: by script

# Scripts written without spaces between words: CJK ideographs and kana; Thai, Lao, Myanmar, Khmer.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_THAI = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
_CJK_RE = re.compile(f"[{_CJK}]")
_THAI_RE = re.compile(f"[{_THAI}]")
_CONTINUOUS_RE = re.compile(f"[{_CJK}{_THAI}]")
_TOKEN_RE = re.compile(f"[{_CJK}{_THAI}]|[^\\s{_CJK}{_THAI}]+")
# Sentence ends: newlines; . ! ? ; and the Devanagari, Arabic and Urdu stops before whitespace or
# before a capital ("a stroke.When I got home": XStoryCloze joins sentences so); the full-width
# stops anywhere (CJK puts no space after them). The stop itself is consumed: punctuation is dropped
# by `normalize` anyway.
_SENTENCE_END_RE = re.compile(r"[.!?;।॥؟۔](?:\s|(?=[A-ZА-ЯΑ-Ω]))|[。！？；\n]")

K = TypeVar("K")


@functools.cache
def _punct_table() -> dict[int, str]:
    """Every punctuation (P*) and symbol (S*) code point -> a space."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] in "PS"}


def normalize(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols replaced by spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_punct_table())
    return " ".join(text.split())


def tokens(normalized: str) -> list[str]:
    """Words of a normalised text; each CJK / Thai-family character is a token of its own."""
    if _CONTINUOUS_RE.search(normalized):
        return _TOKEN_RE.findall(normalized)
    return normalized.split()


def _script_counts(normalized: str) -> tuple[int, int, int]:
    """(non-space characters, CJK characters, Thai-family characters)."""
    chars = len(normalized) - normalized.count(" ")
    if not _CONTINUOUS_RE.search(normalized):
        return chars, 0, 0
    return chars, len(_CJK_RE.findall(normalized)), len(_THAI_RE.findall(normalized))


def _mode_from_counts(lang: str | None, chars: int, cjk: int, thai: int) -> Mode:
    if lang in LANGUAGE_MODES:
        return LANGUAGE_MODES[lang]
    if (cjk + thai) * 2 <= chars:
        return WORDS
    return CJK if cjk >= thai else THAI


def mode_of(normalized: str, lang: str | None = None) -> Mode:
    """CJK for zh/ja, Thai for th; otherwise the script of most of the (non-space) characters decides."""
    return _mode_from_counts(lang, *_script_counts(normalized))


def _ngram_hashes(toks: Sequence[str], n: int) -> Iterable[int]:
    return map(hash, zip(*[toks[i:] for i in range(n)], strict=False))


def _short_key(toks: Sequence[str]) -> str:
    return " ".join(toks)


@dataclass(frozen=True)
class TextGroup:
    """Test texts from one source (one field of one file). Boilerplate is judged within a group;
    `sentences=False` indexes n-grams only (used for answers: a short gold answer such as a name is
    not a test item by itself)."""

    name: str
    texts: tuple[str, ...]
    sentences: bool = True


@dataclass(frozen=True)
class _Sentence:
    tokens: list[str]
    short_key: str | None  # set when the sentence is short enough to be matched whole
    chars: int  # non-space characters, and how many of them are CJK / Thai-family
    cjk: int
    thai: int


class TestSetIndex:
    """The n-grams and short sentences of one language's test items; `overlaps(text)` checks a text.

    Build it with `TestSetIndex.for_language(lang)` (cached per process and data folder), or from your
    own `TextGroup`s.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, lang: str, groups: Iterable[TextGroup]) -> None:
        self.lang = lang
        self.sources: list[str] = []
        self.boilerplate = 0  # n-grams and sentences left out as template text
        grams: set[int] = set()
        shorts: set[str] = set()
        sizes: set[int] = set()
        seen: set[tuple[str, ...]] = set()
        for group in groups:
            if group.texts in seen:  # e.g. the same English prompts behind every language's file
                continue
            seen.add(group.texts)
            self.sources.append(group.name)
            gram_counts: Counter[int] = Counter()
            short_counts: Counter[str] = Counter()
            sentence_cache: dict[str, _Sentence] = {}  # template lines and shared contexts recur
            for text in group.texts:
                pieces = _SENTENCE_END_RE.split(text) if group.sentences else [text]
                sentences = [self._sentence(p, sentence_cache) for p in pieces]
                n = self._mode(sentences).n
                sizes.add(n)
                gram_counts.update(set(_ngram_hashes([t for s in sentences for t in s.tokens], n)))
                if group.sentences:
                    short_counts.update({s.short_key for s in sentences if s.short_key is not None})
            limit = max(BOILERPLATE_MIN_ITEMS, BOILERPLATE_FRACTION * len(group.texts))
            grams.update(self._below(gram_counts, limit))
            shorts.update(self._below(short_counts, limit))
        self._grams = np.fromiter(grams, dtype=np.int64, count=len(grams))
        self._grams.sort()
        self._shorts = frozenset(shorts)
        self._sizes = tuple(sorted(sizes))  # the n-gram sizes present: a query needs only these

    def _sentence(self, raw: str, cache: dict[str, _Sentence]) -> _Sentence:
        found = cache.get(raw)
        if found is None:
            normalized = normalize(raw)
            toks = tokens(normalized)
            counts = _script_counts(normalized)
            mode = _mode_from_counts(self.lang, *counts)
            short_key = _short_key(toks) if mode.min_short <= len(toks) < mode.n else None
            found = cache[raw] = _Sentence(toks, short_key, *counts)
        return found

    def _mode(self, sentences: list[_Sentence]) -> Mode:
        """The mode of a whole text (`mode_of`, from its sentences' character counts)."""
        return _mode_from_counts(
            self.lang,
            sum(s.chars for s in sentences),
            sum(s.cjk for s in sentences),
            sum(s.thai for s in sentences),
        )

    def _below(self, counts: Counter[K], limit: float) -> list[K]:
        """The keys seen in fewer than `limit` items; the rest is counted as boilerplate."""
        kept = [key for key, count in counts.items() if count < limit]
        self.boilerplate += len(counts) - len(kept)
        return kept

    @classmethod
    def for_language(cls, lang: str, data: Path | None = None) -> TestSetIndex:
        """The index of every test item in `lang` (cached per process and data folder)."""
        root = (data or data_dir()).resolve()
        key = (str(root), lang)
        if key not in _CACHE:
            _CACHE[key] = cls(lang, benchmark_groups(lang, root))
        return _CACHE[key]

    def __len__(self) -> int:
        return len(self._grams)

    def overlaps(self, text: str) -> bool:
        """True if `text` shares an n-gram with a test item, or (when too short for one) equals a test
        sentence. Every n-gram size of the index is tried, so a test sentence embedded in text of
        another script (a Chinese test sentence quoted in an English instruction) is still found."""
        return self.overlaps_many([text])[0]

    def overlaps_many(self, texts: Sequence[str]) -> list[bool]:
        """`overlaps` for many texts at once (vectorised look-ups: much faster than one by one)."""
        return self._overlaps_tokens([tokens(normalize(text)) for text in texts])

    def _overlaps_tokens(self, token_lists: Sequence[list[str]], chunk: int = 2000) -> list[bool]:
        hits = [False] * len(token_lists)
        for start in range(0, len(token_lists), chunk):
            hashes: list[int] = []
            counts: list[int] = []
            for i in range(start, min(start + chunk, len(token_lists))):
                toks = token_lists[i]
                if len(toks) < N_THAI_CHARS and _short_key(toks) in self._shorts:
                    hits[i] = True
                before = len(hashes)
                for n in self._sizes:
                    hashes.extend(_ngram_hashes(toks, n))
                counts.append(len(hashes) - before)
            if not hashes or not len(self._grams):
                continue
            query = np.array(hashes, dtype=np.int64)
            order = np.argsort(query)  # sorted keys: searchsorted walks the index in one direction
            query = query[order]
            pos = np.searchsorted(self._grams, query).clip(max=len(self._grams) - 1)
            owners = np.repeat(np.arange(start, start + len(counts)), counts)[order]
            for i in np.unique(owners[self._grams[pos] == query]).tolist():
                hits[i] = True
        return hits


_CACHE: dict[tuple[str, str], TestSetIndex] = {}


def _field(row: dict[str, Any], key: str, path: Path, lineno: int) -> object:
    if key not in row:
        raise HarnessError(f"{path}:{lineno}: missing field '{key}'")
    return row[key]


def _answers(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def benchmark_groups(lang: str, data: Path | None = None) -> list[TextGroup]:
    """Every test text in `lang`, grouped by file and field (see the module docstring for what is in)."""
    root = data or data_dir()
    bench = root / "benchmarks"
    files = sorted(bench.glob("*/*.jsonl"))
    if not files:
        raise HarnessError(f"{bench}: no benchmark files (*/<lang>.jsonl); is the data folder right?")
    groups: list[TextGroup] = []
    for path in files:
        file_lang = path.stem
        if file_lang != lang and lang != "en":
            continue
        prompts, prompts_en, answers = [], [], []
        for lineno, row in iter_jsonl(path):
            prompts.append(str(_field(row, "prompt", path, lineno)))
            answers.extend(_answers(row.get("answer")))
            if lang == "en" and row.get("prompt_en"):
                prompts_en.append(str(row["prompt_en"]))
        name = f"{path.parent.name}/{path.name}"
        if file_lang == lang:
            groups.append(TextGroup(f"{name}:prompt", tuple(prompts)))
            groups.append(TextGroup(f"{name}:answer", tuple(answers), sentences=False))
        if lang == "en":
            groups.append(TextGroup(f"{name}:prompt_en", tuple(prompts_en)))
    sib_files = sorted((root / "parallel" / "flores_sib").glob("*.jsonl"))
    for path in sib_files:
        if path.stem != lang and lang != "en":
            continue
        held_out = [(lineno, row) for lineno, row in iter_jsonl(path) if row.get("split") in ("dev", "test")]
        field = "text" if path.stem == lang else "text_en"
        texts = tuple(str(_field(row, field, path, lineno)) for lineno, row in held_out)
        groups.append(TextGroup(f"flores_sib/{path.name}:dev+test:{field}", texts))
    return groups


def texts_overlap(texts: Sequence[str], lang: str, data: Path | None = None) -> list[bool]:
    """For each text written in `lang`: does it overlap a test item of its language or of English?

    English is always checked too: native text quotes English (names, titles, untranslated lines).
    Answers are remembered per process, so the English sentences that every language of a parallel
    corpus shares are checked once."""
    memo = _MEMO.setdefault((str((data or data_dir()).resolve()), lang), {})
    todo = list(dict.fromkeys(t for t in texts if t not in memo))
    fresh: dict[str, bool] = {}
    if todo:
        token_lists = [tokens(normalize(text)) for text in todo]
        hits = [False] * len(todo)
        for index_lang in dict.fromkeys((lang, "en")):
            index = TestSetIndex.for_language(index_lang, data)
            hits = [a or b for a, b in zip(hits, index._overlaps_tokens(token_lists), strict=True)]
        fresh = dict(zip(todo, hits, strict=True))
        if len(memo) < _MEMO_LIMIT:
            memo.update(fresh)
    return [fresh[t] if t in fresh else memo[t] for t in texts]


_MEMO: dict[tuple[str, str], dict[str, bool]] = {}
_MEMO_LIMIT = 500_000


def text_overlaps(text: str, lang: str, data: Path | None = None) -> bool:
    """`texts_overlap` for one text."""
    return texts_overlap([text], lang, data)[0]


def contamination_report(examples: Iterable[Example], data: Path | None = None) -> dict[str, int]:
    """Per language, how many examples overlap a benchmark test item (0 for clean languages): their
    instruction or output (checked against their language and English) or their English instruction."""
    by_lang: dict[str, list[Example]] = {}
    for example in examples:
        by_lang.setdefault(example.lang, []).append(example)
    report: dict[str, int] = {}
    for lang, group in by_lang.items():
        native = texts_overlap([t for ex in group for t in (ex.instruction, ex.output)], lang, data)
        english = texts_overlap([ex.instruction_en or "" for ex in group], "en", data)
        report[lang] = sum(native[2 * i] or native[2 * i + 1] or english[i] for i in range(len(group)))
    return report

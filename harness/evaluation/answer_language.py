"""The language each generated answer is written in (the `gen` protocol's outputs), for the report's
"Answer language" section (`harness.reports.answer_language`); docs/answer-language.md says how it is
measured and how accurate it is.

Each output is one of:
- `LABEL` ("label/number"): nothing but option labels ("2", "(B)"), numbers, SIB-200 topic labels
  ("Science/Technology") and punctuation. Such an answer has no language (SIB-200's labels are English
  words, but a model that answers `travel` in a Swahili cell has not switched to English);
- a language code of `LANGUAGES`: what lingua (`lingua-language-detector`, its models ship in the wheel)
  detects in what is left once the labels and numbers are taken out, restricted to the 22 languages of
  the benchmarks, when its confidence is at least `MIN_CONFIDENCE`;
- `UNKNOWN`: an empty output (or only punctuation), or a detection below `MIN_CONFIDENCE` (one word, a name,
  mixed text).

`UNRELIABLE` lists the languages the detector does not recognise well enough on the parallel sentences
(`bench/bench_langid.py` measures it); the report shows "unreliable" instead of the language shares of
cells in those languages.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.data.base import LANGUAGES
from harness.plumbing.errors import HarnessError
from harness.tasks.extraction import TOPIC_ALIASES, fold
from harness.tasks.utils import OPTION_LABELS

try:  # a dependency (pyproject.toml); an environment made before it was added may lack it
    import lingua
except ImportError:  # pragma: no cover - depends on the environment
    lingua = None

LABEL = "label/number"
UNKNOWN = "unknown"
# Below this confidence (lingua's, relative over the 22 languages) an output's language is UNKNOWN.
MIN_CONFIDENCE = 0.5
# A language is reliable when the detector names it for at least RELIABLE_ACCURACY of its parallel sentences
# and names at most MAX_CONFUSION of short fragments of them as another language, in each corpus.
RELIABLE_ACCURACY = 0.9
MAX_CONFUSION = 0.05
# The languages that fail that test, as measured by `bench/bench_langid.py` (docs/answer-language.md): none
# of the 22 with lingua 2.1 restricted to them at MIN_CONFIDENCE 0.5.
UNRELIABLE: frozenset[str] = frozenset()
INSTALL_HINT = "the answer language needs lingua: pip install lingua-language-detector"

# The topic labels of SIB-200 as word prefixes ("sport" also takes "sports"), and numbers in any notation
# (digits are folded to ASCII first: "٣" -> "3").
_TOPIC = re.compile(
    r"(?<![^\W\d_])(?:" + "|".join(re.escape(p) for ps in TOPIC_ALIASES.values() for p in ps) + r")[^\W\d_]*",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")


@functools.cache
def _option_label(benchmark: str) -> re.Pattern[str] | None:
    """Option labels standing alone ("(2)", "B." but not the "B" of "Bob"); letters uppercase only, since
    a lowercase "a" is the English article."""
    labels = [x for x in OPTION_LABELS.get(benchmark, ()) if len(x) == 1]
    if not labels:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(map(re.escape, labels)) + r")(?![^\W_])")


def strip_labels(benchmark: str, output: str) -> tuple[str, bool]:
    """The output without its option labels, topic labels (SIB-200) and numbers, and whether any was
    there. The language is read from what is left."""
    text = fold(output)
    found = False
    patterns = [_TOPIC] if benchmark == "sib200" else []
    if (option := _option_label(benchmark)) is not None:
        patterns.append(option)
    for pattern in [*patterns, _NUMBER]:
        text, count = pattern.subn(" ", text)
        found = found or count > 0
    rest = text.strip()
    labels = OPTION_LABELS.get(benchmark, ())
    if rest.strip(" .:)(") in {x.lower() for x in labels if len(x) == 1}:  # a lone lowercase "b"
        return "", True
    return rest, found


def has_letters(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "L" for ch in text)


@dataclass(frozen=True)
class Detection:
    lang: str  # a code of LANGUAGES, or UNKNOWN
    confidence: float


class LanguageIdentifier:
    """lingua restricted to `langs`; a detection below `min_confidence` is UNKNOWN. The models of a
    script load on first use (about 1-3 s); `identify` runs over both cores."""

    def __init__(self, langs: Sequence[str] = LANGUAGES, min_confidence: float = MIN_CONFIDENCE) -> None:
        if lingua is None:
            raise HarnessError(INSTALL_HINT)
        self.min_confidence = min_confidence
        by_code = {lang.iso_code_639_1.name.lower(): lang for lang in lingua.Language.all()}
        missing = [code for code in langs if code not in by_code]
        if missing:
            raise HarnessError(f"lingua has no model for {', '.join(missing)}")
        self.languages = [by_code[code] for code in langs]
        self._detector = lingua.LanguageDetectorBuilder.from_languages(*self.languages).build()

    def identify(self, texts: Sequence[str]) -> list[Detection]:
        # NFC first: lingua misses text with decomposed diacritics (NTREX's Yoruba: 69 % found, 98 % in NFC)
        normalized = [unicodedata.normalize("NFC", t) for t in texts]
        results = self._detector.compute_language_confidence_values_in_parallel(normalized)
        out = []
        for values in results:
            top = values[0] if values else None
            if top is None or top.value < self.min_confidence:
                out.append(Detection(UNKNOWN, 0.0 if top is None else top.value))
            else:
                out.append(Detection(top.language.iso_code_639_1.name.lower(), top.value))
        return out


@functools.cache
def default_identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


def classify_outputs(
    benchmark: str, outputs: Iterable[str], identifier: LanguageIdentifier | None = None
) -> list[str]:
    """Per output: LABEL, a language code or UNKNOWN (see the module's docstring). Each distinct text is
    detected once (a collapsed model repeats itself)."""
    residues = [strip_labels(benchmark, str(o or "")) for o in outputs]
    todo = sorted({rest for rest, _ in residues if has_letters(rest)})
    found: dict[str, str] = {}
    if todo:
        detections = (identifier or default_identifier()).identify(todo)
        found = {text: d.lang for text, d in zip(todo, detections, strict=True)}
    return [found[rest] if has_letters(rest) else LABEL if label else UNKNOWN for rest, label in residues]


# The categories of a cell's outputs, in the order of the report's bars.
CATEGORIES = ("prompt", "en", "other", LABEL, UNKNOWN)


def category(code: str, lang: str) -> str:
    """An output's category in a cell of language `lang`: written in the prompt's language, in English
    (in an English cell that is the prompt's language), in another language, label/number, unknown."""
    if code in (LABEL, UNKNOWN):
        return code
    if code == lang:
        return "prompt"
    return "en" if code == "en" else "other"

"""Reading an answer out of free model text, for the `_gen` protocol's metrics (`harness.tasks.utils`): text
folding (NFKC, native digits to ASCII, the scripts written without spaces), the chosen option label of
a multiple-choice item (`extract_option`), the SIB-200 topic (`extract_topic`), the final number of an
MGSM answer (`extract_number`, `same_number`) and a gold span in a QA answer (`find_gold`). Standard
library only; `tasks/utils.py` imports it as `harness.tasks.extraction`, through its sys.path fallback when
lm-eval loads that file by path.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

# --------------------------------------------------------------------------- text folding

# Scripts written without spaces: each character is a token for ROUGE, and no word boundary is
# required around a match. (Hangul is written with spaces and is not listed.)
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extension
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def is_no_space_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES)


def is_wordy(ch: str) -> bool:
    """A letter, mark or number (unlike `\\w`, this keeps Indic vowel signs inside words)."""
    return unicodedata.category(ch)[0] in "LMN"


def _ascii_digit(ch: str) -> str:
    digit = None if ch.isascii() else unicodedata.decimal(ch, None)
    return ch if digit is None else str(digit)


def ascii_digits(text: str) -> str:
    """Native decimal digits (Arabic-Indic, Devanagari, Bengali, Thai, full-width...) -> 0-9."""
    return "".join(map(_ascii_digit, text))


def fold(text: str) -> str:
    """NFKC (full-width forms, circled digits -> ASCII), ASCII digits, no format characters."""
    text = ascii_digits(unicodedata.normalize("NFKC", text))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # ZWJ, ZWNJ, soft hyphen
    return text.replace("\u2212", "-")  # the minus sign


def normalize_answer(text: str) -> str:
    """Case, punctuation and whitespace folded away, for the span-containment test.

    Punctuation becomes a space, whitespace is collapsed, and spaces next to a character of a
    no-space script are dropped (so "卡万·肖特" matches "卡万肖特").
    """
    text = fold(text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PZ" or ch.isspace() else ch for ch in text)
    text = " ".join(text.split())  # no space at either end: text[i - 1] and text[i + 1] exist
    return "".join(
        ch for i, ch in enumerate(text)
        if ch != " " or not (is_no_space_char(text[i - 1]) or is_no_space_char(text[i + 1]))
    )  # fmt: skip


# --------------------------------------------------------------------------- option labels


# Latin letters and digits: a letter label may not touch them ("Bob", "B12"); other scripts may.
_LATIN = r"A-Za-z0-9_\u00C0-\u024F\u0300-\u036F\u1E00-\u1EFF"


def _label_alternation(labels: Sequence[str], ignore_case: bool) -> str:
    """Regex matching a label as a token: a digit not inside a longer number, or a letter not
    inside a Latin word (it may touch other scripts: "答案是B", "답은 B입니다")."""
    digits = [re.escape(x) for x in labels if x.isdigit()]
    letters = [re.escape(x) for x in labels if not x.isdigit()]
    if ignore_case:
        letters += [x.lower() for x in letters]
    parts = []
    if digits:
        parts.append(rf"(?<![0-9])(?<![0-9][.,])(?:{'|'.join(digits)})(?![0-9])(?![.,][0-9])")
    if letters:
        parts.append(rf"(?<![{_LATIN}])(?:{'|'.join(letters)})(?![{_LATIN}])(?!['’-][A-Za-z])")
    return "|".join(parts)


@functools.lru_cache(maxsize=32)
def _marked_label_regex(labels: tuple[str, ...]) -> re.Pattern[str]:
    """A label marked as such: "(B)", "[2]", "B)", "2." / "B:" at a line start, "Answer: 2",
    "answer is B"."""
    alt = _label_alternation(labels, ignore_case=True)
    return re.compile(
        rf"[(\[【]\s*(?P<bracket>{alt})\s*[)\]】]"
        rf"|(?P<paren>{alt})\)"
        rf"|^[\s*#>-]*(?P<start>{alt})(?=[)\].:*]|\s|$)"
        rf"|(?::|\b(?:is|be|answer|option|choice)\b)\s*[*\"'«“]*\s*(?P<cue>{alt})",
        re.MULTILINE | re.IGNORECASE,
    )


@functools.lru_cache(maxsize=32)
def _bare_label_regex(labels: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(_label_alternation(labels, ignore_case=False))


def _is_article(label: str, text: str, end: int) -> bool:
    """ "A" before a lowercase word, or "a" before any word, is the article (or the Spanish /
    Portuguese preposition), not option A."""
    if label.upper() != "A":
        return False
    rest = text[end:].lstrip()
    if len(rest) == len(text) - end:  # no space follows
        return False
    return rest[:1].isalpha() if label == "a" else rest[:1].islower()


Mention = tuple[int, str]  # (position in the folded output, label)


def _marked_labels(text: str, labels: tuple[str, ...]) -> list[Mention]:
    found = []
    for m in _marked_label_regex(labels).finditer(text):
        group = m.lastgroup or ""
        label = m.group(group)
        if group in ("start", "cue") and _is_article(label, text, m.end(group)):
            continue
        found.append((m.start(group), label.upper()))
    return found


def _bare_labels(text: str, labels: tuple[str, ...]) -> list[Mention]:
    """Uppercase letters / digits standing alone anywhere (the weakest evidence)."""
    matches = _bare_label_regex(labels).finditer(text)
    return [(m.start(), m.group()) for m in matches if not _is_article(m.group(), text, m.end())]


def _text_span(text: str, needle: str) -> tuple[int, int] | None:
    """First occurrence of an option text as a token, ignoring case and spacing: not inside a longer
    number or word (a single word of >= 4 letters may take a suffix: "entail" finds "entailment").
    Next to a character of a no-space script no boundary is needed. One or two letters of a spaced
    script ("i", "no") count only as the whole output, never as the pronoun "I"."""
    if len(needle) < 3 and needle.isalpha() and not is_no_space_char(needle[0]):
        whole = text.strip(" \n.。!?")
        return (text.index(whole), len(text)) if whole.casefold() == needle.casefold() else None
    takes_suffix = " " not in needle and len(needle) >= 4 and needle[-1].isalpha()
    pattern = r"\s+".join(map(re.escape, needle.split()))
    for m in re.finditer(pattern, text, re.IGNORECASE):
        start, end = m.span()
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if is_wordy(before) and not (is_no_space_char(before) or is_no_space_char(needle[0])):
            continue
        if needle[-1].isdigit():
            if after.isdigit() or re.match(r"[.,][0-9]", text[end : end + 2]):
                continue
        elif is_wordy(after) and not (
            takes_suffix or is_no_space_char(after) or is_no_space_char(needle[-1])
        ):
            continue
        return start, end
    return None


def _option_spans(text: str, options: Mapping[str, Sequence[str]]) -> list[tuple[int, int, str]]:
    """(start, end, label) of each option whose text the folded output contains, except a match
    inside a longer match of another option ("-i" is not also option "i")."""
    spans = []
    for label, texts in options.items():
        for option_text in texts:
            needle = " ".join(fold(option_text).split()).strip(" .。!?,;:")
            if needle and (span := _text_span(text, needle)):
                spans.append((*span, label))

    def inside_another(s: tuple[int, int, str]) -> bool:
        return any(
            o[2] != s[2] and o[0] <= s[0] and s[1] <= o[1] and o[1] - o[0] > s[1] - s[0] for o in spans
        )

    return [s for s in spans if not inside_another(s)]


def _first_unless_echo(mentions: list[Mention], n_options: int) -> str:
    """The earliest mentioned label; "" when none, or when every option is named (an echo)."""
    if not mentions or len({label for _, label in mentions}) == n_options > 1:
        return ""
    return min(mentions)[1]


def extract_option(
    output: str, labels: Sequence[str], options: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The chosen option label ("2", "B"), or "".

    Evidence, strongest first: a marked label ("(2)", "B)", "Answer: 2"); the text of an option
    (`options`: label -> texts, e.g. from `doc_options`); a bare label. Labels inside a copied option
    text do not count ("(S ⊃ C)" is not option C). Within one kind the earliest mention wins, and an
    output naming every option (an echo of the list) gives "".
    """
    labels, text = tuple(labels), fold(output)
    spans = _option_spans(text, options or {})

    def outside_spans(mentions: list[Mention]) -> list[Mention]:
        return [(pos, label) for pos, label in mentions if not any(s <= pos < e for s, e, _ in spans)]

    marked = outside_spans(_marked_labels(text, labels))
    if marked:
        return _first_unless_echo(marked, len(labels))
    if spans:
        if len({label for _, _, label in spans}) == len(labels) > 1:  # every option's text: an echo
            return ""
        return min(spans, key=lambda s: (s[0], s[0] - s[1]))[2]  # earliest, then longest
    return _first_unless_echo(outside_spans(_bare_labels(text, labels)), len(labels))


# --------------------------------------------------------------------------- SIB-200 topics

# Word prefixes that name a topic ("sport" also finds "sports", "sporting").
TOPIC_ALIASES: dict[str, tuple[str, ...]] = {
    "science/technology": ("science/technology", "scien", "tech"),
    "travel": ("travel",),
    "politics": ("politic",),
    "sports": ("sport",),
    "health": ("health",),
    "entertainment": ("entertain",),
    "geography": ("geograph",),
}


def extract_topic(output: str) -> str:
    """The SIB-200 topic label named in the output ("Sports." -> "sports"), or ""."""
    text = fold(output).casefold()
    cue = text.rfind("topic:")
    if cue >= 0 and text[cue + 6 :].strip():
        text = text[cue + 6 :]  # an echo of the prompt followed by "Topic: sports"
    hits = []  # (position, -length, topic)
    for topic, prefixes in TOPIC_ALIASES.items():
        for prefix in prefixes:
            if m := re.search(rf"(?<![^\W\d_]){re.escape(prefix)}", text):
                hits.append((m.start(), -len(prefix), topic))
    if not hits or len({h[2] for h in hits}) == len(TOPIC_ALIASES):
        return ""
    return min(hits)[2]


# --------------------------------------------------------------------------- MGSM numbers

_SPACES = " \u00a0\u202f\u2009"  # thousands separators of fr / ru style numbers ("5 600")
_NUMBER = re.compile(
    r"(?:(?<![\w-])-)?"  # a sign, but not the hyphen of "3-5"
    r"(?<![0-9.,])(?:"
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![0-9])"  # 1,234.5
    r"|\d{1,3}(?:\.\d{3})+(?:,\d+)?(?![0-9])"  # 1.234,5
    rf"|\d{{1,3}}(?:[{_SPACES}]\d{{3}})+(?:[.,]\d+)?(?![0-9])"  # 1 234,5
    r"|\d+(?:[.,]\d+)?"  # 1234 / 3.5 / 3,5
    r")"
)


def _to_decimal(token: str) -> Decimal | None:
    """A number token in any of the usual notations: "1,234.5", "1.234,5", "5 600", "3,5", "18.0".

    A single separator followed by exactly three digits groups thousands ("5.600" = 5600), except
    after a lone 0 ("0.125")."""
    sign, digits = ("-", token[1:]) if token.startswith("-") else ("", token)
    for ch in _SPACES:
        digits = digits.replace(ch, "")
    if "," in digits and "." in digits:  # the later one is the decimal mark
        thousands, decimal = (",", ".") if digits.rfind(",") < digits.rfind(".") else (".", ",")
        digits = digits.replace(thousands, "").replace(decimal, ".")
    elif "," in digits or "." in digits:
        sep = "," if "," in digits else "."
        whole, _, frac = digits.rpartition(sep)
        if digits.count(sep) > 1 or (len(frac) == 3 and whole != "0"):
            digits = digits.replace(sep, "")
        else:
            digits = f"{whole}.{frac}"
    try:
        return Decimal(sign + digits)
    except InvalidOperation:
        return None


def _canonical(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(output: str) -> str:
    """The final number of the output in canonical form ("1,234.0" -> "1234", "٣" -> "3"), or "".

    Only digits are folded (not NFKC, which would turn "6½" into "61⁄2")."""
    text = ascii_digits(output).replace("\u2212", "-")
    for token in reversed(_NUMBER.findall(text)):
        value = _to_decimal(token)
        if value is not None:
            return _canonical(value)
    return ""


def same_number(extracted: str, gold: str) -> bool:
    if not extracted:
        return False
    a, b = _to_decimal(extracted), _to_decimal(ascii_digits(gold.strip()))
    return a is not None and b is not None and a == b


# --------------------------------------------------------------------------- spans (xquad, mkqa)


def find_gold(output: str, golds: Sequence[str]) -> str:
    """The first gold answer contained in the output after `normalize_answer`, or "".

    A gold "3.0" (MKQA stores numbers as floats) is also found as "3"."""
    haystack = normalize_answer(output)
    for gold in golds:
        variants = [gold]
        if m := re.fullmatch(r"(-?\d+)\.0+", gold.strip()):
            variants.append(m.group(1))
        for variant in variants:
            needle = normalize_answer(variant)
            if needle and needle in haystack:
                return gold
    return ""

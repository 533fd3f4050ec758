"""lm-eval hooks of our tasks (`!function utils.fn` in the YAMLs), answer extraction and metrics.

The `_gen` protocol (the CC-Tuning paper's) reads the answer from at most 40 greedy tokens of free
text, so extraction has to survive what small models really write: "(2) Neutral", "Answer: B",
"答案是Ｂ", "उत्तर: २", the option's text instead of its number, an echo of the whole option list.
`extract_answer` and `score` are also called by the run store to write per-item samples. This module
holds the hooks, the per-benchmark dispatch, the option texts of an item's prompt and ROUGE-L; the
readers of answers from free text (options, topics, numbers, spans) are in `harness.tasks.extraction`.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if importlib.util.find_spec("harness") is None:  # lm-eval loads this file by path: add the project's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.prompts import SIB_TOPICS  # noqa: E402
from harness.tasks.catalog import BENCHMARKS, load_items  # noqa: E402
from harness.tasks.extraction import (  # noqa: E402
    extract_number,
    extract_option,
    extract_topic,
    find_gold,
    fold,
    is_no_space_char,
    is_wordy,
    same_number,
)

if TYPE_CHECKING:
    import datasets

OPTION_LABELS: dict[str, tuple[str, ...]] = {
    "xnli": ("1", "2", "3"),
    "xstorycloze": ("1", "2"),
    "mmmlu": ("A", "B", "C", "D"),
    "sib200": SIB_TOPICS,
}


# --------------------------------------------------------------------------- lm-eval hooks


def load_test_set(benchmark: str, lang: str, **_: Any) -> datasets.DatasetDict:
    """`custom_dataset` of every task: called by lm-eval as `fn(**metadata, **dataset_kwargs)`.

    Each row gets `benchmark` and `lang` columns so that the shared hooks below know their task.
    """
    import datasets

    rows = [{**item, "benchmark": benchmark, "lang": lang} for item in load_items(benchmark, lang)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def mc_choices(doc: Mapping[str, Any]) -> list[str]:
    return list(OPTION_LABELS[doc["benchmark"]])


def mc_target(doc: Mapping[str, Any]) -> int:
    return OPTION_LABELS[doc["benchmark"]].index(doc["answer"])


def process_results_gen(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    benchmark = doc["benchmark"]
    return {BENCHMARKS[benchmark].metrics["gen"]: score(benchmark, doc, results[0])}


# --------------------------------------------------------------------------- dispatch


def extract_answer(benchmark: str, doc: Mapping[str, Any], output: str) -> str:
    """The answer read from a generated `output`, as a string ("" when none is found).

    For xquad / mkqa this is the gold answer found in the output; for xlsum the whole output.
    """
    if benchmark in ("xnli", "xstorycloze", "mmmlu"):
        labels = OPTION_LABELS[benchmark]
        return extract_option(output, labels, doc_options(doc, labels))
    if benchmark == "sib200":
        return extract_topic(output)
    if benchmark == "mgsm":
        return extract_number(output)
    if benchmark in ("xquad", "mkqa"):
        return find_gold(output, gold_answers(doc))
    if benchmark == "xlsum":
        return " ".join(output.split())
    raise KeyError(f"unknown benchmark {benchmark!r}")


def score(benchmark: str, doc: Mapping[str, Any], output: str) -> float:
    """The `_gen` metric of one item: 0/1 accuracy, or ROUGE-L F1 for xlsum."""
    if benchmark == "xlsum":
        return rouge_l(output, doc["answer"])
    answer = extract_answer(benchmark, doc, output)
    if benchmark in ("xquad", "mkqa"):
        return float(answer != "")
    if benchmark == "mgsm":
        return float(same_number(answer, doc["answer"]))
    return float(answer == doc["answer"])


def gold_answers(doc: Mapping[str, Any]) -> list[str]:
    answer = doc["answer"]
    return [answer] if isinstance(answer, str) else list(answer)


# --------------------------------------------------------------------------- options


_OPTION_LINE = re.compile(r"^[ \t]*[(（]\s*([0-9A-Za-z])\s*[)）][ \t]*(.+?)\s*$", re.MULTILINE)


def parse_options(prompt: str, labels: Sequence[str]) -> dict[str, str]:
    """Option texts from lines like "(1) text" / "(A) text"; the last block wins (a question may
    itself contain "(1) ..." lines)."""
    options = {}
    for label, text in _OPTION_LINE.findall(prompt):
        if label in labels:
            options[label] = text
    return options


def doc_options(doc: Mapping[str, Any], labels: Sequence[str]) -> dict[str, list[str]]:
    """Option texts of an item in its language and in English (models often answer in English)."""
    options: dict[str, list[str]] = {label: [] for label in labels}
    for key in ("prompt", "prompt_en"):
        for label, text in parse_options(doc.get(key) or "", labels).items():
            options[label].append(text)
    return options


# --------------------------------------------------------------------------- ROUGE-L


def rouge_tokens(text: str) -> list[str]:
    """Lowercased words (letters, marks and digits); every character of a no-space script (CJK,
    kana, Thai, Lao, Khmer, Myanmar) is a token of its own."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in fold(text).lower():
        if is_wordy(ch) and not is_no_space_char(ch):
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if is_wordy(ch):
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return tokens


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (LCS over `rouge_tokens`)."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)

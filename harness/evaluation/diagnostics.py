"""What a reader needs to judge one evaluated cell (run x task): the reference baselines and how the
model's answers are distributed.

A score alone can mislead. A fine-tuned model that answers `travel` for every Hindi item scores the
share of `travel` among the gold labels, and two such models that settled on different labels differ
by a "significant" margin that says nothing about either. So every classification cell carries:

- **chance** (1 / number of options) and the **majority baseline** (the share of the most frequent gold
  label among exactly the items evaluated: with `--limit 40` the first 40 items' labels, not the whole
  set's), so a score can be read against what a model that ignores its input would get;
- the **answer distribution**: the share of the most frequent predicted answer (`top_share`), the
  normalised entropy of the predicted answers (`entropy`: 0 = always the same answer, 1 = every option
  equally often), and for the generation protocol the share of outputs from which no answer could be
  read (`no_answer`: an extraction failure is a different failure from a wrong answer).

Flags:
- **collapsed** when one answer is given for at least `COLLAPSE_SHARE` (80 %) of the items. The rule is
  the top share rather than an entropy threshold because it means the same for 2, 3, 4 or 7 options (a
  normalised entropy of 0.5 is a 90/10 split of a binary task but three of seven topics used evenly)
  and because it bounds what the cell can say: a model that answers one label for 80 % of the items
  has at most 20 % of them to show that it read the input. No benchmark here has a gold label that
  common (SIB-200's most frequent topic is 25 % of the test set, XNLI's a third, XStoryCloze's half).
- **no answer** when no answer could be read from at least `NO_ANSWER_SHARE` (20 %) of the outputs.

`MGSM` cells get the answer distribution and the no-answer share too (a model that always writes the
same number is as uninformative); span-extraction and ROUGE tasks get none, since their "answer" is
the gold span found or the whole text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from harness.tasks.utils import OPTION_LABELS

COLLAPSE_SHARE = 0.8
NO_ANSWER_SHARE = 0.2

# Benchmarks whose answer is one of a fixed set of options (`OPTION_LABELS`), in both protocols.
CLASSIFICATION = tuple(OPTION_LABELS)
# Benchmarks with an open answer that is still one value per item (the final number).
OPEN_ANSWER = ("mgsm",)


def has_answers(benchmark: str) -> bool:
    """Whether a benchmark's cells get an answer distribution (classification and final-number tasks)."""
    return benchmark in CLASSIFICATION or benchmark in OPEN_ANSWER


@dataclass(frozen=True)
class Baselines:
    """Reference scores (fractions) of one cell's evaluated items."""

    chance: float  # 1 / number of options
    majority: float  # share of the most frequent gold label
    majority_label: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnswerStats:
    """How one cell's predicted answers are distributed (fractions of `n` items)."""

    n: int
    top_answer: str
    top_share: float
    entropy: float  # normalised: entropy of the readable answers / ln(number of possible answers)
    no_answer: float
    answers: dict[str, int]  # readable answer -> count, most frequent first

    @property
    def collapsed(self) -> bool:
        return self.n > 0 and self.top_share >= COLLAPSE_SHARE

    @property
    def unreadable(self) -> bool:
        return self.n > 0 and self.no_answer >= NO_ANSWER_SHARE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "collapsed": self.collapsed, "unreadable": self.unreadable}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AnswerStats:
        return cls(int(values["n"]), str(values["top_answer"]), float(values["top_share"]),
                   float(values["entropy"]), float(values["no_answer"]), dict(values["answers"]))  # fmt: skip


def majority_label(golds: Iterable[str], labels: tuple[str, ...] = ()) -> tuple[str, int]:
    """The most frequent gold label and its count; ties go to the label listed first in `labels`
    (then to the smallest string), so the baseline does not depend on item order."""
    counts = Counter(golds)
    if not counts:
        return "", 0
    order = {label: i for i, label in enumerate(labels)}
    label = min(counts, key=lambda g: (-counts[g], order.get(g, len(order)), g))
    return label, counts[label]


def baselines(benchmark: str, golds: list[str]) -> Baselines | None:
    """Chance and majority of a classification cell from the gold labels of its evaluated items."""
    if benchmark not in CLASSIFICATION or not golds:
        return None
    labels = tuple(OPTION_LABELS[benchmark])
    label, count = majority_label(golds, labels)
    return Baselines(chance=1 / len(labels), majority=count / len(golds), majority_label=label)


def answer_stats(benchmark: str, answers: list[str]) -> AnswerStats | None:
    """The distribution of predicted answers ("" = no answer could be read from the output)."""
    if not has_answers(benchmark) or not answers:
        return None
    n = len(answers)
    readable = Counter(a for a in answers if a != "")
    top, top_count = readable.most_common(1)[0] if readable else ("", 0)
    possible = len(OPTION_LABELS[benchmark]) if benchmark in CLASSIFICATION else max(sum(readable.values()), 1)
    total = sum(readable.values())
    entropy = sum(c / total * math.log(total / c) for c in readable.values()) if total else 0.0
    normalised = entropy / math.log(possible) if possible > 1 else 0.0  # >= 0: no "-0.00" for one answer
    ordered = dict(sorted(readable.items(), key=lambda kv: (-kv[1], kv[0])))
    return AnswerStats(n, top, top_count / n, normalised, (n - total) / n, ordered)


def cell_diagnostics(benchmark: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """What `results/<task>.json` stores under `diagnostics` (empty for tasks without answers):
    `baselines` (classification only) and `answers` (`AnswerStats.to_dict`)."""
    if not has_answers(benchmark):
        return {}
    out: dict[str, Any] = {}
    base = baselines(benchmark, [str(s.get("gold")) for s in samples])
    if base is not None:
        out["baselines"] = base.to_dict()
    stats = answer_stats(benchmark, [str(s.get("extracted") or "") for s in samples])
    if stats is not None:
        out["answers"] = stats.to_dict()
    return out

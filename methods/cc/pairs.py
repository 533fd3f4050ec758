"""The parallel pairs W_T is fitted on: from the training examples or the shared parallel corpus
(decontaminated against the benchmarks), and their seeded split into the fit sample and the held-out pairs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.data.base import Example, data_dir, read_jsonl
from harness.data.decontam import texts_overlap
from harness.plumbing.errors import HarnessError


@dataclass(frozen=True)
class Pair:
    """A parallel pair of instructions: `text` in language `lang`, and its English translation."""

    lang: str
    text: str
    text_en: str


def as_pairs(items: Sequence[Pair | tuple[str, str] | tuple[str, str, str]]) -> list[Pair]:
    """Pairs from Pair objects, (text, text_en) or (lang, text, text_en) tuples."""
    out = []
    for item in items:
        if isinstance(item, Pair):
            out.append(item)
        elif len(item) == 2:
            out.append(Pair("", item[0], item[1]))
        else:
            out.append(Pair(*item))
    return out


def pairs_from_examples(examples: Sequence[Example]) -> list[Pair]:
    """The distinct non-English training instructions with their English translations (English
    examples are their own translation and would only pull W_T towards the identity)."""
    seen: dict[tuple[str, str], Pair] = {}
    for ex in examples:
        if ex.lang != "en" and ex.instruction_en:
            seen.setdefault(
                (ex.instruction, ex.instruction_en), Pair(ex.lang, ex.instruction, ex.instruction_en)
            )
    if not seen:
        raise HarnessError(
            "no non-English training example with instruction_en to fit the transform matrix on"
        )
    return list(seen.values())


def pairs_from_parallel(langs: Sequence[str], data: Path | None = None) -> list[Pair]:
    """Sentence pairs of `<data>/parallel` for the non-English languages in `langs`: all of NTREX and
    the train split of FLORES/SIB-200 (its dev/test sentences are the SIB-200 task's), minus any pair
    whose sentence overlaps a benchmark test item (`harness.data.decontam`). The raw sentence is the
    instruction."""

    data = data or data_dir()
    pairs: list[Pair] = []
    for lang in sorted(set(langs) - {"en"}):
        found: list[Pair] = []
        for corpus in ("ntrex", "flores_sib"):
            path = data / "parallel" / corpus / f"{lang}.jsonl"
            if path.is_file():
                rows = read_jsonl(path)
                found += [
                    Pair(lang, row["text"], row["text_en"])
                    for row in rows
                    if row.get("split", "train") == "train" and row.get("text") and row.get("text_en")
                ]
        native = texts_overlap([p.text for p in found], lang, data)
        english = texts_overlap([p.text_en for p in found], "en", data)
        pairs += [p for p, a, b in zip(found, native, english, strict=True) if not (a or b)]
    if not pairs:
        raise HarnessError(f"no parallel sentences for languages {sorted(langs)} under {data / 'parallel'}")
    return pairs


# The held-out pairs of a W_T fit: never fitted on, they give the MSE that says something at small M (the
# in-sample MSE is exactly 0 whenever M*L <= d: X W_T = Y has an exact solution). One pair in
# HELDOUT_FRACTION, at most HELDOUT_MAX (200 pairs x L layers already give thousands of rows to average
# over, and each held-out pair costs two forward passes), at least one when there are two pairs or more.
HELDOUT_MAX = 200
HELDOUT_FRACTION = 5


def heldout_size(n: int) -> int:
    """H, the number of held-out pairs among `n`: min(200, n // 5), at least 1 when n >= 2, 0 when n <= 1."""
    return 0 if n < 2 else max(1, min(HELDOUT_MAX, n // HELDOUT_FRACTION))


def split_pairs(pairs: Sequence[Pair], m: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(fit sample, held-out pairs) after one seeded shuffle: the H held-out pairs are the END of the
    shuffled order and the fit sample its first min(M, N - H) pairs. So, for one seed, the held-out set is
    the same for every M and never in any fit, and smaller samples are prefixes of larger ones (a sweep over
    M adds data rather than redrawing it)."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = heldout_size(len(order))
    fit = order[: max(0, min(m, len(order) - held))]
    return [pairs[i] for i in fit], [pairs[i] for i in order[len(order) - held :]]


def sample_pairs(pairs: Sequence[Pair], m: int, seed: int) -> list[Pair]:
    """The M pairs W_T is fitted on (fewer when fewer than M remain besides the held-out pairs): the fit
    sample of `split_pairs`."""
    return split_pairs(pairs, m, seed)[0]

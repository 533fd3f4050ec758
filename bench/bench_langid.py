"""How well the answer-language detector (`harness.evaluation.answer_language`) recognises each of the 22
languages, and how fast it is: the table of docs/answer-language.md.

For every language it classifies the parallel sentences of `../shared/data/parallel/` (FLORES/SIB-200: 1004
sentences, NTREX: 1997 news sentences and headlines) whole, and short fragments of them like the answers
of small models (the first 5 words; the first 12 characters in Chinese, Japanese and Thai, written
without spaces), and prints per language the share named correctly, the share left unknown (below the
confidence threshold) and the share named as another language (with the most frequent ones). A language is
unreliable when, in either corpus, fewer than `RELIABLE_ACCURACY` of its sentences are named correctly or
more than `MAX_CONFUSION` of its fragments are named as another language (a confident error moves an
answer between the report's categories; an unknown one is shown as unknown).

    python bench/bench_langid.py                        # the 22 languages, threshold 0.5
    python bench/bench_langid.py --all-languages        # the detector over all of lingua's 75 languages
    python bench/bench_langid.py --threshold 0.3 --limit 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.base import LANGUAGES, data_dir  # noqa: E402
from harness.evaluation.answer_language import (  # noqa: E402
    MAX_CONFUSION,
    MIN_CONFIDENCE,
    RELIABLE_ACCURACY,
    UNKNOWN,
    LanguageIdentifier,
    classify_outputs,
    lingua,
)

NO_SPACE = ("ja", "zh", "th")
CORPORA = ("flores_sib", "ntrex")


def fragment(text: str, lang: str, words: int = 5) -> str:
    return text[: words * 12 // 5] if lang in NO_SPACE else " ".join(text.split()[:words])


def load(corpus: str, lang: str, limit: int | None) -> list[str]:
    path = data_dir() / "parallel" / corpus / f"{lang}.jsonl"
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for line in f if line.strip()]
    return rows[:limit] if limit else rows


def scores(identifier: LanguageIdentifier, lang: str, texts: list[str]) -> tuple[float, float, float, str]:
    """(correct, unknown, wrong) shares and the most frequent wrong language."""
    found = [d.lang for d in identifier.identify(texts)]
    n = len(found)
    wrong = Counter(x for x in found if x not in (lang, UNKNOWN))
    top = ", ".join(f"{code} {count / n:.1%}" for code, count in wrong.most_common(2))
    return found.count(lang) / n, found.count(UNKNOWN) / n, sum(wrong.values()) / n, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=MIN_CONFIDENCE)
    parser.add_argument("--limit", type=int, default=None, help="sentences per language and corpus")
    parser.add_argument("--all-languages", action="store_true", help="detect among all of lingua's languages")
    args = parser.parse_args()
    if lingua is None:
        sys.exit("pip install lingua-language-detector")
    codes = sorted(lang.iso_code_639_1.name.lower() for lang in lingua.Language.all()) if args.all_languages else LANGUAGES
    identifier = LanguageIdentifier(codes, args.threshold)
    start = time.perf_counter()
    identifier.identify([load("flores_sib", lang, 1)[0] for lang in LANGUAGES])  # load every model once
    print(f"detector: {len(codes)} languages, threshold {args.threshold}; models loaded in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    header = "| lang | " + " | ".join(f"{c} {k}" for c in CORPORA for k in ("sentences", "fragments")) + " | confused with (fragments) |"
    print("\ncorrect % / unknown % / wrong %\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    unreliable, texts_all, timed = [], [], 0.0
    for lang in LANGUAGES:
        cells, confused, bad = [], [], False
        for corpus in CORPORA:
            texts = load(corpus, lang, args.limit)
            texts_all += texts
            for kind, batch in (("sentences", texts), ("fragments", [fragment(t, lang) for t in texts])):
                t0 = time.perf_counter()
                ok, unknown, wrong, top = scores(identifier, lang, batch)
                timed += time.perf_counter() - t0
                cells.append(f"{ok:.1%} / {unknown:.1%} / {wrong:.1%}")
                if kind == "fragments":
                    confused.append(f"{corpus}: {top}" if top else "")
                bad = bad or (ok < RELIABLE_ACCURACY if kind == "sentences" else wrong > MAX_CONFUSION)
        if bad:
            unreliable.append(lang)
        print(f"| {lang} | " + " | ".join(cells) + f" | {'; '.join(c for c in confused if c) or '–'} |")
    print(f"\nunreliable (in a corpus, < {RELIABLE_ACCURACY:.0%} of the sentences named correctly or > "
          f"{MAX_CONFUSION:.0%} of the fragments named as another language): "
          f"{', '.join(unreliable) or 'none'}")  # fmt: skip
    sample = texts_all[:5000]
    for name, run in (("the detector", identifier.identify),
                      ("classify_outputs, as the report runs it", lambda xs: classify_outputs("xlsum", xs, identifier))):  # fmt: skip
        t0 = time.perf_counter()
        run(sample)
        rate = len(sample) / (time.perf_counter() - t0)
        print(f"speed ({name}; {len(sample)} distinct whole sentences, models loaded): {rate:.0f} outputs/s")


if __name__ == "__main__":
    main()

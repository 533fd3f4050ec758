"""The README.md that `harness data fetch` writes into the data folder (not checked by the manifest)."""

from __future__ import annotations

from harness.data.sources.plan import DATASET_LANGUAGES, SOURCES

MAKES = {"cc-tuning": "benchmarks/{xnli,xstorycloze,mmmlu,xquad,mkqa,xlsum}", "url-nlp": "benchmarks/mgsm",
         "sib-200": "parallel/flores_sib", "ntrex": "parallel/ntrex"}  # fmt: skip

ITEMS = {"xnli": "1000 (sampled from the 5010 test items)", "xstorycloze": "1511", "mmmlu": "1000 (sampled)",
         "xquad": "1190", "mkqa": "1000 (sampled)", "xlsum": "100 (sampled)", "mgsm": "250"}  # fmt: skip

ANSWERS = {"xnli": '"1" entail, "2" neutral, "3" contradict', "xstorycloze": '"1" / "2" (the right ending)',
           "mmmlu": '"A".."D"', "xquad": "the answer span", "mkqa": "a list of acceptable answers",
           "xlsum": "a one-sentence summary", "mgsm": "a number (string)"}  # fmt: skip

HEAD = """# cc-harness data

Built by `harness data fetch` from the public sources listed at the end (each read at a pinned commit)
and checked file by file against the SHA-256 manifest shipped with cc-harness; `harness data verify
<this folder>` checks it again (this README is not checked). Do not edit these files: rebuild them.

## benchmarks/: evaluation sets (test data: never train on them)

One JSONL file per language; every row has `id` (its position: the same id is the same item in every
language), `prompt` (the native-language prompt), `prompt_en` (the English prompt of the same item) and
`answer`. For the CC-Tuning six, `prompt` is the instruction the paper's authors gave the model (and for
xlsum `prompt_en` is the English version of the same article); for mgsm it is the bare question, and
`mgsm/exemplars.json` holds 8 step-by-step exemplars per language (`{lang: {"1": {"q", "a"}, ...}}`).

| task | items per language | languages | answer |
|---|---|---|---|
"""

TAIL = """
## parallel/: parallel text (training data, fitting a transform)

- `flores_sib/<lang>.jsonl`: the 1004 FLORES-200 sentences of SIB-200 in 22 languages: `id` (SIB-200's
  index), `split` (train 701 / dev 99 / test 204, the same in every language), `topic` (7 English labels),
  `text`, `text_en` (the English sentence with the same id).
- `ntrex/<lang>.jsonl`: the 1997 NTREX-128 news sentences in 22 languages: `id`, `text`, `text_en`.

## Sources and licences

"""


def readme() -> str:
    rows = [
        f"| {name} | {ITEMS[name]} | {' '.join(DATASET_LANGUAGES[name])} | {ANSWERS[name]} |"
        for name in ITEMS
    ]
    sources = [
        f"- {MAKES[s.name]}: {s.url} at commit {s.commit}; licence: {s.licence}." for s in SOURCES.values()
    ]
    return HEAD + "\n".join(rows) + "\n" + TAIL + "\n".join(sources) + "\n"

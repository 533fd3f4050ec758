"""The sources of the data folder and, for each file of it, what it is built from.

Four public GitHub repositories, each pinned to one commit (files are read at that commit only):

| source (folder under `--from`) | repository | makes |
|---|---|---|
| `cc-tuning` | YYF-Tommy/CC-Tuning | benchmarks/{xnli,xstorycloze,mmmlu,xquad,mkqa,xlsum} |
| `url-nlp` | google-research/url-nlp | benchmarks/mgsm (+ exemplars.json) |
| `sib-200` | dadelani/sib-200 | parallel/flores_sib |
| `ntrex` | MicrosoftTranslator/NTREX | parallel/ntrex |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.data.base import FLORES_CODES, LANGUAGES, check_languages
from harness.data.sources import convert
from harness.plumbing.errors import HarnessError, unknown


@dataclass(frozen=True)
class Source:
    name: str  # the folder under `--from`, and the source's name in the manifest
    repo: str  # owner/name on GitHub
    commit: str  # the pinned commit: every file is read at it
    licence: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}"

    def describe(self) -> str:
        return f"{self.name}: {self.url} at {self.commit[:12]}; licence: {self.licence}"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("cc-tuning", "YYF-Tommy/CC-Tuning", "39f8995a312b2fe96d6e6013d7875ea60b63c9bf",
               "MIT (the CC-Tuning evaluation samples); the underlying sets keep their own licences: XNLI "
               "CC-BY-NC 4.0, XStoryCloze CC-BY-SA 4.0, MMMLU MIT, XQuAD CC-BY-SA 4.0, MKQA CC-BY-SA 3.0, "
               "XL-Sum CC-BY-NC-SA 4.0"),
        Source("url-nlp", "google-research/url-nlp", "452a21ad3dae5668c06ceeac21ff073e1e40f9be",
               "CC-BY 4.0 (MGSM)"),
        Source("sib-200", "dadelani/sib-200", "593cea88519930f776c1a4a1980b6a35b39dca57",
               "CC-BY-SA 4.0 (the FLORES-200 sentences); SIB-200 code Apache-2.0"),
        Source("ntrex", "MicrosoftTranslator/NTREX", "8561f6a622db9edad1217683e5c83daefd8bb2bf",
               "CC-BY-SA 4.0 (NTREX-128)"),
    )
}  # fmt: skip

# The CC-Tuning authors' folders: benchmark -> (folder, prompts folder, answers folder). XL-Sum's English
# prompt of an item is in `split_sample_en/<lang>.json` (the same article in English); the others pair row i
# of a language with row i of English.
CC_TUNING: dict[str, tuple[str, str, str]] = {
    "xnli": ("XNLI", "split_sample", "ans_sample"),
    "xstorycloze": ("XStoryCloze", "split", "ans"),
    "mmmlu": ("MMMLU", "split_sample", "ans_sample"),
    "xquad": ("XQuAD", "split", "ans"),
    "mkqa": ("MKQA", "split_sample", "ans_sample"),
    "xlsum": ("XLSum", "split_sample", "ans_sample"),
}

# Each dataset's languages (the same as `harness.tasks.catalog`; a test checks it).
DATASET_LANGUAGES: dict[str, tuple[str, ...]] = {
    "xnli": ("en", "ar", "el", "hi", "ru", "sw", "th", "tr", "ur", "zh"),
    "xstorycloze": ("en", "ar", "es", "eu", "hi", "id", "ru", "sw", "te", "zh"),
    "mmmlu": ("en", "ar", "bn", "es", "hi", "id", "ko", "pt", "sw", "yo"),
    "xquad": ("en", "ar", "de", "el", "hi", "ru", "th", "tr", "vi", "zh"),
    "mkqa": ("en", "ar", "de", "ja", "ko", "pt", "ru", "tr", "vi", "zh"),
    "xlsum": ("en", "ar", "fr", "hi", "id", "ru", "sw", "tr", "ur", "vi"),
    "mgsm": ("en", "bn", "de", "es", "fr", "ja", "ru", "sw", "te", "th", "zh"),
    "sib200": LANGUAGES,
    "ntrex": LANGUAGES,
}

# FLORES-200 codes of SIB-200's folders (Swahili: swh, Chinese: simplified).
FLORES: dict[str, str] = FLORES_CODES

# NTREX-128 file codes: English is the US reference (not -GB / -IN nor the source side), Portuguese and
# Spanish the European / Castilian files (not por-BR, spa-MX), Chinese zho-CN (simplified).
NTREX: dict[str, str] = {
    "ar": "arb", "bn": "ben", "de": "deu", "el": "ell", "en": "eng-US", "es": "spa", "eu": "eus",
    "fr": "fra", "hi": "hin", "id": "ind", "ja": "jpn", "ko": "kor", "pt": "por", "ru": "rus",
    "sw": "swa", "te": "tel", "th": "tha", "tr": "tur", "ur": "urd", "vi": "vie", "yo": "yor",
    "zh": "zho-CN",
}  # fmt: skip


@dataclass(frozen=True)
class Output:
    """One file of the data folder: its path there, its source, the source files (paths in the source's
    repository) it is built from, and the converter (their bytes, in that order -> the file's text)."""

    path: str
    dataset: str
    lang: str | None
    source: Source
    inputs: tuple[str, ...]
    build: Callable[[list[tuple[str, bytes]]], str]


def _cc_tuning(bench: str, lang: str) -> Output:
    folder, prompts, answers = CC_TUNING[bench]
    base = f"Inference/data/{folder}"
    english = f"{base}/{prompts}_en/{lang}.json" if bench == "xlsum" else f"{base}/{prompts}/en.json"
    inputs = (f"{base}/{prompts}/{lang}.json", english, f"{base}/{answers}/{lang}.json")
    return Output(
        f"benchmarks/{bench}/{lang}.jsonl", bench, lang, SOURCES["cc-tuning"], inputs, convert.cc_tuning
    )


def _mgsm(lang: str) -> Output:
    inputs = (f"mgsm/mgsm_{lang}.tsv", "mgsm/mgsm_en.tsv")
    return Output(f"benchmarks/mgsm/{lang}.jsonl", "mgsm", lang, SOURCES["url-nlp"], inputs, convert.mgsm)


def _flores_sib(lang: str) -> Output:
    splits = ("train", "dev", "test")
    inputs = tuple(f"data/annotated/{code}/{s}.tsv" for code in (FLORES[lang], FLORES["en"]) for s in splits)
    return Output(
        f"parallel/flores_sib/{lang}.jsonl", "sib200", lang, SOURCES["sib-200"], inputs, convert.flores_sib
    )


def _ntrex(lang: str) -> Output:
    inputs = tuple(f"NTREX-128/newstest2019-ref.{NTREX[code]}.txt" for code in (lang, "en"))
    return Output(f"parallel/ntrex/{lang}.jsonl", "ntrex", lang, SOURCES["ntrex"], inputs, convert.ntrex)


def _outputs(dataset: str, lang: str) -> list[Output]:
    if dataset in CC_TUNING:
        return [_cc_tuning(dataset, lang)]
    if dataset == "mgsm":
        return [_mgsm(lang)]
    return [_flores_sib(lang)] if dataset == "sib200" else [_ntrex(lang)]


MGSM_EXEMPLARS = Output("benchmarks/mgsm/exemplars.json", "mgsm", None, SOURCES["url-nlp"],
                        ("mgsm/exemplars.py",), convert.mgsm_exemplars)  # fmt: skip


def select(datasets: list[str] | None = None, langs: list[str] | None = None) -> list[Output]:
    """The files of the data folder for these datasets (benchmarks, `sib200`: parallel/flores_sib, `ntrex`)
    and languages; None: all. `benchmarks/mgsm/exemplars.json` comes with mgsm in any language."""
    for name in datasets or ():
        if name not in DATASET_LANGUAGES:
            raise unknown("benchmark", name, DATASET_LANGUAGES, "--benchmarks")
    if langs is not None:
        check_languages(langs, LANGUAGES)
    chosen = [d for d in DATASET_LANGUAGES if datasets is None or d in datasets]
    found: list[Output] = []
    for dataset in chosen:
        here = [lang for lang in DATASET_LANGUAGES[dataset] if langs is None or lang in langs]
        if dataset == "mgsm" and here:
            found.append(MGSM_EXEMPLARS)
        for lang in sorted(here):
            found.extend(_outputs(dataset, lang))
    if not found:
        raise HarnessError(
            f"nothing to fetch: {', '.join(chosen)} has none of the languages {', '.join(langs or [])}; "
            "see `harness tasks` for each benchmark's languages"
        )
    return found


def every_output() -> dict[str, Output]:
    """Every file `harness data fetch` can build, by its path in the data folder."""
    return {o.path: o for o in select()}

"""What tasks exist: the 8 benchmarks, their languages, protocols and headline metrics.

Pure Python (no lm-eval import), so the CLI and the report can list tasks cheaply. Task names are
`<benchmark>_<protocol>_<lang>` (e.g. `xnli_gen_sw`), groups `<benchmark>_<protocol>` (`xnli_gen`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.base import data_dir, read_jsonl
from harness.data.prompts import SIB_PROMPT
from harness.plumbing.errors import HarnessError, unknown

TASKS_DIR: Path = Path(__file__).resolve().parent

PROTOCOLS: tuple[str, ...] = ("gen", "mc")


@dataclass(frozen=True)
class Benchmark:
    name: str
    languages: tuple[str, ...]
    protocols: tuple[str, ...]  # the first one is the paper's protocol when it has one
    metrics: dict[str, str]  # protocol -> metric key in lm-eval results
    description: str

    def task_name(self, protocol: str, lang: str) -> str:
        return f"{self.name}_{protocol}_{lang}"

    def group_name(self, protocol: str) -> str:
        return f"{self.name}_{protocol}"


def _bench(name: str, langs: str, mc: bool, description: str, gen_metric: str = "acc") -> Benchmark:
    protocols = ("gen", "mc") if mc else ("gen",)
    metrics = {"gen": gen_metric} | ({"mc": "acc"} if mc else {})
    return Benchmark(name, tuple(langs.split()), protocols, metrics, description)


_ALL_22 = "ar bn de el en es eu fr hi id ja ko pt ru sw te th tr ur vi yo zh"

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        _bench("xnli", "en ar el hi ru sw th tr ur zh", True,
               "natural language inference: entail / neutral / contradict (1000 items)"),
        _bench("xstorycloze", "en ar es eu hi id ru sw te zh", True,
               "story ending: which of two endings is right (1511 items)"),
        _bench("mmmlu", "en ar bn es hi id ko pt sw yo", True,
               "multiple-choice knowledge questions, options A-D (1000 items)"),
        _bench("xquad", "en ar de el hi ru th tr vi zh", False,
               "extractive QA: gold span contained in the answer (1190 items)"),
        _bench("mkqa", "en ar de ja ko pt ru tr vi zh", False,
               "open QA: any gold answer contained in the answer (1000 items)"),
        _bench("xlsum", "en ar fr hi id ru sw tr ur vi", False,
               "one-sentence news summary, ROUGE-L (100 items)", gen_metric="rougeL"),
        _bench("mgsm", "en bn de es fr ja ru sw te th zh", False,
               "grade-school math word problems: the final number (250 items)"),
        _bench("sib200", _ALL_22, True,
               "SIB-200 topic classification of FLORES sentences, 7 topics (204 test items)"),
    )
}  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise unknown("benchmark", name, BENCHMARKS)
    return BENCHMARKS[name]


def load_items(benchmark: str, lang: str) -> list[dict[str, Any]]:
    """The test items of one benchmark x language as {id, prompt, prompt_en, answer} dicts."""
    bench = get_benchmark(benchmark)
    if lang not in bench.languages:
        raise unknown(f"language for {benchmark}", lang, bench.languages)
    if benchmark != "sib200":
        return read_jsonl(data_dir() / "benchmarks" / benchmark / f"{lang}.jsonl")
    rows = read_jsonl(data_dir() / "parallel" / "flores_sib" / f"{lang}.jsonl")
    items = [
        {
            "id": row["id"],
            "prompt": SIB_PROMPT.format(text=row["text"]),
            "prompt_en": SIB_PROMPT.format(text=row["text_en"]),
            "answer": row["topic"],
        }
        for row in rows
        if row["split"] == "test"
    ]
    if not items:
        raise HarnessError(f"{data_dir() / 'parallel' / 'flores_sib' / f'{lang}.jsonl'}: no test-split rows")
    return items


def item_count(benchmark: str, lang: str) -> int:
    return len(load_items(benchmark, lang))


def parse_task_name(name: str) -> tuple[str, str, str] | None:
    """`"xnli_gen_sw"` -> `("xnli", "gen", "sw")`; None when the name is not one of our tasks."""
    parts = name.split("_")
    if len(parts) != 3:
        return None
    benchmark, protocol, lang = parts
    bench = BENCHMARKS.get(benchmark)
    if bench is None or protocol not in bench.protocols or lang not in bench.languages:
        return None
    return benchmark, protocol, lang

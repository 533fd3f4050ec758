"""Per benchmark and protocol: the score table (variants x languages, means over seeds), the chance and
majority rows, the answer statistics of every cell, and deltas against the references with paired
bootstrap intervals (`harness.reports.stats`). `build_benches` turns the long frame of runs into `BenchReport`s."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from harness.evaluation.diagnostics import (
    CLASSIFICATION,
    COLLAPSE_SHARE,
    NO_ANSWER_SHARE,
    answer_stats,
    has_answers,
    majority_label,
)
from harness.reports.runs import RunRecord, natural_key, variant_order
from harness.reports.stats import Delta, align, paired_bootstrap
from harness.tasks.catalog import BENCHMARKS
from harness.tasks.utils import OPTION_LABELS

log = logging.getLogger(__name__)


AVG_NON_EN = "avg non-en"
AVG = "avg"
REFERENCES = {"vanilla": "vanilla SFT", "none": "the zero-shot base model", "majority": "the majority baseline"}
# References that are not runs: computed from the gold labels of the evaluated items.
BASELINE_ROWS = ("chance", "majority")
# Cell flags, in the order they are shown after a score (the legend of every table).
FLAGS = {
    "C": f"collapsed: one answer for >= {COLLAPSE_SHARE:.0%} of the items",
    "N": f"no answer could be read from >= {NO_ANSWER_SHARE:.0%} of the outputs",
    "B": "not above the majority baseline: its paired 95 % interval includes zero (or lies below it)",
}


@dataclass
class CellAnswers:
    """A variant's answers in one language, over its runs (`harness.evaluation.diagnostics.AnswerStats` per run)."""

    top_share: float  # mean over runs
    entropy: float  # mean over runs
    no_answer: float  # mean over runs
    collapsed: bool  # in any run: the variant's mean then rests partly on a degenerate model
    unreadable: bool  # in any run
    shares: dict[str, float]  # answer ("" = none readable) -> share of the items, pooled over runs
    runs: int

    @property
    def top_answer(self) -> str:
        """The most frequent readable answer over the runs ("" when none could be read)."""
        return next((a for a in self.shares if a), "")


@dataclass
class BenchReport:
    """One benchmark x protocol: scores of every variant per language, and deltas to the references."""

    bench: str  # e.g. "sib200_mc"
    metric: str
    langs: list[str]  # non-English languages, then English
    columns: list[str]  # langs with the averages: non-en..., "avg non-en", "en", "avg"
    scores: pd.DataFrame  # variants x columns: means over seeds (x 100)
    spread: pd.DataFrame  # variants x langs: half the range over seeds
    seeds: dict[str, int]  # variant -> runs
    items: dict[str, str]  # lang -> items per run ("40", or "38-40" when runs differ)
    # reference variant -> variant -> column -> Delta (None: no common item or an incomplete average)
    deltas: dict[str, dict[str, dict[str, Delta | None]]] = field(default_factory=dict)
    plot: str | None = None
    # Classification cells: "chance" / "majority" x columns (x 100), empty for other benchmarks.
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)
    majority_labels: dict[str, str] = field(default_factory=dict)  # lang -> most frequent gold label
    gold_shares: dict[str, dict[str, float]] = field(default_factory=dict)  # lang -> label -> share
    answers: dict[tuple[str, str], CellAnswers] = field(default_factory=dict)  # (variant, lang)
    answers_plot: str | None = None

    def column_langs(self, column: str) -> list[str]:
        """The languages a column stands for (one, or those of an average)."""
        if column == AVG_NON_EN:
            return [lang for lang in self.langs if lang != "en"]
        if column == AVG:
            return list(self.langs)
        return [column]

    def flags(self, variant: str, column: str) -> str:
        """The `FLAGS` letters of a cell: collapsed / no answer in any of the column's languages, and not
        above the majority baseline (the column's paired interval against it)."""
        if variant in BASELINE_ROWS:
            return ""
        cells = [self.answers.get((variant, lang)) for lang in self.column_langs(column)]
        marks = ""
        if any(c is not None and c.collapsed for c in cells):
            marks += "C"
        if any(c is not None and c.unreadable for c in cells):
            marks += "N"
        d = self.deltas.get("majority", {}).get(variant, {}).get(column)
        if d is not None and not (d.excludes_zero and d.delta > 0):
            marks += "B"
        return marks

    def gold_majority(self, lang: str) -> tuple[str, float]:
        """The most frequent gold label of a language's evaluated items and its share."""
        label = self.majority_labels.get(lang, "")
        return label, self.gold_shares.get(lang, {}).get(label, 0.0)

    def collapsed_in(self, variant: str, langs: list[str]) -> list[str]:
        return [lang for lang in langs if (c := self.answers.get((variant, lang))) is not None and c.collapsed]



# -- scores -------------------------------------------------------------------------------------------


def language_order(benchmark: str, langs: list[str]) -> list[str]:
    """The benchmark's languages in catalog order (sorted for foreign tasks), English last."""
    catalog = BENCHMARKS[benchmark].languages if benchmark in BENCHMARKS else sorted(langs)
    ordered = [lang for lang in catalog if lang in langs] + sorted(set(langs) - set(catalog))
    return [lang for lang in ordered if lang != "en"] + (["en"] if "en" in langs else [])


def table_columns(langs: list[str]) -> list[str]:
    non_en = [lang for lang in langs if lang != "en"]
    if "en" in langs and non_en:
        return [*non_en, AVG_NON_EN, "en", AVG]
    return [*langs, AVG] if len(langs) > 1 else list(langs)


def _count_text(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def score_table(sub: pd.DataFrame, langs: list[str], columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Means over seeds (variants x columns) and half-ranges over seeds (variants x langs) of one
    benchmark's rows of the long frame. An average needs every language of the table (else NaN)."""
    per_lang = sub.pivot_table(index="variant", columns="lang", values="value", aggfunc="mean")
    spread = sub.pivot_table(index="variant", columns="lang", values="value",
                             aggfunc=lambda v: (v.max() - v.min()) / 2)  # fmt: skip
    per_lang = per_lang.reindex(columns=langs)
    scores = per_lang.copy()
    non_en = [lang for lang in langs if lang != "en"]
    if AVG_NON_EN in columns:
        scores[AVG_NON_EN] = per_lang[non_en].mean(axis=1, skipna=False)
    if AVG in columns:
        scores[AVG] = per_lang[langs].mean(axis=1, skipna=False)
    order = variant_order(list(scores.index))
    return scores.reindex(index=order, columns=columns), spread.reindex(index=order, columns=langs)


# -- per-item scores and deltas -----------------------------------------------------------------------


def item_values(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Item id -> `value(row)` of one run's samples on one task (ids made unique by occurrence; rows
    whose value is None are left out)."""
    out: dict[str, Any] = {}
    seen: dict[str, int] = defaultdict(int)
    for row in rows:
        v = value(row)
        if v is None:
            continue
        key = str(row.get("id"))
        seen[key] += 1
        out[key if seen[key] == 1 else f"{key}#{seen[key]}"] = v
    return out


def item_scores(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Item id -> score x 100 of one run on one task."""
    return item_values(rows, lambda r: None if r.get(metric) is None else 100.0 * float(r[metric]))


def cell_answers(benchmark: str, runs_rows: list[list[dict[str, Any]]]) -> CellAnswers | None:
    """The answers of one variant in one language over its runs' samples."""
    stats = [answer_stats(benchmark, [str(r.get("extracted") or "") for r in rows]) for rows in runs_rows]
    stats = [st for st in stats if st is not None]
    if not stats:
        return None
    pooled: Counter[str] = Counter()
    for rows in runs_rows:
        pooled.update(str(r.get("extracted") or "") for r in rows)
    total = sum(pooled.values())
    return CellAnswers(
        top_share=float(np.mean([st.top_share for st in stats])),
        entropy=float(np.mean([st.entropy for st in stats])),
        no_answer=float(np.mean([st.no_answer for st in stats])),
        collapsed=any(st.collapsed for st in stats),
        unreadable=any(st.unreadable for st in stats),
        shares={a: c / total for a, c in sorted(pooled.items(), key=lambda kv: (-kv[1], kv[0]))},
        runs=len(stats),
    )


def bench_deltas(
    bench: BenchReport,
    scores: dict[tuple[str, str], dict[str, dict[str, float]]],
    reference: str,
    iters: int,
    seed: int,
) -> dict[str, dict[str, Delta | None]]:
    """variant -> column -> Delta against `reference`. `scores[(variant, lang)]` maps each run to its
    item scores. Each cell uses, on each side, the runs that have every language of the cell (so a run
    missing one language still counts for the others)."""
    out: dict[str, dict[str, Delta | None]] = {}
    for variant in bench.scores.index:
        if variant == reference:
            continue
        row: dict[str, Delta | None] = {}
        for column in bench.columns:
            langs = bench.column_langs(column)
            sides = []
            for name in (variant, reference):
                runs = set.intersection(*(set(scores.get((name, lang), {})) for lang in langs))
                sides.append(sorted(runs))
            strata = []
            if sides[0] and sides[1]:
                for lang in langs:
                    a, b, _ = align([scores[(variant, lang)][r] for r in sides[0]],
                                    [scores[(reference, lang)][r] for r in sides[1]])  # fmt: skip
                    strata.append((a, b))
            d = paired_bootstrap(strata, iters=iters, seed=seed) if strata else None
            row[column] = None if d is None else replace(d, caveat=degenerate(bench, variant, reference, langs))
        out[variant] = row
    return out


def degenerate(bench: BenchReport, variant: str, reference: str, langs: list[str]) -> str:
    """Why a delta over `langs` must not count as significant: a side collapsed in one of them (the
    majority baseline is constant by definition and is not a side that can collapse)."""
    parts = [f"{name} collapsed in {', '.join(where)}" for name in (variant, reference)
             if (where := bench.collapsed_in(name, langs))]  # fmt: skip
    return "; ".join(parts)


def add_baselines(bench: BenchReport, golds: dict[str, dict[str, str]], benchmark: str,
                  scores: dict[tuple[str, str], dict[str, dict[str, float]]]) -> None:
    """Chance and majority rows from the gold labels of the evaluated items (`golds`: lang -> item ->
    gold), and the majority baseline's per-item scores as a reference for deltas."""
    labels = tuple(OPTION_LABELS[benchmark])
    rows: dict[str, dict[str, float]] = {"chance": {}, "majority": {}}
    for lang in bench.langs:
        items = golds.get(lang, {})
        if not items:
            continue
        label, count = majority_label(items.values(), labels)
        bench.majority_labels[lang] = label
        counts = Counter(items.values())
        bench.gold_shares[lang] = {g: counts[g] / len(items) for g in sorted(counts, key=lambda g: (-counts[g], g))}
        rows["chance"][lang] = 100.0 / len(labels)
        rows["majority"][lang] = 100.0 * count / len(items)
        scores[("majority", lang)]["majority"] = {k: 100.0 * (g == label) for k, g in items.items()}
    table = pd.DataFrame(rows).T.reindex(index=list(BASELINE_ROWS), columns=bench.langs)
    non_en = [lang for lang in bench.langs if lang != "en"]
    if AVG_NON_EN in bench.columns:
        table[AVG_NON_EN] = table[non_en].mean(axis=1, skipna=False)
    if AVG in bench.columns:
        table[AVG] = table[bench.langs].mean(axis=1, skipna=False)
    bench.baselines = table.reindex(columns=bench.columns)


def build_benches(runs: list[RunRecord], frame: pd.DataFrame, iters: int, seed: int) -> list[BenchReport]:
    benches = []
    if frame.empty:
        return benches
    frame = with_bench(frame)
    by_name = {r.name: r for r in runs}
    for bench_name in sorted(frame.bench.unique(), key=natural_key):
        sub = frame[frame.bench == bench_name]
        langs = language_order(str(sub.benchmark.iloc[0]), list(sub.lang.unique()))
        columns = table_columns(langs)
        scores, spread = score_table(sub, langs, columns)
        seeds = sub.groupby("variant").run.nunique().to_dict()
        items = {lang: _count_text(sub[sub.lang == lang].n) for lang in langs}
        metric = str(sub.metric.iloc[0])
        bench = BenchReport(bench_name, metric, langs, columns, scores, spread, seeds, items)
        benchmark = str(sub.benchmark.iloc[0])
        item_data: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(dict)
        answer_rows: dict[tuple[str, str], list[list[dict[str, Any]]]] = defaultdict(list)
        golds: dict[str, dict[str, str]] = defaultdict(dict)
        for row in sub.itertuples():
            rows = by_name[row.run].samples(row.task)
            item_data[(row.variant, row.lang)][row.run] = item_scores(rows, row.metric)
            if has_answers(benchmark):
                answer_rows[(row.variant, row.lang)].append(rows)
                golds[row.lang].update(item_values(rows, lambda r: None if r.get("gold") is None else str(r["gold"])))
        for key, runs_rows in answer_rows.items():
            if (cell := cell_answers(benchmark, runs_rows)) is not None:
                bench.answers[key] = cell
        if has_answers(benchmark) and benchmark in CLASSIFICATION:
            add_baselines(bench, golds, benchmark, item_data)
        for reference in REFERENCES:
            if reference in scores.index or (reference == "majority" and not bench.baselines.empty):
                bench.deltas[reference] = bench_deltas(bench, item_data, reference, iters, seed)
        benches.append(bench)
    return benches



def with_bench(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `bench` column: benchmark_protocol, or the benchmark alone when it has no protocol."""
    bench = frame.benchmark + "_" + frame.protocol.where(frame.protocol != "", "-")
    return frame.assign(bench=bench.str.replace("_-", "", regex=False))



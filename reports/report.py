"""`harness report`: from finished runs to `index.html` (+ `index.md`, CSV files, PNG plots, per-item
pages) in one folder that opens from disk.

What it computes (`build_report`), per benchmark and protocol:
- a score table: variants (method + chosen options) as rows, languages as columns (non-English first,
  their average, then English apart, then the average of all), means over seeds, best cell marked;
- deltas against vanilla SFT and against the zero-shot model with paired bootstrap 95 % intervals over
  items and seeds (`reports.stats`), and the item counts behind them;
- figures: per-language bars, the Decision Maker's layer choices of every CC run, accuracy against a
  fixed source layer, W_T's MSE and accuracy against M, training loss.
`write_report` renders it (`reports.html`, `reports.markdown`) next to the CSV files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
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
from harness.plumbing.errors import HarnessError
from reports import plots
from reports.runs import RunRecord, load_runs, natural_key, variant_order
from reports.stats import Delta, align, paired_bootstrap
from reports.table import frame_of, write_tables

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


@dataclass
class Figure:
    path: str  # relative to the report folder
    title: str
    caption: str = ""


@dataclass
class ItemPage:
    task: str
    path: str  # relative
    items: int
    runs: int


@dataclass
class Report:
    title: str
    generated: str
    runs: list[RunRecord]
    skipped: list[str]
    benches: list[BenchReport]
    figures: dict[str, list[Figure]]  # section -> figures
    item_pages: list[ItemPage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    iters: int = 2000


# -- scores -------------------------------------------------------------------------------------------


def language_order(benchmark: str, langs: list[str]) -> list[str]:
    """The benchmark's languages in catalog order (sorted for foreign tasks), English last."""
    from tasks.catalog import BENCHMARKS

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
    from tasks.utils import OPTION_LABELS

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


# -- figures ------------------------------------------------------------------------------------------


def answers_figure(bench: BenchReport, out: Path) -> str:
    """Predicted-answer distribution of every variant against the gold distribution, per language."""
    from tasks.utils import OPTION_LABELS

    benchmark = bench.bench.split("_")[0]
    panels = {}
    for lang in bench.langs:
        rows = [("gold", bench.gold_shares.get(lang, {}))]
        rows += [(v, bench.answers[(v, lang)].shares) for v in bench.scores.index if (v, lang) in bench.answers]
        panels[lang] = rows
    path = plots.answer_distribution(OPTION_LABELS[benchmark], panels, f"{bench.bench}: predicted answers against gold",
                                     out / "plots" / f"answers_{bench.bench}.png")  # fmt: skip
    return str(path.relative_to(out))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def non_en_average(frame: pd.DataFrame, bench: BenchReport) -> pd.Series:
    """Per run: the average over the table's non-English languages (NaN when one is missing)."""
    sub = frame[frame.bench == bench.bench]
    non_en = [lang for lang in bench.langs if lang != "en"] or bench.langs
    wide = sub.pivot_table(index="run", columns="lang", values="value", aggfunc="mean").reindex(
        columns=non_en
    )
    return wide.mean(axis=1, skipna=False)


def _mean_spread(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float((arr.max() - arr.min()) / 2)


def with_bench(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `bench` column: benchmark_protocol, or the benchmark alone when it has no protocol."""
    bench = frame.benchmark + "_" + frame.protocol.where(frame.protocol != "", "-")
    return frame.assign(bench=bench.str.replace("_-", "", regex=False))


def cc_figures(runs: list[RunRecord], frame: pd.DataFrame, benches: list[BenchReport], out: Path) -> dict[str, list[Figure]]:  # fmt: skip
    """Decision Maker layer choices per CC run; accuracy against a fixed source layer; W_T against M."""
    figures: dict[str, list[Figure]] = defaultdict(list)
    cc_runs = sorted((r for r in runs if r.method == "cc"), key=lambda r: (natural_key(r.variant), r.seed))
    for run in cc_runs:
        train = run.artifact("cc_artifacts.json") or {}
        evals = run.artifact("eval_artifacts.json") or {}
        if run.resolved_options().get("fixed_source_layer", -1) >= 0 or not (train or evals):
            continue
        per_step = [(row["step"], row["cc_layer_hist"]) for row in train.get("train_layer_hist_per_step", [])]
        path = plots.layer_choice(train.get("train_layer_hist"), evals.get("eval_layer_hist"), per_step,
                                  f"{run.variant}, seed {run.seed} ({run.name})",
                                  out / "plots" / f"layers_{_safe(run.name)}.png")  # fmt: skip
        entropies = [(name, values.get(key)) for name, values, key in
                     (("training", train, "train_layer_entropy"), ("evaluation", evals, "eval_layer_entropy"))]  # fmt: skip
        caption = "; ".join(f"{name} entropy {value:.2f} nats" for name, value in entropies if isinstance(value, float))
        if evals.get("decision"):
            caption += f" (evaluation: {evals['decision']}" + (
                f", eval_seed {evals['eval_seed']})" if evals.get("eval_seed") is not None else ")"
            )
        figures["layer choice"].append(
            Figure(str(path.relative_to(out)), f"{run.variant}, seed {run.seed}", caption)
        )

    frame = with_bench(frame)
    by_variant: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_variant[run.variant].append(run)

    def reference_lines(avg: pd.Series, names: dict[str, str]) -> dict[str, float]:
        lines = {}
        for variant, label in names.items():
            values = [avg.get(r.name) for r in by_variant.get(variant, [])]
            values = [v for v in values if v is not None and not np.isnan(v)]
            if values:
                lines[label] = float(np.mean(values))
        return lines

    # accuracy against the fixed source layer (the layer-choice ablation)
    fixed = [r for r in cc_runs if r.resolved_options().get("fixed_source_layer", -1) >= 0]
    if fixed:
        for bench in benches:
            avg = non_en_average(frame, bench)
            groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
            for run in fixed:
                value = avg.get(run.name)
                if value is None or np.isnan(value):
                    continue
                rest = {k: v for k, v in run.options.items() if k != "fixed_source_layer"}
                name = "fixed layer" + (
                    f" ({', '.join(f'{k}={v}' for k, v in sorted(rest.items()))})" if rest else ""
                )
                groups[name][int(run.options["fixed_source_layer"])].append(float(value))
            if not groups:
                continue
            curves = []
            for name, points in groups.items():
                layers = sorted(points)
                stats = [_mean_spread(points[layer]) for layer in layers]
                curves.append(plots.Curve(name, layers, [s[0] for s in stats], [s[1] for s in stats]))
            refs = reference_lines(avg, {"cc": "Decision Maker (cc)", "vanilla": "vanilla SFT"})
            path = plots.against(curves, refs, f"{bench.bench}: fixed source layer", "source layer",
                                 f"{bench.metric} x 100, avg non-en", out / "plots" / f"fixed_layer_{bench.bench}.png",
                                 integer_x=True)  # fmt: skip
            figures["fixed source layer"].append(Figure(str(path.relative_to(out)), bench.bench,
                "each point trains a model that always fuses that layer; lines: the learned Decision Maker, vanilla SFT"))  # fmt: skip

    # W_T: MSE and accuracy against M, one curve per setting of the other options
    groups_m: dict[str, list[RunRecord]] = defaultdict(list)
    for run in cc_runs:
        rest = {k: v for k, v in run.options.items() if k != "wt_samples"}
        if rest.get("use_wt", True) is False:
            continue
        groups_m[", ".join(f"{k}={v}" for k, v in sorted(rest.items())) or "cc"].append(run)
    groups_m = {k: v for k, v in groups_m.items() if len({_m(r) for r in v}) > 1}
    if groups_m:
        # two curves per group: the in-sample MSE (dashed; exactly 0 whenever M*L <= d, so it says nothing
        # at small M) and the MSE on the held-out pairs (solid; absent from runs that predate it)
        curves, heldout_sizes = [], set()
        for i, (name, members) in enumerate(groups_m.items()):
            for key, kind, style in (("mse", "in-sample", "--"), ("mse_heldout", "held-out", "-")):
                points: dict[int, list[float]] = defaultdict(list)
                for run in members:
                    transform = (run.artifact("cc_artifacts.json") or {}).get("transform") or {}
                    if transform.get(key) is not None:
                        points[_m(run)].append(float(transform[key]))
                        if key == "mse_heldout":
                            heldout_sizes.add(transform.get("heldout"))
                ms = sorted(points)
                stats = [_mean_spread(points[m]) for m in ms]
                if ms:
                    curves.append(plots.Curve(f"{name}, {kind}", ms, [s[0] for s in stats], [s[1] for s in stats],
                                              linestyle=style, color=f"C{i % 10}"))  # fmt: skip
        sizes = sorted(h for h in heldout_sizes if h is not None)
        held = f"H = {', '.join(map(str, sizes))} pairs" if sizes else "H pairs"
        caption = ("dashed: in-sample MSE on the M pairs fitted on, exactly 0 whenever M*L <= d (no more rows "
                   f"than the hidden size: the fit is exact); solid: held-out MSE on {held} never used in any fit "
                   "(the same pairs for every M of a seed)")  # fmt: skip
        if not heldout_sizes:
            caption += "; these runs recorded no held-out MSE"
        path = plots.against(curves, {}, "W_T fit: MSE(X W_T, Y) against M", "M (parallel pairs)",
                             "MSE", out / "plots" / "wt_mse.png", logx=True, logy=True)  # fmt: skip
        figures["W_T against M"].append(Figure(str(path.relative_to(out)), "MSE against M", caption))
        for bench in benches:
            avg = non_en_average(frame, bench)
            curves = []
            for name, members in groups_m.items():
                points = defaultdict(list)
                for run in members:
                    value = avg.get(run.name)
                    if value is not None and not np.isnan(value):
                        points[_m(run)].append(float(value))
                ms = sorted(points)
                stats = [_mean_spread(points[m]) for m in ms]
                if ms:
                    curves.append(plots.Curve(name, ms, [s[0] for s in stats], [s[1] for s in stats]))
            if not curves:
                continue
            off = [v for v in by_variant if v.startswith("cc (") and "use_wt=False" in v]
            refs = reference_lines(avg, {**{v: f"W_T off: {v}" for v in off}, "vanilla": "vanilla SFT"})
            path = plots.against(curves, refs, f"{bench.bench}: accuracy against M", "M (parallel pairs)",
                                 f"{bench.metric} x 100, avg non-en", out / "plots" / f"wt_acc_{bench.bench}.png", logx=True)  # fmt: skip
            figures["W_T against M"].append(Figure(str(path.relative_to(out)), bench.bench,
                                                   "one trained model per seed; W_T refitted for each M"))  # fmt: skip
    return figures


def _m(run: RunRecord) -> int:
    """The number of pairs W_T was fitted on (fewer than asked when the source has fewer)."""
    transform = (run.artifact("cc_artifacts.json") or {}).get("transform") or {}
    return int(transform.get("m") or run.resolved_options().get("wt_samples", 0))


SAMPLING_OPTIONS = ("eval_gumbel", "eval_seed")


def gumbel_figures(runs: list[RunRecord], frame: pd.DataFrame, benches: list[BenchReport], out: Path) -> list[Figure]:  # fmt: skip
    """CC runs evaluated with the Decision Maker sampled (`eval_gumbel=true`, one run per `eval_seed`, as
    the authors evaluate) against the argmax run of the same trained model: per benchmark and language,
    each sampled score, their mean, and the argmax score."""
    groups: dict[tuple[str, int], dict[str, list[RunRecord]]] = defaultdict(lambda: {"argmax": [], "sampled": []})
    for run in runs:
        if run.method != "cc":
            continue
        rest = {k: v for k, v in sorted(run.options.items()) if k not in SAMPLING_OPTIONS}
        kind = "sampled" if run.resolved_options().get("eval_gumbel") else "argmax"
        groups[(json.dumps(rest, sort_keys=True, default=str), run.seed)][kind].append(run)
    frame = with_bench(frame)
    figures = []
    for (_, seed), members in sorted(groups.items()):
        if not members["sampled"] or len(members["argmax"]) != 1:
            continue
        argmax_run = members["argmax"][0]
        for bench in benches:
            sub = frame[frame.bench == bench.bench]
            wide = sub.pivot_table(index="run", columns="lang", values="value", aggfunc="mean")
            wide = wide.reindex(columns=bench.langs)
            names = [r.name for r in members["sampled"]]
            if argmax_run.name not in wide.index or not set(names) & set(wide.index):
                continue
            argmax = [float(v) for v in wide.loc[argmax_run.name]]
            sampled = [[float(v) for v in wide.loc[n]] for n in names if n in wide.index]
            means = np.nanmean(np.asarray(sampled, float), axis=0)
            gaps = np.abs(means - np.asarray(argmax, float))
            worst = int(np.nanargmax(gaps)) if np.isfinite(gaps).any() else 0
            label = f"{argmax_run.variant}, seed {seed}"
            path = plots.seed_spread(bench.langs, argmax, sampled, f"{bench.metric} x 100",
                                     f"{bench.bench}: {label}", out / "plots" / f"gumbel_{bench.bench}_{_safe(argmax_run.name)}.png")  # fmt: skip
            figures.append(Figure(str(path.relative_to(out)), f"{bench.bench}, {label}",
                f"dots: {len(sampled)} evaluations with the Decision Maker sampled (eval_gumbel, one eval_seed each); "
                f"bar: their mean; diamond: the argmax decision (the harness's default). Mean |sampled mean - argmax| "
                f"{float(np.nanmean(gaps)):.1f} points, largest {float(gaps[worst]):.1f} ({bench.langs[worst]})"))  # fmt: skip
    return figures


def loss_figure(runs: list[RunRecord], out: Path) -> Figure | None:
    """Training loss of every trained model (runs sharing one trained model are drawn once)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    seen: set[str] = set()
    for run in sorted(runs, key=lambda r: ("training_run" in r.status, natural_key(r.variant), r.seed)):
        trained_in = run.status.get("training_run", run.name)
        rows = [row for row in run.train_log if "loss" in row and "step" in row]
        if not rows or trained_in in seen:
            continue
        seen.add(trained_in)
        last = {row["step"]: float(row["loss"]) for row in rows}  # after a resume, the last record wins
        steps = sorted(last)
        curves[f"{run.variant} seed={run.seed}"] = (steps, [last[s] for s in steps])
    if not curves:
        return None
    path = plots.loss_curves(curves, out / "plots" / "training_loss.png")
    return Figure(
        str(path.relative_to(out)), "training loss", "runs that share one trained model are drawn once"
    )


def build_report(paths: list[str], out: Path, iters: int = 2000, seed: int = 0) -> Report:
    """Read the runs under `paths`, compute every table and delta, draw the figures into `out/plots`."""
    runs, skipped = load_runs(paths)
    frame = frame_of(runs)
    benches = build_benches(runs, frame, iters, seed)
    figures: dict[str, list[Figure]] = defaultdict(list)
    for bench in benches:
        series = {
            variant: (list(bench.scores.loc[variant, bench.langs]), list(bench.spread.loc[variant].fillna(0)))
            for variant in bench.scores.index
        }
        path = plots.language_bars(bench.langs, series, f"{bench.bench} ({bench.metric} x 100)",
                                   f"{bench.metric} x 100", out / "plots" / f"bars_{bench.bench}.png")  # fmt: skip
        bench.plot = str(path.relative_to(out))
        if bench.gold_shares:
            bench.answers_plot = answers_figure(bench, out)
    if not frame.empty:
        figures.update(cc_figures(runs, frame, benches, out))
        sampled = gumbel_figures(runs, frame, benches, out)
        if sampled:
            figures["sampled Decision Maker at evaluation"] = sampled
    loss = loss_figure(runs, out)
    if loss:
        figures["training loss"].append(loss)
    notes = []
    for reference, name in REFERENCES.items():
        if reference in BASELINE_ROWS:
            continue
        if benches and not any(reference in b.deltas for b in benches):
            notes.append(f"no '{reference}' run among the reports' runs: no deltas against {name}")
    rank = {v: i for i, v in enumerate(variant_order([r.variant for r in runs]))}
    return Report(
        title="Multilingual fine-tuning report",
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        runs=sorted(runs, key=lambda r: (rank[r.variant], r.seed, r.name)),
        skipped=skipped,
        benches=benches,
        figures=dict(figures),
        notes=notes,
        iters=iters,
    )


def write_csv(report: Report, out: Path) -> list[Path]:
    """`scores.csv` (variant x benchmark x column, baseline rows included, with the cell's flags and answer
    statistics) and `deltas.csv` (with intervals, item counts and why a delta is not significant)."""
    from harness.plumbing.io import atomic_write_text

    score_rows, delta_rows = [], []
    for bench in report.benches:
        for name in BASELINE_ROWS if not bench.baselines.empty else ():
            for column in bench.columns:
                value = bench.baselines.loc[name, column]
                score_rows.append({"bench": bench.bench, "metric": bench.metric, "variant": name, "column": column,
                                   "score": None if pd.isna(value) else round(float(value), 4), "seeds": 0})  # fmt: skip
        for variant in bench.scores.index:
            for column in bench.columns:
                value = bench.scores.loc[variant, column]
                flags = bench.flags(variant, column)
                cell = bench.answers.get((variant, column))
                score_rows.append({"bench": bench.bench, "metric": bench.metric, "variant": variant,
                                   "column": column, "score": None if pd.isna(value) else round(float(value), 4),
                                   "seeds": bench.seeds.get(variant, 0), "flags": flags,
                                   "collapsed": "C" in flags, "no_answer_flag": "N" in flags,
                                   "not_above_majority": "B" in flags,
                                   "top_share": None if cell is None else round(cell.top_share, 4),
                                   "entropy": None if cell is None else round(cell.entropy, 4),
                                   "no_answer": None if cell is None else round(cell.no_answer, 4)})  # fmt: skip
        for reference, rows in bench.deltas.items():
            for variant, cells in rows.items():
                for column, d in cells.items():
                    if d is None:
                        continue
                    delta_rows.append({"bench": bench.bench, "reference": reference, "variant": variant,
                                       "column": column, "delta": round(d.delta, 4), "ci_lo": round(d.lo, 4),
                                       "ci_hi": round(d.hi, 4), "significant": d.significant,
                                       "excludes_zero": d.excludes_zero, "caveat": d.caveat,
                                       "items": d.n_items, "seeds": d.seeds_a, "seeds_reference": d.seeds_b})  # fmt: skip
    paths = [out / "scores.csv", out / "deltas.csv"]
    atomic_write_text(paths[0], pd.DataFrame(score_rows).to_csv(index=False))
    atomic_write_text(paths[1], pd.DataFrame(delta_rows).to_csv(index=False))
    return paths


REPORT_MARKER = ".harness-report"


def write_report(paths: list[str], out: Path, iters: int = 2000, seed: int = 0) -> tuple[Report, list[Path]]:
    """Write the whole report folder; returns the report and the files written (index.html first).

    The report is built in a temporary folder beside `out` and swapped in by renames, so `out` holds
    either the previous report or the new one, never a mix (a killed report leaves the old one). An
    existing `out` is replaced only if it is empty or a report this command wrote (it holds
    `.harness-report`): the command never deletes a folder of other files."""
    from harness.plumbing import faults
    from harness.plumbing.io import atomic_write_text
    from reports import html, markdown

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_MARKER).is_file())):
        raise HarnessError(f"--out {out}: exists and is not a report folder; give a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # left by a killed report
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report = build_report(paths, tmp, iters, seed)
        for s in report.skipped:
            log.warning("skipped incomplete run %s", s)
        report.item_pages = html.write_item_pages(report, tmp)
        written = [tmp / "index.html", tmp / "index.md"]
        atomic_write_text(written[0], html.render_index(report))
        faults.point("report")
        atomic_write_text(written[1], markdown.render(report))
        written += write_csv(report, tmp)
        written += write_tables(frame_of(report.runs), tmp, report.skipped)
        atomic_write_text(tmp / REPORT_MARKER, "written by `harness report`; the folder is replaced on the next one\n")
        old = None
        if out.exists():
            old = out.parent / f"{tmp.name}.old"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return report, [out / p.relative_to(tmp) for p in written]

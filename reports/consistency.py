"""Consistency with English on parallel items, from the stored per-item samples (no model call).

A parallel benchmark asks the same item in every language (the same `id`: `../shared/data/README.md`), so
a run that answered it in English and in language X says, item by item, whether the model transfers what
it does in English. Per benchmark x protocol, variant and non-English language X, over the runs of the
variant that evaluated both X and English:

- **same answer**: the share of paired items whose answer in X equals the answer in English (the same
  option label; the same number by value for MGSM; an answer that could not be read agrees with nothing).
  Not defined for XQuAD and MKQA: their answer is the gold span found in the output, written in the
  item's language, and spans of two languages cannot be compared for equality;
- **accuracy in X given English right** and **given English wrong** (each item scored against its own
  language's gold);
- **lost in transfer**: items right in English but wrong in X, as a share of the paired items and a count.

Items are matched by id within one run (never by position). An item whose gold differs from the English
gold where the gold is language-independent (labels, numbers) is not the same question: it is left out
and counted (MMMLU-ko has 7 such items). XL-Sum is not parallel (different articles per language): left
out with a note. Shares pool a variant's runs; counts are per run (means over runs).

Deltas between variants (against vanilla SFT and the zero-shot model, as the accuracy deltas) have paired
bootstrap 95 % intervals over items and seeds: `harness.reports.stats.paired_bootstrap` for the shares
(same answer, lost), `ratio_bootstrap` below (the same resampling) for the conditional accuracies. A side
collapsed in X or in English is never significant (`harness.reports.benches.degenerate`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports import plots
from harness.reports.benches import (
    AVG_NON_EN,
    BASELINE_ROWS,
    REFERENCES,
    BenchReport,
    degenerate,
    item_values,
)
from harness.reports.runs import RunRecord, natural_key, variant_order
from harness.reports.stats import Delta, align, paired_bootstrap, seed_weights
from harness.tasks.extraction import same_number

# Parallel benchmarks -> how an answer in X is compared with the English answer ("" = not comparable).
PARALLEL = {
    "xnli": "label", "xstorycloze": "label", "mmmlu": "label", "sib200": "label",
    "mgsm": "number", "xquad": "", "mkqa": "",
}  # fmt: skip
COMPARE = {
    "label": "the same option label",
    "number": "the same number, compared by value",
    "": "not compared: the answer is the gold span found in the output, written in each language",
}
NOT_PARALLEL = {
    "xlsum": "not parallel (each language's items are different articles): left out, nothing is guessed",
}
STATS = {
    "agreement": "same answer as English",
    "acc_en_right": "accuracy | English right",
    "acc_en_wrong": "accuracy | English wrong",
    "lost": "lost in transfer",
}
RATIOS = ("acc_en_right", "acc_en_wrong")  # conditional: a ratio over the items of the condition


@dataclass(frozen=True)
class Pair:
    """One item answered by one run in X and in English."""

    agree: bool | None  # None: answers not comparable
    en_ok: bool
    x_ok: bool

    def parts(self, stat: str) -> tuple[float, float] | None:
        """(numerator x 100, denominator) of the item for `stat`: the statistic is sum(num) / sum(den)."""
        if stat == "agreement":
            return None if self.agree is None else (100.0 * self.agree, 1.0)
        if stat == "acc_en_right":
            return 100.0 * (self.en_ok and self.x_ok), float(self.en_ok)
        if stat == "acc_en_wrong":
            return 100.0 * (not self.en_ok and self.x_ok), float(not self.en_ok)
        return 100.0 * (self.en_ok and not self.x_ok), 1.0


RunPairs = dict[str, dict[str, Pair]]  # run -> item id -> Pair


@dataclass
class ConsistencyCell:
    """One variant in one column (a language or the non-English average): values x 100, counts per run."""

    values: dict[str, float | None]  # STATS key -> value (None: undefined)
    runs: int
    items: float  # paired items per run
    en_right: float
    en_wrong: float
    lost: float
    caveat: str = ""  # "collapsed in en": the variant answers one thing for >= 80 % of the items


@dataclass
class ConsistencyBench:
    bench: str  # e.g. "xnli_gen"
    benchmark: str
    compare: str = ""  # PARALLEL value
    columns: list[str] = field(default_factory=list)  # non-English languages (+ AVG_NON_EN)
    variants: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], ConsistencyCell] = field(default_factory=dict)  # (variant, column)
    # reference -> variant -> column -> STATS key -> Delta (None: no common item / undefined)
    deltas: dict[str, dict[str, dict[str, dict[str, Delta | None]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    excluded: bool = False  # left out (not parallel, no English): `notes` says why
    plot: str | None = None

    def column_langs(self, column: str) -> list[str]:
        return [c for c in self.columns if c != AVG_NON_EN] if column == AVG_NON_EN else [column]

    @property
    def stats(self) -> list[str]:
        return [s for s in STATS if s != "agreement" or self.compare]


def same_answer(compare: str, answer: str, english: str) -> bool | None:
    if not compare:
        return None
    if compare == "number":
        return same_number(answer, english)
    return bool(answer) and answer == english


def _key(value: object) -> str:
    return str(value).strip()


def run_pairs(compare: str, metric: str, rows_x: list[dict], rows_en: list[dict]) -> tuple[dict[str, Pair], int]:
    """Pairs of one run, matched by item id, and the number of items left out because their gold differs
    from the English gold (labels and numbers only: spans are written in each language)."""
    def row(r: dict) -> dict | None:
        return None if r.get(metric) is None else r

    x, en = item_values(rows_x, row), item_values(rows_en, row)
    pairs, mismatched = {}, 0
    for key in sorted(set(x) & set(en), key=natural_key):
        a, b = x[key], en[key]
        if compare and not same_answer(compare, _key(a.get("gold")), _key(b.get("gold"))):
            mismatched += 1
            continue
        agree = same_answer(compare, _key(a.get("extracted") or ""), _key(b.get("extracted") or ""))
        pairs[key] = Pair(agree, float(b[metric]) >= 0.5, float(a[metric]) >= 0.5)
    return pairs, mismatched


def ratio(pairs: Sequence[Pair], stat: str) -> float | None:
    parts = [p for pair in pairs if (p := pair.parts(stat)) is not None]
    den = sum(d for _, d in parts)
    return None if not den else sum(n for n, _ in parts) / den


def cell_of(runs: RunPairs, caveat: str) -> ConsistencyCell:
    pooled = [p for pairs in runs.values() for p in pairs.values()]
    k = len(runs)
    return ConsistencyCell(
        values={stat: ratio(pooled, stat) for stat in STATS}, runs=k, items=len(pooled) / k,
        en_right=sum(p.en_ok for p in pooled) / k, en_wrong=sum(not p.en_ok for p in pooled) / k,
        lost=sum(p.en_ok and not p.x_ok for p in pooled) / k, caveat=caveat,
    )  # fmt: skip


def average_cell(cells: list[ConsistencyCell], caveat: str) -> ConsistencyCell:
    """The non-English average: the mean of the languages' values (None when one is undefined), counts summed."""
    values = {s: None if any(c.values[s] is None for c in cells) else float(np.mean([c.values[s] for c in cells]))
              for s in STATS}  # fmt: skip
    return ConsistencyCell(values, min(c.runs for c in cells), sum(c.items for c in cells),
                           sum(c.en_right for c in cells), sum(c.en_wrong for c in cells),
                           sum(c.lost for c in cells), caveat)  # fmt: skip


# -- intervals ---------------------------------------------------------------------------------------


def ratio_bootstrap(strata: Sequence[tuple[np.ndarray, ...]], iters: int = 2000, seed: int = 0,
                    level: float = 0.95) -> Delta | None:  # fmt: skip
    """Like `paired_bootstrap` (the same draws of seeds and items, in the same order), for a ratio: each
    stratum is `(num_a, den_a, num_b, den_b)`, (S, n) arrays aligned on the same items, and the statistic
    the mean over strata of sum(num_a) / sum(den_a) - sum(num_b) / sum(den_b) (each side's items first
    averaged over its drawn seeds). With every denominator 1 it equals `paired_bootstrap` exactly.
    Replicates whose draw has an empty denominator are left out; None when the observed one is empty."""
    arrays = [tuple(np.atleast_2d(np.asarray(x, float)) for x in s) for s in strata]
    arrays = [s for s in arrays if s[0].shape[1] > 0]
    if not arrays:
        return None
    s_a, s_b = arrays[0][0].shape[0], arrays[0][2].shape[0]
    observed = []
    for na, da, nb, db in arrays:
        dens = da.mean(axis=0).sum(), db.mean(axis=0).sum()
        if not all(dens):
            return None
        observed.append(na.mean(axis=0).sum() / dens[0] - nb.mean(axis=0).sum() / dens[1])
    rng = np.random.default_rng(seed)
    w_a, w_b = seed_weights(rng, s_a, iters), seed_weights(rng, s_b, iters)
    stats = np.zeros(iters)
    with np.errstate(divide="ignore", invalid="ignore"):
        for na, da, nb, db in arrays:
            idx = rng.integers(0, na.shape[1], size=(iters, na.shape[1]))  # (iters, n): items drawn
            stats += _drawn_ratio(w_a, na, da, idx) - _drawn_ratio(w_b, nb, db, idx)
    stats = stats[np.isfinite(stats)] / len(arrays)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return Delta(float(np.mean(observed)), float(lo), float(hi), sum(s[0].shape[1] for s in arrays), s_a, s_b)


def _drawn_ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per replicate: sum over the drawn items of the seed-weighted numerators over that of the denominators."""
    drawn = np.take_along_axis(w @ num, idx, axis=1).sum(axis=1)
    return drawn / np.take_along_axis(w @ den, idx, axis=1).sum(axis=1)


def delta_of(pairs: dict[tuple[str, str], RunPairs], variant: str, reference: str, langs: list[str],
             stat: str, iters: int, seed: int) -> Delta | None:  # fmt: skip
    """`stat` of `variant` minus `reference` over `langs` (strata), each side on its runs that have every
    language, items aligned on the ids common to every run of both sides."""
    sides = [sorted(set.intersection(*(set(pairs.get((name, lang), {})) for lang in langs)))
             for name in (variant, reference)]  # fmt: skip
    if not sides[0] or not sides[1]:
        return None
    strata = []
    for lang in langs:
        parts = [[{k: pp for k, p in pairs[(name, lang)][r].items() if (pp := p.parts(stat)) is not None}
                  for r in side] for name, side in zip((variant, reference), sides, strict=True)]  # fmt: skip
        num_a, num_b, _ = align(*[[{k: v[0] for k, v in run.items()} for run in side] for side in parts])
        den_a, den_b, _ = align(*[[{k: v[1] for k, v in run.items()} for run in side] for side in parts])
        strata.append((num_a, den_a, num_b, den_b))
    if stat in RATIOS:
        return ratio_bootstrap(strata, iters=iters, seed=seed)
    return paired_bootstrap([(na, nb) for na, _, nb, _ in strata], iters=iters, seed=seed)


# -- the report's consistency section -----------------------------------------------------------------


def build_consistency(runs: list[RunRecord], frame: pd.DataFrame, benches: list[BenchReport], out: Path,
                      iters: int = 2000, seed: int = 0) -> list[ConsistencyBench]:  # fmt: skip
    """One `ConsistencyBench` per benchmark x protocol of `frame` (with a `bench` column, `with_bench`),
    in the order of `benches`; benchmarks left out carry their note. The plots go to `out/plots`."""
    if frame.empty:
        return []
    by_name = {r.name: r for r in runs}
    tables = {b.bench: b for b in benches}
    found = []
    for name in [b.bench for b in benches]:
        sub = frame[frame.bench == name]
        if not sub.empty:
            found.append(consistency_bench(name, sub, by_name, tables[name], out, iters, seed))
    return found


def consistency_bench(name: str, sub: pd.DataFrame, by_name: dict[str, RunRecord], table: BenchReport,
                      out: Path, iters: int, seed: int) -> ConsistencyBench:  # fmt: skip
    benchmark = str(sub.benchmark.iloc[0])
    cb = ConsistencyBench(name, benchmark, PARALLEL.get(benchmark, ""))
    if benchmark not in PARALLEL:
        cb.excluded = True
        cb.notes.append(NOT_PARALLEL.get(benchmark, "not a benchmark of the catalog: whether its items are "
                                         "parallel is unknown, so it is left out"))  # fmt: skip
        return cb
    pairs: dict[tuple[str, str], RunPairs] = defaultdict(dict)
    no_english: dict[str, list[str]] = defaultdict(list)
    mismatched: dict[str, int] = defaultdict(int)
    for run_name, rows in sub.groupby("run", sort=False):
        tasks = {row.lang: (row.task, row.metric, row.variant) for row in rows.itertuples()}
        run = by_name[str(run_name)]
        for lang, (task, metric, variant) in tasks.items():
            if lang == "en":
                continue
            if "en" not in tasks:
                no_english[f"{variant} seed={run.seed}"].append(lang)
                continue
            found, bad = run_pairs(cb.compare, metric, run.samples(task), run.samples(tasks["en"][0]))
            mismatched[lang] = max(mismatched[lang], bad)
            if found:
                pairs[(variant, lang)][run.name] = found
    for who, langs in no_english.items():
        cb.notes.append(f"no English result in the same run, left out: {who} ({', '.join(langs)})")
    for lang, bad in mismatched.items():
        if bad:
            cb.notes.append(f"{lang}: {bad} item(s) whose gold differs from the English gold (not the same "
                            "question) left out")  # fmt: skip
    langs = [lang for lang in table.langs if lang != "en" and any(k[1] == lang for k in pairs)]
    if not langs:
        cb.excluded = True
        cb.notes.insert(0, "no language paired with English in the same run")
        return cb
    cb.columns = [*langs, AVG_NON_EN] if len(langs) > 1 else langs
    cb.variants = variant_order(sorted({v for v, _ in pairs}))
    for variant in cb.variants:
        for lang in langs:
            if (variant, lang) in pairs:
                cb.cells[(variant, lang)] = cell_of(pairs[(variant, lang)], _caveat(table, variant, [lang]))
        if AVG_NON_EN in cb.columns and all((variant, lang) in cb.cells for lang in langs):
            cb.cells[(variant, AVG_NON_EN)] = average_cell([cb.cells[(variant, lang)] for lang in langs],
                                                           _caveat(table, variant, langs))  # fmt: skip
    for reference in REFERENCES:
        if reference in BASELINE_ROWS or reference not in cb.variants:
            continue
        cb.deltas[reference] = {
            variant: {column: _deltas(cb, pairs, table, variant, reference, column, iters, seed)
                      for column in cb.columns}
            for variant in cb.variants if variant != reference
        }  # fmt: skip
    cb.plot = consistency_plot(cb, out)
    return cb


def _caveat(table: BenchReport, variant: str, langs: list[str]) -> str:
    where = table.collapsed_in(variant, [*langs, "en"])
    return f"collapsed in {', '.join(where)}" if where else ""


def _deltas(cb: ConsistencyBench, pairs: dict[tuple[str, str], RunPairs], table: BenchReport, variant: str,
            reference: str, column: str, iters: int, seed: int) -> dict[str, Delta | None]:  # fmt: skip
    langs = cb.column_langs(column)
    caveat = degenerate(table, variant, reference, [*langs, "en"])
    found: dict[str, Delta | None] = {}
    for stat in cb.stats:
        d = delta_of(pairs, variant, reference, langs, stat, iters, seed)
        found[stat] = None if d is None else replace(d, caveat=caveat)
    return found


def consistency_plot(cb: ConsistencyBench, out: Path) -> str:
    """Grouped bars per language and variant: same answer as English (when comparable) and lost in transfer."""
    panels: dict[str, dict[str, list[float]]] = {}

    def value(variant: str, column: str, stat: str) -> float:
        cell = cb.cells.get((variant, column))
        return np.nan if cell is None or cell.values[stat] is None else float(cell.values[stat])

    for stat in ("agreement", "lost") if cb.compare else ("acc_en_right", "lost"):
        panels[f"{STATS[stat]} (%)"] = {v: [value(v, c, stat) for c in cb.columns] for v in cb.variants}
    path = plots.consistency_bars(cb.columns, panels, f"{cb.bench}: consistency with English",
                                  out / "plots" / f"consistency_{cb.bench}.png")  # fmt: skip
    return str(path.relative_to(out))

"""`harness report`: from finished runs to `index.html` (+ `index.md`, CSV files, PNG plots, per-item
pages) in one folder that opens from disk.

What it computes (`build_report`), per benchmark and protocol:
- a score table: variants (method + chosen options) as rows, languages as columns (non-English first,
  their average, then English apart, then the average of all), means over seeds, best cell marked;
- deltas against vanilla SFT and against the zero-shot model with paired bootstrap 95 % intervals over
  items and seeds (`harness.reports.stats`), and the item counts behind them;
- figures: per-language bars, the Decision Maker's layer choices of every CC run, accuracy against a
  fixed source layer, W_T's MSE and accuracy against M, training loss.
`harness.reports.write.write_report` renders it (`harness.reports.html`, `harness.reports.markdown`) next to the CSV files. The figures
of a method's runs come from the method (`Method.report_figures`), so the report names no method.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.method import METHODS
from harness.core.provenance import describe
from harness.reports import plots
from harness.reports.alignment import AlignmentSection, alignment_section
from harness.reports.answer_language import LanguageSection, build_answer_language
from harness.reports.benches import (
    BASELINE_ROWS,
    REFERENCES,
    BenchReport,
    build_benches,
    with_bench,
)
from harness.reports.consistency import ConsistencyBench, build_consistency
from harness.reports.figures import Figure, FigureContext, answers_figure, loss_figure
from harness.reports.runs import RunRecord, environments_of, load_runs, variant_order
from harness.reports.table import frame_of

log = logging.getLogger(__name__)


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
    alignment: AlignmentSection | None = None  # with English, per layer (`harness analyze`)
    consistency: list[ConsistencyBench] = field(default_factory=list)  # per benchmark, with English
    answer_language: list[LanguageSection] = field(default_factory=list)  # per `gen` benchmark



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
    ctx = FigureContext(runs, with_bench(frame) if not frame.empty else frame, benches, out)
    consistency = build_consistency(runs, ctx.frame, benches, out, iters, seed)
    for method in dict.fromkeys(r.method for r in runs):  # figures of the methods present, in run order
        if method in METHODS:
            for section, items in METHODS.get(method).report_figures(ctx).items():
                figures[section].extend(items)
    loss = loss_figure(runs, out)
    if loss:
        figures["training loss"].append(loss)
    answer_language, notes = build_answer_language(runs, out)  # the language of each `gen` output
    for reference, name in REFERENCES.items():
        if reference in BASELINE_ROWS:
            continue
        if benches and not any(reference in b.deltas for b in benches):
            notes.append(f"no '{reference}' run among the reports' runs: no deltas against {name}")
    envs = environments_of(runs)
    if len(envs) > 1:
        notes.append(f"these runs were produced by {len(envs)} versions of the code or its libraries ("
                     + "; ".join(f"{i}: {describe(e)}" for i, e in envs.items())
                     + "): the Runs section says which run and phase each produced")  # fmt: skip
    unrecorded = [r.name for r in runs if not r.environments()]
    if unrecorded:
        notes.append(f"{len(unrecorded)} run(s) stored before provenance was recorded: their code version is unknown")
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
        alignment=alignment_section(runs, out),
        consistency=consistency,
        answer_language=answer_language,
    )



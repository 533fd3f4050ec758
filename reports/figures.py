"""Figures of a report: the `Figure` record, the `FigureContext` that figure builders (the report's own and
those of methods, `Method.report_figures`) receive, and the helpers they share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports import plots
from harness.reports.benches import BenchReport
from harness.reports.runs import RunRecord, natural_key
from harness.tasks.utils import OPTION_LABELS

log = logging.getLogger(__name__)



@dataclass
class Figure:
    path: str  # relative to the report folder
    title: str
    caption: str = ""




@dataclass
class FigureContext:
    """What a figure builder gets: the report's runs, their long frame of scores (with a `bench` column),
    the benchmark tables, and the report folder (figures go to `out / "plots"`, paths relative to `out`)."""

    runs: list[RunRecord]
    frame: pd.DataFrame
    benches: list[BenchReport]
    out: Path

    def runs_of(self, method: str) -> list[RunRecord]:
        return [r for r in self.runs if r.method == method]

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def answers_figure(bench: BenchReport, out: Path) -> str:
    """Predicted-answer distribution of every variant against the gold distribution, per language."""
    benchmark = bench.bench.split("_")[0]
    panels = {}
    for lang in bench.langs:
        rows = [("gold", bench.gold_shares.get(lang, {}))]
        rows += [(v, bench.answers[(v, lang)].shares) for v in bench.scores.index if (v, lang) in bench.answers]
        panels[lang] = rows
    path = plots.answer_distribution(OPTION_LABELS[benchmark], panels, f"{bench.bench}: predicted answers against gold",
                                     out / "plots" / f"answers_{bench.bench}.png")  # fmt: skip
    return str(path.relative_to(out))


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def non_en_average(frame: pd.DataFrame, bench: BenchReport) -> pd.Series:
    """Per run: the average over the table's non-English languages (NaN when one is missing)."""
    sub = frame[frame.bench == bench.bench]
    non_en = [lang for lang in bench.langs if lang != "en"] or bench.langs
    wide = sub.pivot_table(index="run", columns="lang", values="value", aggfunc="mean").reindex(
        columns=non_en
    )
    return wide.mean(axis=1, skipna=False)


def mean_spread(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float((arr.max() - arr.min()) / 2)




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



"""Read finished runs into one pandas frame and pivot it into per-language tables."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from harness.plumbing.io import atomic_write_text
from harness.reports.runs import RunRecord, load_runs

log = logging.getLogger(__name__)

COLUMNS = [
    "run",
    "method",
    "benchmark",
    "protocol",
    "lang",
    "metric",
    "value",
    "n",
    "task",
    "seed",
    "variant",
    "chance",
    "majority",
    "top_answer",
    "top_share",
    "entropy",
    "no_answer",
    "collapsed",
    "unreadable",
]


def load_frame(paths: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run x task with the task's primary metric (x 100), the run's seed and its variant
    label (`harness.reports.runs.variant_labels`), the cell's baselines (x 100) and answer statistics
    (`harness.evaluation.diagnostics`; empty where the task has none). Runs that are not complete are left out and returned as the
    second value, so callers can warn about them."""
    runs, skipped = load_runs(paths)
    return frame_of(runs), skipped


def frame_of(runs: list[RunRecord]) -> pd.DataFrame:
    """The long frame (`COLUMNS`) of loaded runs."""
    rows = []
    for run in runs:
        for task in run.tasks:
            res = run.result(task)
            metric = res["primary_metric"]
            value = res["metrics"].get(metric)
            diag = run.diagnostics(task)
            base, answers = diag.get("baselines") or {}, diag.get("answers") or {}
            rows.append({
                "run": run.name, "method": run.method, "benchmark": res["benchmark"],
                "protocol": res["protocol"], "lang": res["lang"] or "-", "metric": metric,
                "value": None if value is None else 100.0 * value, "n": res["n"], "task": task,
                "seed": run.seed, "variant": run.variant,
                "chance": _pct(base.get("chance")), "majority": _pct(base.get("majority")),
                "top_answer": answers.get("top_answer"), "top_share": answers.get("top_share"),
                "entropy": answers.get("entropy"), "no_answer": answers.get("no_answer"),
                "collapsed": answers.get("collapsed"), "unreadable": answers.get("unreadable"),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def language_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: benchmark/protocol/metric x run; columns: languages, then `avg` and `avg non-en`."""
    if frame.empty:
        return pd.DataFrame()
    frame = frame.assign(bench=frame.benchmark + "_" + frame.protocol.where(frame.protocol != "", "-"))
    table = frame.pivot_table(
        index=["bench", "metric", "method", "run"], columns="lang", values="value", aggfunc="first"
    )
    langs = list(table.columns)
    table["avg"] = table[langs].mean(axis=1)
    non_en = [c for c in langs if c != "en"]
    if "en" in langs and non_en:
        table["avg non-en"] = table[non_en].mean(axis=1)
    return table.round(1)


def flagged_table(frame: pd.DataFrame) -> pd.DataFrame:
    """`language_table` as text cells with the C / N flags of each cell, and per benchmark the chance and
    majority rows (means over the runs' evaluated items, which are the same items for every run)."""
    table = language_table(frame)
    if table.empty:
        return table
    frame = frame.assign(bench=frame.benchmark + "_" + frame.protocol.where(frame.protocol != "", "-"))
    marks = frame.assign(flags=frame.collapsed.map({True: "C"}).fillna("") + frame.unreadable.map({True: "N"}).fillna(""))
    flags = marks.pivot_table(index=["bench", "metric", "method", "run"], columns="lang", values="flags", aggfunc="first")
    langs = [c for c in table.columns if c in flags.columns]
    text = table.map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    for lang in langs:
        text[lang] = (text[lang] + " " + flags[lang].reindex(text.index).fillna("")).str.strip()
    rows = []
    for bench, sub in text.reset_index().groupby("bench", sort=False):
        for name in ("chance", "majority"):
            values = frame[frame.bench == bench].groupby("lang")[name].mean()
            if values.notna().any():
                rows.append({"bench": bench, "metric": sub.metric.iloc[0], "method": f"_{name}_", "run": "",
                             **{lang: f"{values[lang]:.1f}" for lang in values.index if pd.notna(values[lang])}})  # fmt: skip
        rows.extend(sub.to_dict("records"))
    return pd.DataFrame(rows, columns=["bench", "metric", "method", "run", *table.columns]).fillna("")


def counts_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Item counts behind each cell (benchmark x language)."""
    if frame.empty:
        return pd.DataFrame()
    frame = frame.assign(bench=frame.benchmark + "_" + frame.protocol.where(frame.protocol != "", "-"))
    return frame.pivot_table(index="bench", columns="lang", values="n", aggfunc="max")


def write_tables(frame: pd.DataFrame, out: Path, skipped: list[str]) -> list[Path]:
    """Write `results.md` and `results.csv` (long format: one row per run x task) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    table = flagged_table(frame)
    md = ["# Per-language results", "", "Scores x 100 (accuracy, or ROUGE-L F1 for xlsum), one row per run; "
          "the chance and majority rows of each classification benchmark come from the gold labels of the "
          "evaluated items. C: collapsed (one answer for >= 80 % of the items); N: no answer could be read from "
          ">= 20 % of the outputs. index.md adds B (not above the majority baseline) and the deltas.", ""]  # fmt: skip
    if skipped:
        md += ["**Skipped (not complete):** " + ", ".join(skipped), ""]
    if not table.empty:
        md += [table.to_markdown(index=False, disable_numparse=True), "", "## Items per cell", ""]
        md += [counts_table(frame).reset_index().to_markdown(index=False), ""]
    paths = [out / "results.md", out / "results.csv"]
    atomic_write_text(paths[0], "\n".join(md))
    atomic_write_text(paths[1], frame.to_csv(index=False))
    return paths

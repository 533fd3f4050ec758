"""`harness report`'s output folder: `index.html`, `index.md`, CSV files and the plots, written into a
temporary folder and swapped in whole (`write_report`)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_text
from harness.reports import html, markdown
from harness.reports.alignment import write_csv as write_alignment_csv
from harness.reports.answer_language import csv_rows as answer_language_rows
from harness.reports.benches import BASELINE_ROWS
from harness.reports.consistency_render import csv_rows as consistency_rows
from harness.reports.report import Report, build_report
from harness.reports.table import frame_of, write_tables

log = logging.getLogger(__name__)


def write_csv(report: Report, out: Path) -> list[Path]:
    """`scores.csv` (variant x benchmark x column, baseline rows included, with the cell's flags and answer
    statistics) and `deltas.csv` (with intervals, item counts and why a delta is not significant)."""
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
    if report.consistency:  # consistency with English on parallel items (`harness.reports.consistency`)
        paths.append(out / "consistency.csv")
        atomic_write_text(paths[-1], pd.DataFrame(consistency_rows(report.consistency)).to_csv(index=False))
    if report.answer_language:  # the language of each `gen` output (`harness.reports.answer_language`)
        paths.append(out / "answer_language.csv")
        atomic_write_text(paths[-1], pd.DataFrame(answer_language_rows(report.answer_language)).to_csv(index=False))
    return paths


REPORT_MARKER = ".harness-report"


def write_report(paths: list[str], out: Path, iters: int = 2000, seed: int = 0) -> tuple[Report, list[Path]]:
    """Write the whole report folder; returns the report and the files written (index.html first).

    The report is built in a temporary folder beside `out` and swapped in by renames, so `out` holds
    either the previous report or the new one, never a mix (a killed report leaves the old one). An
    existing `out` is replaced only if it is empty or a report this command wrote (it holds
    `.harness-report`): the command never deletes a folder of other files."""
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
        written += write_alignment_csv(report.alignment, tmp)
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

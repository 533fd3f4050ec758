"""`harness report`: the HTML report (+ Markdown, CSV, plots, per-item pages) of finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.reports.console import render
from harness.reports.write import write_report


def add(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="HTML report (+ Markdown, CSV, plots, per-item pages) from finished runs")
    rep.add_argument("runs", nargs="+", help="run folders, or folders holding runs (e.g. runs/)")
    rep.add_argument("--out", default="report", help="output folder (default report)")
    rep.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    rep.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    report, paths = write_report(args.runs, Path(args.out), iters=args.bootstrap)
    print(render(report.benches))
    for p in paths:
        print(f"wrote {p}")
    return 0

"""`harness report`: the HTML report (+ Markdown, CSV, plots, per-item pages) of finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.orchestration.options import check_output_folder
from harness.plumbing.errors import HarnessError
from harness.reports.console import render
from harness.reports.write import write_report


def add(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="HTML report (+ Markdown, CSV, plots, per-item pages) from finished runs")
    rep.add_argument("runs", nargs="+", help="run folders, or folders holding runs (e.g. runs/)")
    rep.add_argument("--out", default="report", help="output folder (default report)")
    rep.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    rep.set_defaults(func=command)


# A 95 % percentile interval needs at least 40 replicates to have a distinct 2.5th and 97.5th percentile.
MIN_BOOTSTRAP = 40


def command(args: argparse.Namespace) -> int:
    if args.bootstrap < MIN_BOOTSTRAP:
        raise HarnessError(f"--bootstrap {args.bootstrap}: at least {MIN_BOOTSTRAP} replicates are needed for a 95 % "
                           "interval (default 2000)")  # fmt: skip
    check_output_folder(Path(args.out), "--out")
    report, paths = write_report(args.runs, Path(args.out), iters=args.bootstrap)
    print(render(report.benches))
    for p in paths:
        print(f"wrote {p}")
    return 0

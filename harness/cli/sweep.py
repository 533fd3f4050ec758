"""`harness sweep FILE`: a grid of runs from a sweep file, reused and resumed like `harness run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.orchestration.options import check_inputs
from harness.orchestration.sweep import load_sweep, plan_lines, run_sweep
from harness.plumbing.errors import HarnessError
from harness.reports.write import write_report
from harness.training import distributed


def add(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="run a grid of runs from a sweep file (reused and resumed like `run`)")
    sw.add_argument("file", help="sweep file (YAML), e.g. sweeps/wt_samples.yaml")
    sw.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sw.add_argument("--output", help="run store folder (default: the file's `output`, else runs)")
    sw.add_argument("--report", metavar="DIR", help="write the report of the sweep's runs into DIR afterwards")
    sw.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    # Under a data-parallel launch every process runs the sweep's runs one after another (each data-parallel),
    # and only the main process prints and writes the report.
    main = distributed.is_main()
    say = print if main else _silent
    sweep = load_sweep(args.file, args.output)
    for line in plan_lines(sweep):
        say(line)
    if args.dry_run:
        return 0
    check_inputs(sweep.runs, sweep.output)
    result = run_sweep(sweep, progress=say)
    if not main:
        return 0
    if args.report:
        _, paths = write_report([str(d) for d in result.run_dirs], Path(args.report))
        print(f"wrote {paths[0]}")
    if result.failed:
        raise HarnessError(f"{len(result.failed)} of {len(sweep.runs)} runs failed (see their status.json): "
                           + "; ".join(f"{run_id}: {error}" for run_id, error in result.failed))  # fmt: skip
    return 0


def _silent(line: str) -> None:
    pass

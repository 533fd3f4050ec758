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
    if distributed.world_size() > 1:
        raise HarnessError("`harness sweep` runs in one process; under accelerate launch use `harness run` "
                           "(data-parallel training, then the main process evaluates)")  # fmt: skip
    sweep = load_sweep(args.file, args.output)
    for line in plan_lines(sweep):
        print(line)
    if args.dry_run:
        return 0
    check_inputs(sweep.runs, sweep.output)
    result = run_sweep(sweep)
    if args.report:
        _, paths = write_report([str(d) for d in result.run_dirs], Path(args.report))
        print(f"wrote {paths[0]}")
    if result.failed:
        raise HarnessError(f"{len(result.failed)} of {len(sweep.runs)} runs failed (see their status.json): "
                           + "; ".join(f"{run_id}: {error}" for run_id, error in result.failed))  # fmt: skip
    return 0

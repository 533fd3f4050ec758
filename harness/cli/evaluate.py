"""`harness eval`: evaluate an existing checkpoint folder (as the run of method `none` on it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import add_evaluation_arguments, command_of, given
from harness.orchestration.options import RunOptions, plan_runs
from harness.orchestration.pipeline import execute_all
from harness.plumbing.errors import HarnessError
from harness.reports.console import run_table


def add(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="evaluate an existing checkpoint")
    e.add_argument("--checkpoint", required=True, help="a Hugging Face checkpoint folder")
    add_evaluation_arguments(e, tasks_required=True)
    e.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise HarnessError(f"--checkpoint {checkpoint}: not a Hugging Face checkpoint folder (no config.json)")
    # `none` evaluates the checkpoint as it is (with its method's evaluator when a method owns it).
    options = RunOptions.parse({**given(args), "method": "none", "model": str(checkpoint.resolve())})
    planned = plan_runs(options)
    runs = execute_all(planned, options.output, command_of())
    if not runs:  # a process of a data-parallel launch other than the main one
        return 0
    for run in runs:
        print(f"run {run.id}: {run.dir}")
    print(run_table([str(run.dir) for run in runs], planned[0].ecfg.tasks))
    return 0

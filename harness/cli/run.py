"""`harness run`: train with one or more methods, evaluate, print the per-language table."""

from __future__ import annotations

import argparse

from harness.cli.analyze import analyze_runs
from harness.cli.common import add_evaluation_arguments, command_of, run_values
from harness.orchestration.dryrun import print_plan
from harness.orchestration.options import RunOptions, plan_runs
from harness.orchestration.pipeline import execute_all
from harness.plumbing.errors import HarnessError
from harness.reports.console import run_table


def add(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="train with one or more methods, evaluate, print the per-language table")
    r.add_argument("--config", help="YAML file of options (keys as below, e.g. train_limit: 100)")
    r.add_argument("--method", help="method name(s), comma-separated (see `harness methods`); default vanilla")
    r.add_argument("--model", help="Hugging Face model id or local checkpoint (default smollm2-135m-instruct)")
    t = r.add_argument_group("training")
    t.add_argument("--recipe", help="training-data recipe (see `harness recipes`); default mini-parallel")
    t.add_argument("--recipe-path", help="file, folder or dataset for recipes that read one (jsonl, aya, llamafactory)")
    t.add_argument("--train-langs", help="train on these languages only, comma-separated (e.g. en)")
    t.add_argument("--train-limit", help="training examples per language (default 200)")
    t.add_argument("--seeds", help="several seeds, comma-separated: one run each")
    t.add_argument("--profile", help="training defaults: paper or cpu (default: cpu without a GPU)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set epochs=2 --set lora=true")  # fmt: skip
    t.add_argument("--method-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --method-opt detach_english=true")  # fmt: skip
    add_evaluation_arguments(r)
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (runs, tasks, data, training arguments, model size) without weights")  # fmt: skip
    r.add_argument("--accelerate-config", metavar="FILE",
                   help="with --dry-run: plan for this accelerate launch config (processes, DeepSpeed/FSDP)")  # fmt: skip
    r.add_argument("--analyze", action="store_true",
                   help="then the alignment with English per layer of each run (as `harness analyze`)")  # fmt: skip
    r.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    values, name = run_values(args)
    options = RunOptions.parse(values, name)
    planned = plan_runs(options)
    if args.accelerate_config and not args.dry_run:
        raise HarnessError("--accelerate-config goes with --dry-run; to train with that file: accelerate launch "
                           f"--config_file {args.accelerate_config} -m harness.cli run ...")  # fmt: skip
    if args.dry_run:
        print_plan([p.config for p in planned], planned[0].refs, planned[0].ecfg, options.output,
                   accelerate_config=args.accelerate_config)  # fmt: skip
        return 0
    runs = execute_all(planned, options.output, command_of())
    if not runs:  # a process of a data-parallel launch other than the main one
        return 0
    for run in runs:
        print(f"run {run.id}: {run.dir}")
    print(run_table([str(run.dir) for run in runs], planned[0].ecfg.tasks))
    if args.analyze:  # not a run option: the run ids stay the same
        analyze_runs([str(run.dir) for run in runs])
    return 0

"""The `harness` command: thin argparse subcommands over plain functions.

    harness run --method vanilla --tasks sib200_mc --limit 50
    harness eval --checkpoint runs/<id>/model --tasks xnli_mc
    harness tasks | harness methods | harness recipes
    harness report runs/ --out report/
    harness sweep sweeps/wt_samples.yaml --dry-run
    harness translate --model facebook/nllb-200-distilled-600M --tgt-lang sw,yo --out translations.jsonl
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.core.config import RUN_OPTIONS
from harness.plumbing.errors import HarnessError
from harness.training import distributed

log = logging.getLogger("harness")

# Options a --config file may set, with their defaults (the CLI wins over the file, the file over these).
RUN_DEFAULTS: dict[str, Any] = {**RUN_OPTIONS, "output": "runs"}


def _csv(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{name} {value!r}: expected a positive whole number") from None
    if number <= 0:
        hint = " (omit it to use every item)" if name.endswith("limit") else ""
        raise HarnessError(f"{name} {value}: must be at least 1{hint}")
    return number


def _whole(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{name} {value!r}: expected a whole number") from None


def _pairs(items: list[str] | dict[str, Any], flag: str) -> dict[str, Any]:
    """`key=value` strings (values parsed as YAML scalars) or a mapping from a config file."""
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise HarnessError(f"{flag} {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def _merged(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    from harness.core.config import load_config_file

    values = dict(defaults)
    if getattr(args, "config", None):
        file_values = load_config_file(args.config)
        for key in file_values:
            norm = key.replace("-", "_")
            if norm not in defaults:
                from harness.plumbing.errors import unknown

                raise unknown("option", key, [k.replace("_", "-") for k in defaults], args.config)
            values[norm] = file_values[key]
    for key in defaults:
        given = getattr(args, key, None)
        if given is not None and given != [] and given is not False:
            values[key] = given
    return values


# -- subcommands --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from harness.core.config import EvalConfig, RunConfig
    from harness.data.base import data_dir
    from harness.evaluation.evaluate import resolve_tasks
    from harness.orchestration.pipeline import execute
    from harness.training.settings import default_profile, resolve_settings
    from methods import METHODS

    v = _merged(args, RUN_DEFAULTS)
    methods = _csv(v["method"]) or []
    for m in methods:
        METHODS.get(m, "--method")
    refs = resolve_tasks(_csv(v["tasks"]) or [], _csv(v["langs"]))
    data_dir()  # fail before any model work when the shared data is missing
    limit = _positive("--limit", v["limit"])
    seeds = [_whole("--seeds", s) for s in _csv(v["seeds"])] if v["seeds"] else [_whole("--seed", v["seed"])]
    profile = v["profile"] or default_profile()
    settings = resolve_settings(profile, _pairs(v["set"], "--set"))
    method_opts = _pairs(v["method_opt"], "--method-opt")
    train_langs = _csv(v["train_langs"])
    if train_langs:
        from harness.data.base import LANGUAGES, check_languages

        check_languages(train_langs, LANGUAGES, "--train-langs")
    batch_size = _positive("--batch-size", v["batch_size"])
    ecfg = EvalConfig(tasks=[r.name for r in refs], limit=limit, batch_size=batch_size,
                      apply_chat_template=not v["no_chat_template"])  # fmt: skip
    command = "harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    known_opts = {k for m in methods for k in METHODS.get(m).defaults}
    configs = []
    for method in methods:
        cls = METHODS.get(method)
        if set(method_opts) - known_opts:
            cls.resolve_options(method_opts)  # raises the error naming the unknown option
        opts = cls.resolve_options({k: val for k, val in method_opts.items() if k in cls.defaults})
        opts = {k: val for k, val in opts.items() if k in method_opts}  # the id holds what was chosen
        cls(**opts).check_settings(settings)  # option values and their fit with the training settings
        for seed in seeds:
            configs.append(RunConfig(
                method=method, model=v["model"], method_options=opts, recipe=v["recipe"],
                train_langs=train_langs, train_limit=_positive("--train-limit", v["train_limit"]),
                recipe_path=v["recipe_path"], seed=seed, profile=profile, train=settings.to_dict(),
                trust_remote_code=bool(v["trust_remote_code"]),
            ))  # fmt: skip
    if getattr(args, "accelerate_config", None) and not args.dry_run:
        raise HarnessError("--accelerate-config goes with --dry-run; to train with that file: accelerate launch "
                           f"--config_file {args.accelerate_config} -m harness.cli run ...")  # fmt: skip
    if getattr(args, "dry_run", False):
        from harness.orchestration.dryrun import print_plan

        print_plan(configs, refs, ecfg, Path(v["output"]), accelerate_config=args.accelerate_config)
        return 0
    if distributed.world_size() > 1:  # data parallel: every process trains, then the main one evaluates alone
        for cfg in configs:
            execute(cfg, refs, ecfg, Path(v["output"]), command, train_only=True)
        if not distributed.leave_group():
            return 0
    # Check every name that is only used later, before any run folder is created.
    from harness.core.models import resolve_model
    from harness.data.recipes import RECIPES

    RECIPES.get(v["recipe"], "--recipe")
    for model in dict.fromkeys(c.model for c in configs):
        resolve_model(model)
    run_dirs = []
    for cfg in configs:
        run = execute(cfg, refs, ecfg, Path(v["output"]), command)
        run_dirs.append(str(run.dir))
        print(f"run {run.id}: {run.dir}")
    print_table(run_dirs, ecfg.tasks)
    return 0


def print_table(run_dirs: list[str], tasks: list[str] | None = None) -> None:
    """Per benchmark: chance and majority rows, every variant's scores with their flags, the most
    frequent answers and the deltas with intervals (`reports.console`), for `tasks` (default: all)."""
    from reports import console
    from reports.benches import build_benches
    from reports.runs import load_runs
    from reports.table import frame_of

    runs, _ = load_runs(run_dirs)
    frame = frame_of(runs)
    if tasks is not None:
        frame = frame[frame.task.isin(tasks)]
    print(console.render(build_benches(runs, frame, iters=2000, seed=0)))


def _single_process(command: str) -> None:
    from harness.training import distributed

    if distributed.world_size() > 1:
        raise HarnessError(f"`harness {command}` runs in one process; under accelerate launch use `harness run` "
                           "(data-parallel training, then the main process evaluates)")  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    _single_process("eval")
    from harness.core.config import EvalConfig, RunConfig
    from harness.evaluation.evaluate import resolve_tasks
    from harness.orchestration.pipeline import execute

    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise HarnessError(f"--checkpoint {checkpoint}: not a Hugging Face checkpoint folder (no config.json)")
    refs = resolve_tasks(_csv(args.tasks) or [], _csv(args.langs))
    ecfg = EvalConfig(tasks=[r.name for r in refs], limit=_positive("--limit", args.limit),
                      batch_size=_positive("--batch-size", args.batch_size),
                      apply_chat_template=not args.no_chat_template)  # fmt: skip
    # `none` evaluates the checkpoint as it is (with the CC evaluator when it holds CC artifacts).
    cfg = RunConfig(method="none", model=str(checkpoint.resolve()), seed=args.seed,
                    trust_remote_code=args.trust_remote_code)  # fmt: skip
    command = "harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run = execute(cfg, refs, ecfg, Path(args.output), command)
    print(f"run {run.id}: {run.dir}")
    print_table([str(run.dir)], ecfg.tasks)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from tasks.catalog import BENCHMARKS, item_count

    print(f"{'benchmark':<12} {'protocols':<10} {'metric':<14} languages (items)")
    for b in BENCHMARKS.values():
        metrics = "/".join(dict.fromkeys(b.metrics[p] for p in b.protocols))
        langs = " ".join(f"{lang}({item_count(b.name, lang)})" for lang in b.languages)
        print(f"{b.name:<12} {','.join(b.protocols):<10} {metrics:<14} {langs}")
    print("\nNames: <benchmark> (paper protocol), <benchmark>_<protocol>, <benchmark>_<protocol>_<lang>, all,")
    print("or any task lm-eval ships. Protocols: gen = chat template, greedy, <= 40 new tokens, answer read")
    print("from the text (the paper's); mc = options ranked by log-likelihood.")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name)
        print(f"{name:<10} {cls.description}")
        if cls.defaults:
            print(" " * 11 + "options: " + ", ".join(f"{k}={v}" for k, v in cls.defaults.items()))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from harness.data.recipes import describe_recipes

    for name, text in describe_recipes().items():
        print(f"{name:<14} {text}")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from harness.data.translate import translate_recipe

    for name in ("batch_size", "max_new_tokens", "num_beams"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    stats = translate_recipe(
        model=args.model, tgt_langs=_csv(args.tgt_lang) or [], out=Path(args.out), recipe=args.recipe,
        recipe_path=args.recipe_path, train_langs=_csv(args.train_langs),
        train_limit=None if args.train_limit == "all" else _positive("--train-limit", args.train_limit),
        seed=args.seed, src_lang=args.src_lang, by_line=not args.whole, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, trust_remote_code=args.trust_remote_code,
    )  # fmt: skip
    print(f"{stats.units} texts: {stats.cached} cached, {stats.translated} translated in {stats.batches} batches "
          f"-> {args.out}")  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.write import write_report

    report, paths = write_report(args.runs, Path(args.out), iters=args.bootstrap)
    from reports import console

    print(console.render(report.benches))
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    _single_process("sweep")
    from harness.orchestration.sweep import load_sweep, plan_lines, run_sweep

    sweep = load_sweep(args.file, args.output)
    for line in plan_lines(sweep):
        print(line)
    if args.dry_run:
        return 0
    result = run_sweep(sweep)
    if args.report:
        from reports.write import write_report

        report, paths = write_report([str(d) for d in result.run_dirs], Path(args.report))
        print(f"wrote {paths[0]}")
    if result.failed:
        raise HarnessError(f"{len(result.failed)} of {len(sweep.runs)} runs failed (see their status.json): "
                           + "; ".join(f"{run_id}: {error}" for run_id, error in result.failed))  # fmt: skip
    return 0


# -- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train with one or more methods, evaluate, print the per-language table")
    r.add_argument("--config", help="YAML file of options (keys as below, e.g. train_limit: 100)")
    r.add_argument("--method", help="method name(s), comma-separated (see `harness methods`); default vanilla")
    r.add_argument("--tasks", help="task names, comma-separated (see `harness tasks`); default sib200_gen")
    r.add_argument("--langs", help="evaluate only these languages, comma-separated")
    r.add_argument("--limit", help="at most this many items per task and language")
    r.add_argument("--model", help="Hugging Face model id or local checkpoint (default smollm2-135m-instruct)")
    r.add_argument("--recipe", help="training-data recipe (see `harness recipes`); default mini-parallel")
    r.add_argument("--recipe-path", help="file or dataset for recipes that read one (jsonl, aya)")
    r.add_argument("--train-langs", help="train on these languages only, comma-separated (e.g. en)")
    r.add_argument("--train-limit", help="training examples per language (default 200)")
    r.add_argument("--seed", type=int, help="random seed (default 0)")
    r.add_argument("--seeds", help="several seeds, comma-separated: one run each")
    r.add_argument("--profile", help="training defaults: paper or cpu (default: cpu without a GPU)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set epochs=2 --set lora=true")  # fmt: skip
    r.add_argument("--method-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --method-opt detach_english=true")  # fmt: skip
    r.add_argument("--output", help="run store folder (default runs)")
    r.add_argument("--batch-size", type=int, help="evaluation batch size (default 8)")
    r.add_argument("--trust-remote-code", action="store_true", default=None, help="allow model code from the Hub")
    r.add_argument("--no-chat-template", action="store_true", default=None, help="evaluate without the chat template")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (runs, tasks, data, training arguments, model size) without weights")  # fmt: skip
    r.add_argument("--accelerate-config", metavar="FILE",
                   help="with --dry-run: plan for this accelerate launch config (processes, DeepSpeed/FSDP)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("eval", help="evaluate an existing checkpoint")
    e.add_argument("--checkpoint", required=True, help="a Hugging Face checkpoint folder")
    e.add_argument("--tasks", required=True, help="task names, comma-separated")
    e.add_argument("--langs", help="only these languages")
    e.add_argument("--limit", help="at most this many items per task")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--output", default="runs", help="run store folder (default runs)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--trust-remote-code", action="store_true")
    e.add_argument("--no-chat-template", action="store_true")
    e.set_defaults(func=cmd_eval)

    sub.add_parser("tasks", help="list benchmarks, protocols, languages and item counts").set_defaults(func=cmd_tasks)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=cmd_methods)
    sub.add_parser("recipes", help="list the training-data recipes").set_defaults(func=cmd_recipes)

    t = sub.add_parser("translate", help="translate a recipe's instructions with a translation model (cached, resumable)")
    t.add_argument("--model", required=True, help="a Hugging Face translation model: NLLB-200, M2M100, MarianMT (id or folder)")
    t.add_argument("--tgt-lang", required=True, help="target languages, comma-separated (e.g. sw,yo)")
    t.add_argument("--src-lang", default="auto",
                   help="auto (each instruction from its own language; default) or a language: only text in it")  # fmt: skip
    t.add_argument("--out", required=True, help="JSONL translation file, also the cache (appended, resumable)")
    t.add_argument("--recipe", default="mini-parallel", help="training-data recipe (default mini-parallel)")
    t.add_argument("--recipe-path", help="file or dataset for recipes that read one (jsonl, aya)")
    t.add_argument("--train-langs", help="the recipe's languages to translate from, comma-separated")
    t.add_argument("--train-limit", default="200", help="examples per language as in `harness run` (default 200), or all")
    t.add_argument("--seed", type=int, default=0, help="the recipe's seed, as in `harness run` (default 0)")
    t.add_argument("--whole", action="store_true", help="translate each instruction as one text, not line by line")
    t.add_argument("--batch-size", type=int, default=16, help="texts per generate call (default 16)")
    t.add_argument("--max-new-tokens", type=int, default=256, help="at most this many tokens per translation")
    t.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    t.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    t.set_defaults(func=cmd_translate)

    rep = sub.add_parser("report", help="HTML report (+ Markdown, CSV, plots, per-item pages) from finished runs")
    rep.add_argument("runs", nargs="+", help="run folders, or folders holding runs (e.g. runs/)")
    rep.add_argument("--out", default="report", help="output folder (default report)")
    rep.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    rep.set_defaults(func=cmd_report)

    sw = sub.add_parser("sweep", help="run a grid of runs from a sweep file (reused and resumed like `run`)")
    sw.add_argument("file", help="sweep file (YAML), e.g. sweeps/wt_samples.yaml")
    sw.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sw.add_argument("--output", help="run store folder (default: the file's `output`, else runs)")
    sw.add_argument("--report", metavar="DIR", help="write the report of the sweep's runs into DIR afterwards")
    sw.set_defaults(func=cmd_sweep)
    return p


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _close_progress_bars() -> None:
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()
    sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    _quiet_libraries()
    if distributed.rank() > 0:  # the other processes of a data-parallel launch: their warnings only
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk, not the input: say which file, and that rerunning resumes
        if e.errno is None:
            print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 1
        where = f" ({e.filename})" if e.filename else ""
        hint = "; free space and" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ";"
        print(f"error: {e.strerror or e}{where}{hint} run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close_progress_bars()  # else a bar redrawn at exit would follow the message
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

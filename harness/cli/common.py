"""What the subcommands share: the argument groups of `run` and `eval`, reading their values (flags over a
`--config` file over the defaults) into raw run options, and the command line a run records."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import Any

from harness.core.config import load_config_file
from harness.orchestration.options import DEFAULTS, flag
from harness.plumbing.errors import unknown


def add_evaluation_arguments(p: argparse.ArgumentParser, tasks_required: bool = False) -> None:
    """The options `run` and `eval` share: what to evaluate, how, and where the run store is."""
    g = p.add_argument_group("evaluation")
    g.add_argument("--tasks", required=tasks_required,
                   help="task names, comma-separated (see `harness tasks`)" + ("" if tasks_required else "; default sib200_gen"))  # fmt: skip
    g.add_argument("--langs", help="evaluate only these languages, comma-separated")
    g.add_argument("--limit", help="at most this many items per task and language")
    g.add_argument("--batch-size", help="evaluation batch size (default 8)")
    g.add_argument("--no-chat-template", action="store_true", default=None, help="evaluate without the chat template")
    g.add_argument("--seed", help="random seed (default 0)")
    g.add_argument("--output", help="run store folder (default runs)")
    g.add_argument("--trust-remote-code", action="store_true", default=None, help="allow model code from the Hub")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given as flags (those left unset are absent)."""
    values = {}
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None and value != [] and value is not False:
            values[key] = value
    return values


def run_values(args: argparse.Namespace) -> tuple[dict[str, Any], Callable[[str], str]]:
    """Raw run options: the `--config` file's, overridden by the flags; and how an error names each
    option (`--limit` when given as a flag, `FILE: limit` when it came from the file)."""
    values: dict[str, Any] = {}
    config = getattr(args, "config", None)
    if config:
        for key, value in load_config_file(config).items():
            norm = key.replace("-", "_")
            if norm not in DEFAULTS:
                raise unknown("option", key, [k.replace("_", "-") for k in DEFAULTS], config)
            values[norm] = value
    flags = given(args)
    values.update(flags)
    return values, lambda key: flag(key) if key in flags or not config else f"{config}: {key}"


def command_of(argv: list[str] | None = None) -> str:
    """The command as typed (recorded in each run's config.yaml)."""
    return "harness " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))

"""One run-options model: what `harness run` (its flags or a `--config` file), `harness eval` and each point
of a sweep file ask for, parsed and validated the same way, and one expansion of it into planned runs.

    options = RunOptions.parse(values, flag_names)     # raw values (text from the command line, YAML scalars)
    planned = plan_runs(options)                       # one PlannedRun per method x seed, names checked
    check_inputs(planned)                              # what is only used later (recipe, model, data folder)

`run_label` is the one label format of a run (`cc wt_samples=10 seed=0`), and `command_line` the one place
that turns a planned run back into the `harness run` command that reproduces it.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core.config import EvalConfig, RunConfig
from harness.core.method import METHODS
from harness.data.base import LANGUAGES, check_languages, data_dir
from harness.data.models import local_model_config, resolve_model
from harness.data.recipes import RECIPES
from harness.evaluation.evaluate import TaskRef, resolve_tasks
from harness.plumbing.errors import HarnessError, unknown
from harness.training.settings import PROFILES, default_profile, resolve_settings

# The options of `harness run` (the keys of a --config file and of a sweep file) and their defaults.
DEFAULTS: dict[str, Any] = {
    "method": "vanilla",
    "tasks": "sib200_gen",
    "langs": None,
    "limit": None,
    "model": "smollm2-135m-instruct",
    "recipe": "mini-parallel",
    "recipe_path": None,
    "train_langs": None,
    "train_limit": 200,
    "seed": 0,
    "seeds": None,
    "profile": None,
    "set": {},
    "method_opt": {},
    "batch_size": 8,
    "trust_remote_code": False,
    "no_chat_template": False,
    "output": "runs",
}


def flag(key: str) -> str:
    """How the command line names an option: `--train-limit`."""
    return "--" + key.replace("_", "-")


def names(value: Any) -> list[str] | None:
    """A comma-separated text or a list as a list of names (None stays None)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def whole(name: str, value: Any) -> int:
    """An integer given as a number or as its text (`"3"`); `name` says where, in errors."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise HarnessError(f"{name} {value!r}: expected a whole number")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{name} {value!r}: expected a whole number") from None


def seed_value(name: str, value: Any) -> int:
    """A random seed: a whole number from 0 to 2**32 - 1 (what numpy and torch accept)."""
    seed = whole(name, value)
    if not 0 <= seed < 2**32:
        raise HarnessError(f"{name} {value!r}: a seed must be a whole number from 0 to {2**32 - 1}")
    return seed


def positive(name: str, value: Any) -> int | None:
    """A whole number >= 1, or None."""
    if value is None:
        return None
    try:
        number = whole(name, value)
    except HarnessError:
        raise HarnessError(f"{name} {value!r}: expected a positive whole number") from None
    if number <= 0:
        hint = " (omit it to use every item)" if name.endswith("limit") else ""
        raise HarnessError(f"{name} {value}: must be at least 1{hint}")
    return number


def pairs(items: list[str] | dict[str, Any] | None, name: str) -> dict[str, Any]:
    """`key=value` strings (values read as YAML scalars) or a mapping from a file."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in str(item):
            raise HarnessError(f"{name} {item!r}: expected key=value")
        key, value = str(item).split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def _flag_of(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise HarnessError(f"{name} {value!r}: expected true or false")


@dataclass
class RunOptions:
    """The validated options of a run request (types and ranges; names are checked by `plan_runs`)."""

    methods: list[str]
    tasks: list[str]
    langs: list[str] | None = None
    limit: int | None = None
    model: str = DEFAULTS["model"]
    recipe: str = DEFAULTS["recipe"]
    recipe_path: str | None = None
    train_langs: list[str] | None = None
    train_limit: int | None = DEFAULTS["train_limit"]
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # --set
    method_options: dict[str, Any] = field(default_factory=dict)  # --method-opt
    batch_size: int = DEFAULTS["batch_size"]
    trust_remote_code: bool = False
    no_chat_template: bool = False
    output: Path = Path(DEFAULTS["output"])

    @classmethod
    def parse(cls, values: dict[str, Any], name: Callable[[str], str] = flag) -> RunOptions:
        """From raw values keyed as `DEFAULTS` (missing keys take the defaults). `name(key)` is how an
        error names the option: `--limit` on the command line, `sweep.yaml: limit` in a file."""
        for key in values:  # the command line and the files check their keys first; this guards callers
            if key not in DEFAULTS:
                raise unknown("option", key, list(DEFAULTS))
        v = {**DEFAULTS, **{k: val for k, val in values.items() if val is not None or k in ("langs", "limit")}}
        methods = names(v["method"]) or []
        if not methods:
            raise HarnessError(f"{name('method')} {v['method']!r}: expected one or more method names (see `harness methods`)")
        tasks = names(v["tasks"]) or []
        if not tasks:
            raise HarnessError(f"{name('tasks')} {v['tasks']!r}: expected one or more task names (see `harness tasks`)")
        if v["seeds"] is not None:
            seeds = [seed_value(name("seeds"), s) for s in (names(v["seeds"]) or [])]
            if not seeds:
                raise HarnessError(f"{name('seeds')} {v['seeds']!r}: expected one or more whole numbers")
        else:
            seeds = [seed_value(name("seed"), v["seed"])]
        for key in ("langs", "train_langs"):  # given but empty: not "every language"
            if isinstance(v[key], str) and not names(v[key]):
                raise HarnessError(f"{name(key)} {v[key]!r}: expected one or more language codes (see `harness tasks`)")
        return cls(
            methods=methods,
            tasks=tasks,
            langs=names(v["langs"]),
            limit=positive(name("limit"), v["limit"]),
            model=str(v["model"]),
            recipe=str(v["recipe"]),
            recipe_path=None if v["recipe_path"] is None else str(v["recipe_path"]),
            train_langs=names(v["train_langs"]),
            train_limit=positive(name("train_limit"), v["train_limit"]),
            seeds=seeds,
            profile=None if v["profile"] is None else str(v["profile"]),
            settings=pairs(v["set"], name("set")),
            method_options=pairs(v["method_opt"], name("method_opt")),
            batch_size=positive(name("batch_size"), v["batch_size"]) or DEFAULTS["batch_size"],
            trust_remote_code=_flag_of(v["trust_remote_code"], name("trust_remote_code")),
            no_chat_template=_flag_of(v["no_chat_template"], name("no_chat_template")),
            output=Path(str(v["output"])),
        )


@dataclass
class PlannedRun:
    """One run to execute: its config (the run id), the tasks it is evaluated on, and its label."""

    config: RunConfig
    refs: list[TaskRef]
    ecfg: EvalConfig
    label: str

    @property
    def run_id(self) -> str:
        return self.config.run_id


def run_label(cfg: RunConfig) -> str:
    """The one label of a run: method, chosen options, and the seed of a method that trains."""
    seed = [f"seed={cfg.seed}"] if METHODS.get(cfg.method).trains else []
    return " ".join([cfg.method, *(f"{k}={v}" for k, v in cfg.method_options.items()), *seed])


def plan_runs(options: RunOptions, drop_defaults: bool = False) -> list[PlannedRun]:
    """The runs `options` ask for: one per method and seed, every name checked (methods and their options
    against the training settings, tasks, languages, profile, settings). The run id holds the method
    options as chosen; `drop_defaults` leaves out those equal to their default (sweeps, so that an axis
    value equal to the default is the plain run)."""
    for method in options.methods:
        METHODS.get(method, "--method")
    data_dir()  # the tasks and recipes read the shared data folder: fail before anything else without it
    refs = resolve_tasks(options.tasks, options.langs)
    if options.train_langs:
        check_languages(options.train_langs, LANGUAGES, "--train-langs")
    profile = options.profile or default_profile()
    settings = resolve_settings(profile, options.settings)
    ecfg = EvalConfig(tasks=[r.name for r in refs], limit=options.limit, batch_size=options.batch_size,
                      apply_chat_template=not options.no_chat_template)  # fmt: skip
    chosen_opts = options.method_options
    known = {k for m in options.methods for k in METHODS.get(m).defaults}
    planned = []
    for method in options.methods:
        cls = METHODS.get(method)
        if set(chosen_opts) - known:
            cls.resolve_options(chosen_opts)  # raises the error naming the unknown option
        resolved = cls.resolve_options({k: v for k, v in chosen_opts.items() if k in cls.defaults})
        opts = {k: resolved[k] for k in chosen_opts if k in cls.defaults}  # the id holds what was chosen
        if drop_defaults:
            opts = {k: v for k, v in opts.items() if v != cls.defaults[k]}
        cls(**opts).check_settings(settings)  # option values and their fit with the training settings
        for ref in refs:
            if ref.output_type in cls.cannot_evaluate:
                raise HarnessError(f"method '{method}' cannot evaluate task {ref.name} ({ref.output_type}): "
                                   f"{cls.cannot_evaluate[ref.output_type]}; leave it out of --tasks")  # fmt: skip
        for seed in options.seeds:
            cfg = RunConfig(
                method=method, model=options.model, method_options=opts, recipe=options.recipe,
                train_langs=options.train_langs, train_limit=options.train_limit, recipe_path=options.recipe_path,
                seed=seed, profile=profile, train=settings.to_dict(), trust_remote_code=options.trust_remote_code,
            )  # fmt: skip
            planned.append(PlannedRun(cfg, refs, ecfg, run_label(cfg)))
    return planned


def check_inputs(planned: list[PlannedRun], output: Path | None = None) -> None:
    """What the runs use only later, checked before any run folder is created: every recipe, every model
    (a local folder must hold a config, safetensors weights and a tokenizer) with the method options that
    depend on it (`Method.check_model`), and that the output folder can be created (the shared data folder
    was checked by `plan_runs`)."""
    for recipe in dict.fromkeys(p.config.recipe for p in planned):
        RECIPES.get(recipe, "--recipe")
    configs = {model: local_model_config(resolve_model(model)) for model in dict.fromkeys(p.config.model for p in planned)}
    for p in planned:
        config = configs[p.config.model]
        if config is not None:  # a Hub id: checked when it loads
            METHODS.get(p.config.method)(**p.config.method_options).check_model(config, f"--model {p.config.model}")
    if output is not None:
        check_output_folder(output)


def check_output_folder(output: Path, flag: str = "--output") -> None:
    """One line when an output folder cannot be made: it is a file, lies under a file, or cannot be written."""
    path = Path(output).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {output}: is a file; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise HarnessError(f"{flag} {output}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK) or (existing != path and not _can_create_in(existing)):
        raise HarnessError(f"{flag} {output}: cannot create {path} (no write permission in {existing})")


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be made in `folder` (root passes `os.access` even where the file system refuses,
    as in /proc)."""
    try:
        Path(tempfile.mkdtemp(prefix=".harness-check.", dir=folder)).rmdir()
    except OSError:
        return False
    return True


def command_line(run: PlannedRun, output: Path) -> list[str]:
    """The `harness run` arguments that reproduce one planned run: training settings that differ from the
    profile's as `--set`, the resolved task names."""
    cfg, ecfg = run.config, run.ecfg
    args = ["harness", "run", "--method", cfg.method, "--model", cfg.model, "--recipe", cfg.recipe]
    if cfg.recipe_path:
        args += ["--recipe-path", cfg.recipe_path]
    if cfg.train_langs:
        args += ["--train-langs", ",".join(cfg.train_langs)]
    if cfg.train_limit:
        args += ["--train-limit", str(cfg.train_limit)]
    args += ["--seed", str(cfg.seed), "--profile", cfg.profile]
    profile = PROFILES[cfg.profile].to_dict()
    for key, value in cfg.train.items():
        if profile.get(key) != value:
            args += ["--set", f"{key}={value}"]
    for key, value in cfg.method_options.items():
        args += ["--method-opt", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    args += ["--tasks", ",".join(ecfg.tasks)]
    if ecfg.limit:
        args += ["--limit", str(ecfg.limit)]
    args += ["--batch-size", str(ecfg.batch_size), "--output", str(output)]
    if not ecfg.apply_chat_template:
        args.append("--no-chat-template")
    if cfg.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def shell_line(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)

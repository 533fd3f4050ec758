"""`harness sweep FILE.yaml`: a grid of ordinary runs (methods x seeds x options), resumable.

A sweep file holds the options of `harness run --config` shared by every run, and a `grid`: one block or
a list of blocks. Each block may override the shared options; its list values are axes, and the block
stands for the product of its axes. The sweep is the union of its blocks::

    description: the Decision Maker against a fixed source layer
    tasks: sib200_mc
    langs: en,fr,sw,yo,zh,hi
    train_limit: 30
    limit: 40
    grid:
      - method: [vanilla, cc]
        seed: [0, 1, 2]
      - method: cc
        method_opt:
          fixed_source_layer: [0, 5, 10]

Axes: `method`, `seed` (or `seeds`), `model`, `recipe`, `train_limit`, `profile`, and each key of the
`method_opt` and `set` mappings. `tasks`, `langs` and `train_langs` are lists of names, not axes: every
run of a block is evaluated on the block's tasks, and a run named by several blocks on their union.
A method option axis applies to the methods that have the option (an option no method of the block
has is an error). Options equal to their default are dropped, so `wt_samples: [100, 1000]` includes
the plain `cc` run, and ablations share their base point with the main comparison.

Every point is an ordinary run of the run store: a finished run is reused, an interrupted one resumed,
and a run that differs only in evaluation-time options (CC's `wt_samples`, `use_wt`, ...) shares the
trained model of its training run (`harness.orchestration.pipeline`), so a sweep over M trains once.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.config import EvalConfig, load_config_file
from harness.core.method import METHODS
from harness.core.store import Run
from harness.orchestration.options import (
    DEFAULTS,
    PlannedRun,
    RunOptions,
    command_line,
    names,
    plan_runs,
    shell_line,
)
from harness.orchestration.pipeline import execute
from harness.plumbing.errors import HarnessError, unknown
from harness.training import distributed

log = logging.getLogger(__name__)

# Keys of a sweep file besides the run options (`harness.orchestration.options.DEFAULTS`); a grid block
# holds run options only, and not the run store (`output`), which is the sweep's.
FILE_KEYS = ("description", "grid")
BLOCK_KEYS = [k for k in DEFAULTS if k != "output"]


@dataclass
class Sweep:
    path: Path
    description: str
    output: Path
    runs: list[PlannedRun] = field(default_factory=list)

    def command(self, run: PlannedRun) -> str:
        """The `harness run` command equivalent to one point (recorded in its `config.yaml`)."""
        return shell_line(command_line(run, self.output)) + f"  # from: harness sweep {shell_line([str(self.path)])}"


def _as_axis(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _mapping(where: str, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: {name} must be a mapping of names to a value or a list of values")
    return dict(value)


def _product(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


def _check_keys(values: dict[str, Any], valid: list[str], where: str) -> None:
    for key in values:
        if key not in valid:
            raise unknown("sweep key", key, valid, where)


def _block_runs(values: dict[str, Any], where: str) -> list[PlannedRun]:
    """The runs of one grid block (`values`: the shared options merged with the block's): the product of
    its axes, each point parsed and planned as `harness run` plans its options (`RunOptions`)."""
    seeds = values["seeds"] if values["seeds"] is not None else values["seed"]
    axes = {
        "method": [m for v in _as_axis(values["method"]) for m in names(v) or []],
        "seed": _as_axis(seeds),
        "model": _as_axis(values["model"]),
        "recipe": _as_axis(values["recipe"]),
        "train_limit": _as_axis(values["train_limit"]),
        "profile": _as_axis(values["profile"]),
    }
    if not axes["method"]:
        raise HarnessError(f"{where}: no method")
    for method in axes["method"]:
        METHODS.get(method, where)
    set_axes = {k: _as_axis(v) for k, v in _mapping(where, "set", values["set"]).items()}
    opt_axes = {k: _as_axis(v) for k, v in _mapping(where, "method_opt", values["method_opt"]).items()}
    known = {k for m in axes["method"] for k in METHODS.get(m).defaults}
    for key in opt_axes:
        if key not in known:
            raise unknown(f"option for method(s) {', '.join(axes['method'])}", key, known or ["(none)"], where)

    runs = []
    for point in _product(axes):
        own = {k: v for k, v in opt_axes.items() if k in METHODS.get(point["method"]).defaults}
        for opts, settings in itertools.product(_product(own), _product(set_axes)):
            raw = {**values, **point, "seeds": None, "method_opt": opts, "set": settings}
            try:
                options = RunOptions.parse(raw, lambda key: f"{where}: {key}")
                runs += plan_runs(options, drop_defaults=True)
            except HarnessError as e:
                message = str(e)
                raise HarnessError(message if message.startswith(str(where)) else f"{where}: {message}") from None
    return runs


def load_sweep(path: str | Path, output: str | Path | None = None) -> Sweep:
    """Read and validate a sweep file (every method, option, task and setting) before any work.
    `output` overrides the file's run store (default `runs`)."""
    path = Path(path)
    values = load_config_file(str(path), what="sweep file")
    _check_keys(values, list(DEFAULTS) + list(FILE_KEYS), str(path))
    shared = {**DEFAULTS, **{k: v for k, v in values.items() if k not in (*FILE_KEYS, "output")}}
    grid = values.get("grid") or [{}]
    blocks = grid if isinstance(grid, list) else [grid]
    store = Path(output or values.get("output") or DEFAULTS["output"])
    sweep = Sweep(path, str(values.get("description", "")).strip(), store)
    merged: dict[tuple[str, str], PlannedRun] = {}
    for i, block in enumerate(blocks, 1):
        where = f"{path}: grid block {i}"
        if not isinstance(block, dict):
            raise HarnessError(f"{where}: expected a mapping of options, got {type(block).__name__}")
        _check_keys(block, BLOCK_KEYS, where)
        for run in _block_runs({**shared, **block}, where):
            key = (run.run_id, repr(sorted(run.ecfg.key().items())))
            if key in merged:  # the same run in several blocks: evaluate the union of their tasks
                first = merged[key]
                first.refs = list(dict.fromkeys(first.refs + run.refs))
                first.ecfg = EvalConfig(tasks=[r.name for r in first.refs], limit=first.ecfg.limit,
                                        batch_size=first.ecfg.batch_size,
                                        apply_chat_template=first.ecfg.apply_chat_template)  # fmt: skip
            else:
                merged[key] = run
    sweep.runs = list(merged.values())
    return sweep


REUSE = "complete: reuse"


def run_state(run: PlannedRun, root: Path) -> str:
    """What executing this point would do now, in words (for `--dry-run` and the progress lines)."""
    store = Run(root, run.config)
    status = store.status()
    missing = [r.name for r in run.refs if store.stored_result(r.name, run.ecfg.key()) is None]
    evaluate = f"evaluate {len(missing)} task{'s' * (len(missing) != 1)}"
    if status.get("phase") == "complete" and not missing:
        return REUSE
    if not METHODS.get(run.config.method).trains or store.is_trained():
        return evaluate
    if run.config.training_id != run.run_id:
        source = Run(root, run.config.training_config())
        verb = "share the trained model of" if source.is_trained() else "train (shared) in"
        return f"{verb} {source.id}, {evaluate}"
    return f"train, {evaluate}"


def plan_lines(sweep: Sweep) -> list[str]:
    """The plan: one line per run (index, run id, label, what it will do) and a summary line."""
    lines = []
    width = max((len(r.label) for r in sweep.runs), default=0)
    id_width = max((len(r.run_id) for r in sweep.runs), default=0)
    trainings: set[str] = set()
    todo = 0
    for i, run in enumerate(sweep.runs, 1):
        state = run_state(run, sweep.output)
        trained = Run(sweep.output, run.config.training_config()).is_trained()
        if METHODS.get(run.config.method).trains and not trained and state != REUSE:
            trainings.add(run.config.training_id)
        todo += state != REUSE
        lines.append(f"[{i}/{len(sweep.runs)}] {run.run_id:<{id_width}}  {run.label:<{width}}  {state}")
    head = (f"sweep {sweep.path}: {len(sweep.runs)} runs in {sweep.output}/, {len(trainings)} to train, "
            f"{todo} to evaluate, {len(sweep.runs) - todo} finished")  # fmt: skip
    return [head, *lines]


@dataclass
class SweepResult:
    run_dirs: list[Path]  # the runs that finished, in plan order
    failed: list[tuple[str, str]]  # (run id, error)


def run_sweep(sweep: Sweep, progress: Callable[[str], None] = print) -> SweepResult:
    """Execute every point in order; a point that fails is recorded and the others still run. Under a
    data-parallel launch a failing point stops the sweep: the other processes could not skip it with this
    one."""
    failed: list[tuple[str, str]] = []
    dirs: list[Path] = []
    n = len(sweep.runs)
    for i, run in enumerate(sweep.runs, 1):
        state = run_state(run, sweep.output)
        log.info("[%d/%d] %s (%s): %s", i, n, run.run_id, run.label, state)
        start = time.monotonic()
        try:
            done = execute(run.config, run.refs, run.ecfg, sweep.output, sweep.command(run))
        except HarnessError as e:
            if distributed.world_size() > 1:
                raise
            failed.append((run.run_id, str(e)))
            progress(f"[{i}/{n}] {run.run_id}  {run.label}: FAILED: {e}")
            continue
        except Exception as e:  # a failing point must not stop the sweep; its status says why
            if distributed.world_size() > 1:
                raise
            log.exception("%s failed", run.run_id)
            failed.append((run.run_id, f"{type(e).__name__}: {e}"))
            progress(f"[{i}/{n}] {run.run_id}  {run.label}: FAILED: {type(e).__name__}: {e}")
            continue
        dirs.append(done.dir)
        seconds = time.monotonic() - start
        progress(f"[{i}/{n}] {run.run_id}  {run.label}: {state} -> done in {seconds:.1f}s")
    return SweepResult(dirs, failed)

"""The run store as the report sees it: finished runs with their config, results, per-item samples and
artifacts, each labelled with its *variant* (method + chosen options; seeds of one variant are replicates).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.core.config import RunConfig
from harness.core.method import METHODS
from harness.core.provenance import describe
from harness.core.store import StoredRun, find_runs
from harness.evaluation.diagnostics import cell_diagnostics
from harness.plumbing.errors import HarnessError

# Config keys that never distinguish two variants (seeds are replicates, not variants).
NOT_VARIANT = ("run_id", "command", "seed", "method", "method_options")


@dataclass
class RunRecord:
    """One complete run folder."""

    name: str
    dir: Path
    config: dict[str, Any]
    status: dict[str, Any]
    variant: str = ""
    missing: list[str] = field(default_factory=list)  # tasks the status lists without a result file

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0) or 0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.config.get("method_options") or {})

    @property
    def command(self) -> str:
        return str(self.config.get("command", ""))

    @property
    def tasks(self) -> list[str]:
        return [t for t in self.status.get("tasks", []) if t not in self.missing]

    def resolved_options(self) -> dict[str, Any]:
        """The method's options with defaults filled in (as chosen when the method is unknown)."""
        if self.method in METHODS:
            return {**METHODS.get(self.method).defaults, **self.options}
        return self.options

    @cached_property
    def stored(self) -> StoredRun:
        return StoredRun(self.dir)

    def result(self, task: str) -> dict[str, Any]:
        return self.stored.result(task)

    def diagnostics(self, task: str) -> dict[str, Any]:
        """The cell's baselines and answer statistics (`harness.evaluation.diagnostics.cell_diagnostics`): as
        stored with the result, or computed from the samples for results stored before they were."""
        result = self.result(task)
        if "diagnostics" in result or not result.get("protocol"):
            return result.get("diagnostics") or {}
        return cell_diagnostics(result["benchmark"], self.samples(task))

    def samples(self, task: str) -> list[dict[str, Any]]:
        return self.stored.samples(task)

    def artifact(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the run folder (a method's artifacts, `eval_artifacts.json`), when readable."""
        return self.stored.artifact(name)

    @cached_property
    def train_log(self) -> list[dict[str, Any]]:
        return self.stored.train_log()

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """`provenance.json` (`harness.core.provenance`): the environments and the phases that ran."""
        return self.stored.provenance()

    def environments(self) -> dict[str, dict[str, Any]]:
        """The environments (id -> code and library versions) that ran this run's phases, in order."""
        known = self.provenance.get("environments", {})
        used = dict.fromkeys(p.get("env") for p in self.provenance.get("phases", []))
        return {env: known.get(env, {}) for env in used if env}

    def code_summary(self) -> str:
        """`0.1.0 @ 9626d1a`, or per phase when phases ran under different versions; "not recorded" for a run
        stored before provenance was."""
        envs = self.environments()
        if len(envs) <= 1:
            return describe(next(iter(envs.values()), {}))
        by_env: dict[str, list[str]] = {}
        for p in self.provenance.get("phases", []):
            by_env.setdefault(p.get("env", ""), []).append(p.get("phase", "?"))
        return "; ".join(
            f"{'+'.join(dict.fromkeys(ph))}: {describe(envs.get(e, {}))}" for e, ph in by_env.items()
        )

    def time_summary(self) -> str:
        """Wall seconds per phase (CPU seconds in brackets), summed over the sessions that ran each phase."""
        totals: dict[str, list[float]] = {}
        for p in self.provenance.get("phases", []):
            wall_cpu = totals.setdefault(p.get("phase", "?"), [0.0, 0.0])
            wall_cpu[0] += float(p.get("wall_s", 0.0))
            wall_cpu[1] += float(p.get("cpu_s", 0.0))
        return (
            ", ".join(f"{phase} {w:.0f} s ({c:.0f} s CPU)" for phase, (w, c) in totals.items())
            or "not recorded"
        )

    def hardware_summary(self) -> str:
        """Device, dtype and threads of the training and evaluation phases."""
        parts = []
        for p in self.provenance.get("phases", []):
            if p.get("phase") in ("training", "evaluation") and "device" in p and not p.get("shared_from"):
                parts.append(
                    f"{p['phase']}: {p['device']}, {p.get('dtype', '?')}, {p.get('threads')} threads"
                )
        return "; ".join(dict.fromkeys(parts))


def environments_of(runs: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Every environment that produced a phase of `runs` (id -> versions), in order of first use."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        for env_id, env in run.environments().items():
            found.setdefault(env_id, env)
    return found


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that define the trained model, minus the seed (config keys of a non-training method
    that do not define its model are ignored)."""
    values = {k: v for k, v in config.items() if k not in ("run_id", "command")}
    try:
        identity = RunConfig.from_dict(values, "config.yaml").identity()
    except (HarnessError, TypeError):
        identity = values
    flat: dict[str, Any] = {}
    for key, value in identity.items():
        if key in NOT_VARIANT:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def variant_labels(configs: list[dict[str, Any]]) -> list[str]:
    """A label per run config: the method and its chosen options (`cc (wt_samples=10)`); runs of one
    label that differ in anything but the seed (model, data, training settings) get the differing
    fields appended, so a label always names replicates of one setting."""
    base = []
    for c in configs:
        opts = c.get("method_options") or {}
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(opts.items()))
        base.append(f"{c.get('method', '?')} ({inner})" if inner else str(c.get("method", "?")))
    identities = [_identity(c) for c in configs]
    labels = list(base)
    for label in set(base):
        members = [i for i, b in enumerate(base) if b == label]
        keys = sorted({k for i in members for k in identities[i]})
        differing = [
            k for k in keys if len({json.dumps(identities[i].get(k), default=str) for i in members}) > 1
        ]
        for i in members:
            if differing:
                extra = ", ".join(f"{k.split('.')[-1]}={_fmt(identities[i].get(k))}" for k in differing)
                labels[i] = f"{label} [{extra}]"
    return labels


def natural_key(text: str) -> list[Any]:
    """Sort key that orders numbers by value (`layer=5` before `layer=10`)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


METHOD_ORDER = ("none", "vanilla")


def variant_order(labels: list[str]) -> list[str]:
    """Zero-shot first, then vanilla SFT, then the other variants in natural order."""

    def key(label: str) -> tuple[int, list[Any]]:
        method = label.split(" ")[0]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return rank, natural_key(label)

    return sorted(dict.fromkeys(labels), key=key)


def load_runs(paths: list[str]) -> tuple[list[RunRecord], list[str]]:
    """The complete runs under `paths` (with variant labels) and a description of each skipped one:
    `<name> (<phase>)` for runs that are not complete, `<name> (missing <task>)` for a result file
    that is missing from a complete run (the run's other tasks are kept)."""
    runs: list[RunRecord] = []
    skipped: list[str] = []
    for run_dir in find_runs(paths):
        stored = StoredRun(run_dir)
        status = stored.status()
        if status.get("phase") != "complete":
            skipped.append(f"{run_dir.name} ({status.get('phase', 'no status')})")
            continue
        record = RunRecord(run_dir.name, run_dir, stored.config(), status)
        for task in status.get("tasks", []):
            if not stored.has_result(task):
                record.missing.append(task)
                skipped.append(f"{run_dir.name} (missing {task})")
        runs.append(record)
    for record, label in zip(runs, variant_labels([r.config for r in runs]), strict=True):
        record.variant = label
    return runs, skipped

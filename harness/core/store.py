"""The run store: `runs/<run-id>/` with config, atomic status, model, results and per-item samples.

A run's `status.json` says which phase it reached; results are reported only from runs whose phase
is `complete`. Per-task results (`results/<task>.json`) are written atomically as each evaluation
finishes, so an interrupted run resumes with the tasks it still lacks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from harness.core.config import RunConfig
from harness.core.provenance import PhaseClock, environment, environment_id, hardware
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl, atomic_write_yaml, confined
from harness.training import distributed

PHASES = ("created", "data", "training", "trained", "evaluating", "complete", "failed")


class Run:
    def __init__(self, root: Path, config: RunConfig) -> None:
        self.config = config
        self.id = config.run_id
        self.dir = Path(root) / self.id

    # -- layout -----------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def results_dir(self) -> Path:
        return self.dir / "results"

    @property
    def samples_dir(self) -> Path:
        return self.dir / "samples"

    # -- one writer -------------------------------------------------------------------------------
    @contextmanager
    def locked(self, say: Callable[[str], None]) -> Iterator[None]:
        """Hold the run's lock (`<run>/.lock`, an OS file lock through `filelock`) while this process writes
        the run: a second process on the same run says who holds it and waits, then finds the run finished
        and reuses it. The OS releases the lock of a process that dies, so a killed run never blocks its
        rerun. Under a data-parallel launch the main process takes it without waiting (the other processes
        of its launch could not wait with it) and refuses a run that another launch holds."""
        if not distributed.is_main():
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.dir / ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self._holder()
            if distributed.world_size() > 1:
                raise HarnessError(f"run {self.id} is being written by {holder}; launch again when it is done") from None
            say(f"run {self.id} is being written by {holder}; waiting for it to finish (Ctrl-C stops waiting)")
            lock.acquire()
        owner = self.dir / ".lock.owner"
        try:
            atomic_write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
            faults.point("locked")
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def _holder(self) -> str:
        owner = read_json(self.dir / ".lock.owner") or {}
        if not owner:
            return "another process"
        return f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"

    # -- status -----------------------------------------------------------------------------------
    # Only the main process of a data-parallel launch writes (`harness.training.distributed`); the others read.
    def init(self, command: str) -> None:
        if not distributed.is_main():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.dir / "config.yaml"
        if not cfg_path.exists():
            atomic_write_yaml(cfg_path, {"run_id": self.id, "command": command, **self.config.to_dict()})
        if not (self.dir / "status.json").exists():
            self.set_phase("created")

    def status(self) -> dict[str, Any]:
        return read_status(self.dir)

    def set_phase(self, phase: str, **extra: Any) -> None:
        assert phase in PHASES, phase
        if not distributed.is_main():
            return
        status = {**self.status(), **extra, "phase": phase, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(self.dir / "status.json", status)

    # -- provenance -------------------------------------------------------------------------------
    def record_phase(self, phase: str, clock: PhaseClock, dtype: str | None = None, **details: Any) -> None:
        """Append one finished phase to `provenance.json`: the environment that ran it (its id, with the
        environment itself stored once), the hardware, wall and CPU seconds, and `details`."""
        if not distributed.is_main():
            return
        env = environment()
        path = self.dir / "provenance.json"
        record = read_json(path) or {"environments": {}, "phases": []}
        record["environments"][environment_id(env)] = env
        record["phases"].append({"phase": phase, "env": environment_id(env),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **clock.elapsed(),
                                 **hardware(dtype), **details})  # fmt: skip
        atomic_write_json(path, record)

    def is_trained(self) -> bool:
        # The model folder is renamed into place only once training has finished.
        return (self.model_dir / "config.json").is_file()

    # -- results ----------------------------------------------------------------------------------
    def stored_result(self, task: str, key: dict[str, Any]) -> dict[str, Any] | None:
        path = confined(self.dir, "results", f"{task}.json")
        if not path.is_file():
            return None
        result = json.loads(path.read_text(encoding="utf-8"))
        return result if result.get("key") == key else None

    def save_result(self, task: str, result: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        if not distributed.is_main():
            return
        # Samples first, then the result: a result file exists only with its samples beside it. `env` names the
        # code and library versions that computed it (`provenance.json`).
        atomic_write_jsonl(confined(self.dir, "samples", f"{task}.jsonl"), samples)
        result = {**result, "env": environment_id(environment())}
        atomic_write_json(confined(self.dir, "results", f"{task}.json"), result)


class StoredRun:
    """A run folder as readers (the report, `harness run`'s table) see it: its files by name, read-only, so
    that no reader rebuilds the store's layout. Files that are absent read as empty."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    @property
    def name(self) -> str:
        return self.dir.name

    def config(self) -> dict[str, Any]:
        """`config.yaml`: the run id, the command, and the `RunConfig` fields."""
        return yaml.safe_load((self.dir / "config.yaml").read_text(encoding="utf-8")) or {}

    def status(self) -> dict[str, Any]:
        return read_status(self.dir)

    def has_result(self, task: str) -> bool:
        return confined(self.dir, "results", f"{task}.json").is_file()

    def result(self, task: str) -> dict[str, Any]:
        return json.loads(confined(self.dir, "results", f"{task}.json").read_text(encoding="utf-8"))

    def samples(self, task: str) -> list[dict[str, Any]]:
        path = confined(self.dir, "samples", f"{task}.jsonl")
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def artifact(self, name: str) -> dict[str, Any] | None:
        """A JSON file a method or the evaluator wrote into the run folder, when present and readable."""
        return read_json(confined(self.dir, name))

    def provenance(self) -> dict[str, Any]:
        """`provenance.json`: `environments` (id -> versions) and `phases` (one record per phase run), or
        empty for a run stored before provenance was recorded."""
        return read_json(self.dir / "provenance.json") or {}

    def train_log(self) -> list[dict[str, Any]]:
        """The rows of `train_log.jsonl` (a line cut by an interruption is skipped)."""
        path = self.dir / "train_log.jsonl"
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent or unreadable (a file cut short by a crash is rewritten
    whole by its next atomic write)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise HarnessError(f"{path}: corrupt status file; delete the run folder to redo it") from None


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders named directly or found one level below the given folders (e.g. `runs/`)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q for q in p.iterdir() if (q / "config.yaml").is_file()))
        else:
            raise HarnessError(f"{p}: no such run folder")
    if not found:
        raise HarnessError(f"no runs found in {', '.join(paths)} (a run folder holds config.yaml)")
    return found

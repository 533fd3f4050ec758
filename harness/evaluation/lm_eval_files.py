"""lm-eval's own result files beside ours, so that lm-eval's tooling and anyone's scripts for it read a run.

Every `simple_evaluate` call of a run is written by lm-eval's `EvaluationTracker`, exactly as
`lm_eval --output_path <run>/lm_eval --log_samples` writes it: `<run>/lm_eval/<model>/results_<date>.json`
(the aggregated results, configs, versions, task hashes, environment) and one
`samples_<task>_<date>.jsonl` per task. A run evaluated in several calls (resumed, or given more tasks
later) has several results files, as lm-eval has after several invocations into one output path; a task
evaluated again (another limit or protocol key) is removed from the older files, so that each task is in
exactly one results file and one samples file.

The tracker writes into a temporary folder inside the run; the files are then moved into place, samples
first and the results file last, each by an atomic rename.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.plumbing.io import atomic_write_json

FOLDER = "lm_eval"


def new_tracker(run_dir: Path):
    """An `EvaluationTracker` writing into a fresh temporary folder of the run (pass it to `simple_evaluate`,
    which records the model arguments, the chat template and the start time in it)."""
    from lm_eval.loggers import EvaluationTracker

    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=run_dir))
    return EvaluationTracker(output_path=str(tmp))


def write_lm_eval_files(run_dir: Path, tracker, output: dict[str, Any], model_name: str) -> list[Path]:
    """Write `output` (a `simple_evaluate` result with samples) through `tracker` and move the files into
    `<run_dir>/lm_eval/<model_name, sanitised>/`. Returns the files written."""
    from lm_eval.utils import sanitize_model_name

    tmp = Path(tracker.output_path)
    try:
        tracker.general_config_tracker.model_name_sanitized = sanitize_model_name(model_name)
        results = copy.deepcopy(output)  # the tracker rewrites what it is given
        samples = results.pop("samples", {})
        tracker.save_results_aggregated(results=results, samples=samples)
        for task, task_samples in samples.items():
            tracker.save_results_samples(task_name=task, samples=task_samples)
        written = sorted((tmp / tracker.general_config_tracker.model_name_sanitized).iterdir())
        results_files = [p for p in written if p.name.startswith("results_")]
        if len(results_files) != 1:  # the tracker logs and swallows its own errors
            raise RuntimeError(f"lm-eval's EvaluationTracker wrote no results file into {tmp}")
        dest = Path(run_dir) / FOLDER / tmp.joinpath(tracker.general_config_tracker.model_name_sanitized).name
        dest.mkdir(parents=True, exist_ok=True)
        _forget(dest, set(samples) | set(output.get("results", {})))
        moved = []
        for path in [p for p in written if p not in results_files] + results_files:
            os.replace(path, dest / path.name)
            moved.append(dest / path.name)
        return moved
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _forget(dest: Path, tasks: set[str]) -> None:
    """Remove `tasks` from the files of earlier calls: their samples files, and their entries in each
    results file (a results file left with no task is deleted)."""
    from lm_eval.utils import get_file_task_name

    for path in dest.glob("samples_*.jsonl"):
        if get_file_task_name(path.name) in tasks:
            path.unlink()
    for path in dest.glob("results_*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not tasks & set(data.get("results", {})):
            continue
        for value in data.values():
            if isinstance(value, dict):
                for task in tasks:
                    value.pop(task, None)
        if data.get("results"):
            atomic_write_json(path, data)
        else:
            path.unlink()


def lm_eval_files(run_dir: Path) -> dict[str, list[Path]]:
    """The lm-eval files of a run: `results` and `samples` paths (empty lists for a run without them)."""
    from lm_eval.utils import get_results_filenames, get_sample_results_filenames

    folder = Path(run_dir) / FOLDER
    files = [str(p) for p in sorted(folder.glob("*/*.json*"))] if folder.is_dir() else []
    return {"results": [Path(p) for p in get_results_filenames(files)],
            "samples": [Path(p) for p in get_sample_results_filenames(files)]}  # fmt: skip

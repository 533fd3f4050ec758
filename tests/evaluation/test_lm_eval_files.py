"""lm-eval's own result files beside ours, and each run's provenance (code and library versions, hardware,
times per phase), on a tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import provenance
from harness.core.config import EvalConfig, RunConfig
from harness.evaluation.evaluate import resolve_tasks
from harness.evaluation.lm_eval_files import FOLDER, lm_eval_files
from harness.orchestration.pipeline import execute
from harness.reports.markdown import render
from harness.reports.report import build_report
from harness.tasks.catalog import TASKS_DIR
from harness.training.settings import PROFILES

TASK = "sib200_mc_sw"


def _config(tiny_dir: Path, train_file: Path, method: str = "vanilla") -> RunConfig:
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 2, "per_device_batch_size": 4, "batch_size": 4,
             "bf16": False, "logging_steps": 1}  # fmt: skip
    return RunConfig(method=method, model=str(tiny_dir), recipe="jsonl", recipe_path=str(train_file),
                     train_limit=None, train=train)  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_dir: Path, train_file: Path):
    """A vanilla run on the tiny model evaluated on two tasks, then on one more (a second lm-eval call)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = _config(tiny_dir, train_file)
    refs = resolve_tasks([TASK], None)
    execute(cfg, refs, EvalConfig(tasks=[TASK], limit=3, batch_size=4), root, "test")
    more = resolve_tasks([TASK, "xnli_gen_sw"], None)
    run = execute(cfg, more, EvalConfig(tasks=[r.name for r in more], limit=3, batch_size=4), root, "test")
    return run


def test_lm_eval_files_are_written_by_lm_eval_and_read_by_its_helpers(evaluated) -> None:
    from lm_eval.utils import get_file_task_name, get_latest_filename

    files = lm_eval_files(evaluated.dir)
    # Two evaluation calls: two results files, one samples file per task, in lm-eval's layout.
    assert len(files["results"]) == 2
    assert sorted(get_file_task_name(p.name) for p in files["samples"]) == sorted([TASK, "xnli_gen_sw"])
    assert all(p.parent.parent == evaluated.dir / FOLDER for p in files["results"] + files["samples"])
    assert not list(evaluated.dir.glob(f".{FOLDER}.*")), "temporary folders are removed"
    latest = json.loads(Path(get_latest_filename([str(p) for p in files["results"]])).read_text())
    assert set(latest["results"]) == {"xnli_gen_sw"}  # the second call evaluated only the task it lacked
    ours = json.loads((evaluated.results_dir / f"{TASK}.json").read_text())
    first = json.loads(min(files["results"]).read_text())
    assert first["results"][TASK]["acc,none"] == pytest.approx(ours["metrics"]["acc"])
    assert first["n-samples"][TASK]["effective"] == 3 and first["config"]["limit"] == 3
    samples = [json.loads(line) for line in next(p for p in files["samples"] if TASK in p.name).read_text().splitlines()]
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    assert first["task_hashes"][TASK]  # lm-eval's hash over the samples' doc, prompt and target hashes


def test_a_task_evaluated_again_is_in_one_results_file_only(tmp_path: Path, tiny_dir: Path, train_file: Path) -> None:
    cfg = _config(tiny_dir, train_file, method="none")
    refs = resolve_tasks([TASK], None)
    execute(cfg, refs, EvalConfig(tasks=[TASK], limit=2, batch_size=4), tmp_path, "test")
    run = execute(cfg, refs, EvalConfig(tasks=[TASK], limit=3, batch_size=4), tmp_path, "test")
    files = lm_eval_files(run.dir)
    assert len(files["results"]) == 1 and len(files["samples"]) == 1
    assert json.loads(files["results"][0].read_text())["config"]["limit"] == 3


def test_same_files_as_the_lm_eval_command_line(tmp_path: Path, tiny_dir: Path, train_file: Path) -> None:
    """`lm_eval --output_path --log_samples` on the same task and model writes the same keys, and the same
    per-item log-likelihoods."""
    refs = resolve_tasks([TASK], None)
    run = execute(_config(tiny_dir, train_file, method="none"), refs, EvalConfig(tasks=[TASK], limit=3, batch_size=4),
                  tmp_path / "runs", "test")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_dir},dtype=float32",
         "--tasks", TASK, "--include_path", str(TASKS_DIR), "--limit", "3",
         "--output_path", str(tmp_path / "cli" / FOLDER), "--log_samples", "--apply_chat_template",
         "--device", "cpu", "--batch_size", "4", "--seed", "0"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    theirs_files, ours_files = lm_eval_files(tmp_path / "cli"), lm_eval_files(run.dir)
    theirs = json.loads(theirs_files["results"][0].read_text())
    ours = json.loads(ours_files["results"][0].read_text())
    assert set(ours) == set(theirs)
    assert set(ours["results"][TASK]) == set(theirs["results"][TASK])
    assert set(ours["configs"][TASK]) == set(theirs["configs"][TASK])
    assert ours["results"][TASK]["acc,none"] == theirs["results"][TASK]["acc,none"]
    assert ours["task_hashes"] == theirs["task_hashes"]  # the same documents, prompts and targets

    def rows(files):
        path = files["samples"][0]
        return [json.loads(line) for line in path.read_text().splitlines()]

    for a, b in zip(rows(ours_files), rows(theirs_files), strict=True):
        assert set(a) == set(b)
        assert a["doc_id"] == b["doc_id"] and a["arguments"] == b["arguments"]
        assert [float(r[0][0]) for r in a["resps"]] == pytest.approx([float(r[0][0]) for r in b["resps"]], abs=1e-4)


def test_provenance_records_versions_hardware_and_phases(evaluated) -> None:
    record = json.loads((evaluated.dir / "provenance.json").read_text())
    phases = [p["phase"] for p in record["phases"]]
    assert phases == ["data", "training", "evaluation", "evaluation"]
    env_id = record["phases"][0]["env"]
    env = record["environments"][env_id]
    assert env == provenance.environment() and env_id == provenance.environment_id(env)
    assert set(env["libraries"]) >= {"torch", "transformers", "lm_eval", "peft", "accelerate", "datasets"}
    assert env["libraries"]["torch"] and env["harness"]
    training = record["phases"][1]
    assert training["device"] == "cpu" and training["dtype"] == "float32" and training["threads"] >= 1
    assert training["wall_s"] > 0 and training["cpu_s"] > 0
    assert record["phases"][3]["tasks"] == ["xnli_gen_sw"]
    result = json.loads((evaluated.results_dir / f"{TASK}.json").read_text())
    assert result["env"] == env_id


def test_code_version_from_git(tmp_path: Path, monkeypatch) -> None:
    version = provenance.code_version()
    root = Path(provenance.__file__).resolve().parents[2]
    if (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert version["commit"] == head.stdout.strip() and isinstance(version["dirty"], bool)
    assert provenance.describe({"harness": "0.1.0", "commit": "0123456789ab", "dirty": True}) == "0.1.0 @ 0123456 (dirty)"
    assert provenance.describe({"harness": "0.1.0", "commit": None}) == "0.1.0 (no git checkout)"
    assert provenance.describe({}) == "not recorded"


def test_report_shows_versions_and_says_when_runs_differ(evaluated, tmp_path: Path) -> None:
    report = build_report([str(evaluated.dir)], tmp_path / "r1", iters=50)
    text = render(report)
    env = provenance.environment()
    assert provenance.describe(env) in text and f"torch {env['libraries']['torch']}" in text
    assert "## Versions" in text and "versions of the code" not in text
    # The same run evaluated once more by another version of the code: the report says so.
    path = evaluated.dir / "provenance.json"
    saved = path.read_text()
    record = json.loads(saved)
    other = {**env, "commit": "f" * 40, "dirty": False}
    record["environments"]["other"] = other
    record["phases"][-1]["env"] = "other"
    path.write_text(json.dumps(record))
    try:
        report = build_report([str(evaluated.dir)], tmp_path / "r2", iters=50)
        assert any("2 versions of the code" in n for n in report.notes)
        assert "evaluation: 0.1.0 @ fffffff" in report.runs[0].code_summary()
    finally:
        path.write_text(saved)

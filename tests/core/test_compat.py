"""Nothing a user has changes with the code: a run store written before the architecture change
(`tests/fixtures/runstore_644e38b`, the README main job as commit 644e38b wrote it) is reported by
`harness report` and reused, not redone, by a `harness run` command that asks for the same training: the
`cpu` profile of that commit trained without gradient checkpointing (the profile has it on since
2026-12-06, which makes the README main job new runs), so the command adds
`--set gradient_checkpointing=false`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.core.config import RunConfig
from harness.data.models import resolve_model
from harness.orchestration.options import RunOptions, plan_runs
from harness.plumbing.errors import HarnessError

STORE = Path(__file__).resolve().parents[1] / "fixtures" / "runstore_644e38b"
RUNS = ("none-4ddf9652f3", "vanilla-8a432f4f2b", "cc-868005e132")
MAIN_JOB = ["--method", "none,vanilla,cc", "--tasks", "sib200_gen", "--langs", "en,es,zh,sw",
            "--train-langs", "en,es,zh,sw", "--train-limit", "32", "--set", "gradient_checkpointing=false"]  # fmt: skip


def test_stored_configs_keep_their_run_ids() -> None:
    import yaml

    for name in RUNS:
        values = yaml.safe_load((STORE / name / "config.yaml").read_text(encoding="utf-8"))
        values.pop("command")
        assert RunConfig.from_dict({k: v for k, v in values.items() if k != "run_id"}, name).run_id == name


def test_the_main_job_plans_the_stored_run_ids() -> None:
    values = {"method": "none,vanilla,cc", "tasks": "sib200_gen", "langs": "en,es,zh,sw",
              "train_langs": "en,es,zh,sw", "train_limit": "32", "profile": "cpu"}  # fmt: skip
    assert [p.run_id for p in plan_runs(RunOptions.parse({**values, "set": ["gradient_checkpointing=false"]}))] == list(RUNS)
    # the same command on today's profile (gradient checkpointing on) trains new runs; `none` does not train
    today = [p.run_id for p in plan_runs(RunOptions.parse(values))]
    assert today[0] == RUNS[0] and not set(today[1:]) & set(RUNS)


def test_report_and_reuse_of_an_old_run_store(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(STORE, runs, ignore=shutil.ignore_patterns("README.md"))
    before = {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file()}

    assert main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert all(name in html for name in RUNS) and "layer choice" in html  # CC's figure, from the method
    scores = pd.read_csv(tmp_path / "report" / "scores.csv")
    stored = json.loads((runs / "cc-868005e132" / "results" / "sib200_gen_es.json").read_text())
    cell = scores[(scores.variant == "cc") & (scores.column == "es")].score
    assert cell.iloc[0] == pytest.approx(100 * stored["metrics"]["acc"], abs=1e-4)

    try:
        resolve_model("smollm2-135m-instruct")  # `harness run` checks the model before reusing
    except HarnessError as e:
        pytest.skip(str(e))
    capsys.readouterr()
    assert main(["run", *MAIN_JOB, "--profile", "cpu", "--output", str(runs)]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("run ")] == list(RUNS)
    # Reused as they are: nothing trained, evaluated or rewritten (each run's empty lock file, `.lock`, is
    # created by the reuse: it holds no data).
    after = {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    assert all((runs / run / ".lock").read_bytes() == b"" for run in RUNS)

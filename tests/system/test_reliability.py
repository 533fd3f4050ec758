"""Crash safety, proven by killing real processes: `harness run`, `harness sweep` and `harness report`
die by SIGKILL at each phase, are started again with the same command, and must end with exactly the
numbers of an uninterrupted run. Also: Ctrl-C, a full disk, and determinism across processes.

Every fault fires at a named point of `harness.plumbing.faults`, inside the process: a signal sent from the test
at some moment would race the run (a tiny run can finish first on a fast machine), so no test here
polls, sleeps or sets a timeout, and each passes as well on a slow busy machine as on a fast idle one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.core.store import Run
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import confined
from harness.training.trainer import latest_checkpoint

pytestmark = pytest.mark.crash

# Three items of a log-likelihood task (21 requests: two evaluation chunks at batch size 1) and of a
# generation task; four optimizer steps with a checkpoint after each.
TASKS = "sib200_mc_sw,sib200_gen_sw"


def run_args(tiny_dir: Path, train_file: Path, out: Path, method: str = "vanilla") -> list[str]:
    return [
        "run", "--method", method, "--model", str(tiny_dir), "--recipe", "jsonl", "--recipe-path",
        str(train_file), "--tasks", TASKS, "--limit", "3", "--batch-size", "1", "--output", str(out),
        "--set", "max_steps=4", "--set", "save_steps=1", "--set", "per_device_batch_size=4",
        "--set", "batch_size=4", "--set", "bf16=false", "--set", "logging_steps=1",
    ]  # fmt: skip


def _default_sigint() -> None:
    """A shell starts background commands with SIGINT ignored (`cmd &` without job control, as a CI job or
    `nohup` may run the suite), children inherit that, and Python then installs no Ctrl-C handler: the
    interrupt fault's SIGINT would do nothing. The harness run gets SIGINT as a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def harness(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=env, preexec_fn=_default_sigint)  # fmt: skip


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if (p / "config.yaml").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def outcome(run_dir: Path) -> dict[str, object]:
    """Everything a report reads from a run, plus the trained weights."""
    found: dict[str, object] = {}
    for path in sorted((run_dir / "results").glob("*.json")):
        found[path.name] = json.loads(path.read_text())
    for path in sorted((run_dir / "samples").glob("*.jsonl")):
        found[path.name] = path.read_text()
    for name in ("eval_artifacts.json", "data.json"):
        if (run_dir / name).is_file():
            found[name] = json.loads((run_dir / name).read_text())
    for name in ("model.safetensors", "cc.safetensors"):
        if (run_dir / "model" / name).is_file():
            found[name] = (run_dir / "model" / name).read_bytes()
    losses = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    found["losses"] = [(r["step"], r["loss"]) for r in losses if "loss" in r]
    return found


@pytest.fixture(scope="module")
def baselines(tiny_dir: Path, train_file: Path, tmp_path_factory) -> dict[str, dict[str, object]]:
    """Uninterrupted vanilla and cc runs: the numbers every resumed run must reproduce."""
    found = {}
    for method in ("vanilla", "cc"):
        out = tmp_path_factory.mktemp(f"base-{method}")
        done = harness(*run_args(tiny_dir, train_file, out, method))
        assert done.returncode == 0, done.stderr[-3000:]
        found[method] = outcome(only_run(out))
    return found


@pytest.mark.parametrize(
    ("method", "fault", "resumed_from"),
    [
        ("vanilla", "kill@data", "training examples"),
        ("vanilla", "kill@train_step#2", "resuming training from"),
        ("vanilla", "kill@train_step#4", "resuming training from"),  # after the last step, before the save
        ("vanilla", "kill@eval_chunk#1", "loglikelihood: 16 of 21 responses from the run's cache"),
        ("vanilla", "kill@eval_chunk#2", "21 responses from the run's cache, 3 computed"),
        ("vanilla", "kill@result", "3 responses from the run's cache, 0 computed"),  # the task left
        ("cc", "kill@train_step#1", "resuming training from"),
        ("cc", "kill@wt_fit", "resuming training from"),
        ("cc", "kill@eval_chunk#1", "loglikelihood: 16 of 21 responses from the run's cache"),
    ],
)
def test_killed_run_resumes_to_the_same_numbers(
    method: str, fault: str, resumed_from: str, baselines, tiny_dir: Path, train_file: Path, tmp_path: Path
) -> None:
    args = run_args(tiny_dir, train_file, tmp_path, method)
    killed = harness(*args, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["phase"] != "complete"
    # What a report would read of the killed run: no result without its samples, nothing half-written.
    for path in (run_dir / "results").glob("*.json"):
        assert (run_dir / "samples" / f"{path.stem}.jsonl").is_file()
        json.loads(path.read_text())
    resumed = harness(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_from in resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "complete"
    assert outcome(run_dir) == baselines[method]


def test_report_killed_midway_keeps_the_previous_report(
    baselines, tiny_dir, train_file, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    assert harness(*run_args(tiny_dir, train_file, runs)).returncode == 0
    out = tmp_path / "report"
    assert harness("report", str(runs), "--out", str(out), "--bootstrap", "50").returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert harness(*run_args(tiny_dir, train_file, runs, "cc")).returncode == 0
    killed = harness("report", str(runs), "--out", str(out), "--bootstrap", "50", fault="kill@report")
    assert killed.returncode == -signal.SIGKILL
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    again = harness("report", str(runs), "--out", str(out), "--bootstrap", "50")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "cc" in (out / "scores.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # no temporary folders left


def test_sweep_killed_while_its_second_run_trains_resumes(
    baselines, tiny_dir, train_file, tmp_path: Path
) -> None:
    """SIGKILL while the second run of a sweep is training, its first run finished, then the same command
    again: the first run is reused, the second resumed from its checkpoint, and both end with the numbers
    of uninterrupted runs."""
    runs = tmp_path / "runs"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({
        "model": str(tiny_dir), "recipe": "jsonl", "recipe_path": str(train_file), "tasks": TASKS, "limit": 3,
        "batch_size": 1, "output": str(runs),
        "set": {"max_steps": 4, "save_steps": 1, "per_device_batch_size": 4, "batch_size": 4, "bf16": False,
                "logging_steps": 1},
        "grid": [{"method": ["vanilla", "cc"]}],
    }))  # fmt: skip
    # The runs share the sweep's process, and with it the count of checkpoints: vanilla writes 4, so the
    # 6th is cc's 2nd.
    killed = harness("sweep", str(sweep), fault="kill@train_step#6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (vanilla,) = runs.glob("vanilla-*")
    (cc,) = runs.glob("cc-*")
    assert json.loads((vanilla / "status.json").read_text())["phase"] == "complete"
    assert json.loads((cc / "status.json").read_text())["phase"] == "training"
    assert latest_checkpoint(cc / "checkpoints") == str(cc / "checkpoints" / "checkpoint-2")
    again = harness("sweep", str(sweep))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the finished run" in again.stderr and "resuming training from" in again.stderr
    assert outcome(vanilla) == baselines["vanilla"]
    assert outcome(cc) == baselines["cc"]


def test_interrupt_fault_raises_ctrl_c_at_the_nth_pass_of_its_point(monkeypatch) -> None:
    """`interrupt@<point>#n` sends SIGINT to the process itself the n-th time the point is passed, and only
    then; Python's own handler turns it into the KeyboardInterrupt of a Ctrl-C, raised by the point."""
    monkeypatch.setenv(faults.ENV, "interrupt@train_step#2")
    monkeypatch.setattr(faults, "_hits", Counter())
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        faults.point("eval_chunk")  # another point: not counted
        faults.point("train_step")
        with pytest.raises(KeyboardInterrupt):
            faults.point("train_step")
        faults.point("train_step")  # past the n-th pass: nothing
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(baselines, tiny_dir, train_file, tmp_path: Path) -> None:
    """Ctrl-C while training, after the 2nd checkpoint: exit 130 with one line saying how to resume, and
    the same command again resumes to the numbers of an uninterrupted run."""
    args = run_args(tiny_dir, train_file, tmp_path)
    stopped = harness(*args, fault="interrupt@train_step#2")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        "interrupted: finished work is kept; run the same command again to resume"
    )
    assert "Traceback" not in stopped.stderr
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "training"
    resumed = harness(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming training from" in resumed.stderr
    assert outcome(run_dir) == baselines["vanilla"]


def test_disk_full_while_writing_results(baselines, tiny_dir, train_file, tmp_path: Path) -> None:
    args = run_args(tiny_dir, train_file, tmp_path)
    full = harness(*args, fault="enospc@write:/results/")
    run_dir = only_run(tmp_path)
    target = run_dir / "results" / "sib200_mc_sw.json"
    assert full.returncode == 1
    assert full.stderr.strip().splitlines()[-1] == (
        f"error: No space left on device ({target}); free space and run the same command again to resume"
    )
    assert "Traceback" not in full.stderr
    # Nothing that looks complete: no result file, no temporary file, the run marked failed.
    assert [p.name for p in (run_dir / "results").iterdir()] == []
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "failed" and "No space left on device" in status["error"]
    again = harness(*args)
    assert again.returncode == 0 and "24 responses from the run's cache, 0 computed" in again.stderr
    assert outcome(run_dir) == baselines["vanilla"]


def test_same_config_and_seed_give_identical_numbers_twice(baselines, tiny_dir, train_file, tmp_path) -> None:
    """The baseline ran in its own process and output folder; a second process reproduces it bit for bit,
    under the same run id."""
    done = harness(*run_args(tiny_dir, train_file, tmp_path))
    assert done.returncode == 0
    assert outcome(only_run(tmp_path)) == baselines["vanilla"]
    assert only_run(tmp_path).name in done.stdout


def test_names_cannot_lead_outside_the_run_folder(tmp_path: Path) -> None:
    from harness.core.config import RunConfig

    run = Run(tmp_path / "runs", RunConfig(method="none", model="m"))
    run.init("test")
    for bad in ("../../evil", "/etc/passwd", "a/b"):
        with pytest.raises(HarnessError, match="not a valid file name"):
            run.save_result(bad, {}, [])
    outside = tmp_path / "outside"
    outside.mkdir()
    (run.dir / "results").symlink_to(outside)
    with pytest.raises(HarnessError, match=r"leads outside .* \(a symlink\?\); refusing to write there"):
        run.save_result("xnli_gen_sw", {}, [])
    assert list(outside.iterdir()) == [] and not (tmp_path / "evil").exists()
    assert confined(tmp_path, "x", "y.json") == tmp_path / "x" / "y.json"

"""One run, one writer: two real `harness run` processes on the same run id. The first holds the run's
lock, frozen by SIGSTOP at a named point (`stop@locked`); the second says who holds it and waits; the first
goes on (SIGCONT) and finishes; the second then reuses the finished run. A process killed while holding
the lock does not block the next one.

No test here sleeps or polls a clock: the test waits for the first process to stop (`waitpid` with
WUNTRACED) and reads the second one's stderr until its waiting line, both blocking reads of events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.test_reliability import _default_sigint, run_args

pytestmark = pytest.mark.crash

WAITING = "is being written by process"


def start(args: list[str], fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)  # fmt: skip


def wait_until_stopped(proc: subprocess.Popen) -> None:
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the first process ended (status {status}) instead of stopping at the lock"


def test_second_process_waits_then_reuses_the_finished_run(tiny_dir, train_file, tmp_path: Path) -> None:
    args = run_args(tiny_dir, train_file, tmp_path, method="vanilla")
    first = start(args, fault="stop@locked")
    second = None
    try:
        wait_until_stopped(first)  # it holds the lock, before any work
        (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        owner = json.loads((run_dir / ".lock.owner").read_text())
        assert owner["pid"] == first.pid
        second = start(args)
        seen = []
        for line in second.stderr:  # blocks until the second process writes; it ends only after the first
            seen.append(line)
            if WAITING in line:
                break
        assert any(f"run {run_dir.name} is being written by process {first.pid} on " in s for s in seen), seen
        os.kill(first.pid, signal.SIGCONT)
        out1, err1 = first.communicate()
        assert first.returncode == 0, err1[-3000:]
        out2, err2 = second.communicate()
        assert second.returncode == 0, err2[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()
    assert "reusing the finished run" in err2
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert sum(1 for row in log if "train_runtime" in row) == 1  # one training, not two
    assert [row["step"] for row in log if "loss" in row] == [1, 2, 3, 4]
    assert not (run_dir / ".lock.owner").exists()
    assert out1.splitlines()[-1] == out2.splitlines()[-1]  # the same table


def test_a_lock_left_by_a_killed_process_does_not_block(tiny_dir, train_file, tmp_path: Path) -> None:
    args = run_args(tiny_dir, train_file, tmp_path, method="none")
    killed = start(args, fault="kill@locked")
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run_dir / ".lock.owner").exists()  # its record stays; the OS released the lock itself
    again = start(args)
    _, err = again.communicate()
    assert again.returncode == 0, err[-3000:]
    assert WAITING not in err
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "complete"

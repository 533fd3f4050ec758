"""End-to-end on the default model (SmolLM2-135M-Instruct) with small limits. Select with `-m e2e`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.tasks.catalog import TASKS_DIR

pytestmark = pytest.mark.e2e

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                         cwd=cwd, env=ENV)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, str]:
    """Zero-shot and vanilla SFT (2 steps on 8 examples) on SIB-200 in two languages, one command."""
    root = tmp_path_factory.mktemp("e2e")
    out = _harness("run", "--method", "none,vanilla", "--tasks", "sib200_mc,sib200_gen", "--langs", "sw,en",
                   "--train-limit", "4", "--train-langs", "sw,en", "--limit", "6", "--set", "max_steps=2",
                   "--output", str(root / "runs"), cwd=root)  # fmt: skip
    return root, out.stdout


def _run_dir(root: Path, method: str) -> Path:
    (run,) = [p for p in (root / "runs").iterdir() if p.name.startswith(method + "-")]
    return run


def test_run_prints_the_language_table_and_stores_everything(runs) -> None:
    root, stdout = runs
    assert "sib200_mc (acc x 100)" in stdout and "avg non-en" in stdout and "\nmajority " in stdout
    assert "most frequent answer" in stdout and "flags: C collapsed" in stdout
    for method in ("none", "vanilla"):
        run = _run_dir(root, method)
        assert json.loads((run / "status.json").read_text())["phase"] == "complete"
        for task in ("sib200_mc_sw", "sib200_mc_en", "sib200_gen_sw", "sib200_gen_en"):
            result = json.loads((run / "results" / f"{task}.json").read_text())
            assert result["n"] == 6
            assert len((run / "samples" / f"{task}.jsonl").read_text().splitlines()) == 6
    vanilla = _run_dir(root, "vanilla")
    assert (vanilla / "model" / "model.safetensors").is_file()
    data = json.loads((vanilla / "data.json").read_text())
    assert data["per_language"] == {"en": 4, "sw": 4}


def test_rerun_reuses_the_finished_runs(runs) -> None:
    root, _ = runs
    weights = _run_dir(root, "vanilla") / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    out = _harness("run", "--method", "none,vanilla", "--tasks", "sib200_mc,sib200_gen", "--langs", "sw,en",
                   "--train-limit", "4", "--train-langs", "sw,en", "--limit", "6", "--set", "max_steps=2",
                   "--output", str(root / "runs"), cwd=root)  # fmt: skip
    assert out.stderr.count("reusing the finished run") == 2
    assert weights.stat().st_mtime_ns == before


def test_lm_eval_on_the_saved_checkpoint_gives_the_same_scores(runs) -> None:
    """lm-eval's own CLI (`lm_eval --model hf`) on our task files scores the checkpoint identically, item by
    item: for `mc` the same log-likelihood of every option (so the same ranking and chosen answer), for
    `gen` the same generated text."""
    root, _ = runs
    run = _run_dir(root, "vanilla")
    tasks = ["sib200_mc_sw", "sib200_mc_en", "sib200_gen_sw"]
    out_dir = root / "lm_eval_out"
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf",
         "--model_args", f"pretrained={run / 'model'},dtype=float32", "--device", "cpu", "--batch_size", "8",
         "--tasks", ",".join(tasks), "--include_path", str(TASKS_DIR), "--apply_chat_template",
         "--limit", "6", "--output_path", str(out_dir), "--log_samples"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = list(out_dir.rglob("results_*.json"))
    theirs = json.loads(result_file.read_text())["results"]
    for task in tasks:
        ours = json.loads((run / "results" / f"{task}.json").read_text())["metrics"]["acc"]
        assert theirs[task]["acc,none"] == pytest.approx(ours, abs=1e-9), task
        (sample_file,) = list(out_dir.rglob(f"samples_{task}_*.jsonl"))
        their_items = {row["doc_id"]: row for row in map(json.loads, sample_file.read_text().splitlines())}
        our_items = [json.loads(line) for line in (run / "samples" / f"{task}.jsonl").read_text().splitlines()]
        assert len(their_items) == len(our_items) == 6
        for doc_id, mine in enumerate(our_items):
            other = their_items[doc_id]
            assert other["acc"] == mine["acc"], (task, doc_id)
            if "_mc_" in task:  # [[log-likelihood, is_greedy], ...] per option, as strings in the file
                lls = [float(resp[0]) for resp in other["filtered_resps"]]
                assert mine["loglikelihoods"] == pytest.approx(lls, abs=1e-4), (task, doc_id)
                assert max(range(len(lls)), key=lls.__getitem__) == mine["loglikelihoods"].index(max(mine["loglikelihoods"]))
            else:
                assert other["filtered_resps"][0] == mine["output"], (task, doc_id)


def test_report_writes_markdown_and_csv(runs) -> None:
    root, _ = runs
    _harness("report", str(root / "runs"), "--out", str(root / "report"), cwd=root)
    md = (root / "report" / "results.md").read_text()
    assert "| sib200_mc" in md and "none" in md and "vanilla" in md
    assert len((root / "report" / "results.csv").read_text().splitlines()) == 1 + 2 * 4

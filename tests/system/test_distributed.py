"""Data-parallel training and evaluation under `accelerate launch`: two CPU processes (DDP over gloo) train
the same model as one process with the same effective batch, CC-Tuning included, and evaluate it to the same
numbers as one process (each its share of the items, gathered into the main process, which alone writes
the run store); a sweep runs its runs one after another in one launch. Also the batch layout over processes
and the save path of sharded training (ZeRO-3 / FSDP), simulated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from harness.core.config import EvalConfig, RunConfig
from harness.orchestration.pipeline import execute
from harness.plumbing.errors import HarnessError
from harness.training.settings import PROFILES, TrainSettings, batch_layout

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"

# A learning rate high enough that 3 Adam steps move the weights by ~1e-3 (the default 1e-4 with warm-up
# moves them by ~1e-4, no more than the tolerance would be).
TRAIN = {**PROFILES["cpu"].to_dict(), "max_steps": 3, "batch_size": 4, "bf16": False, "logging_steps": 1,
         "learning_rate": 1e-3, "warmup_ratio": 0.0, "save_steps": 100}  # fmt: skip

# Two processes see the same 4 examples per step as one process (2 + 2 against 4: the length-grouped order
# is the same, and the Trainer divides the summed loss by the token count gathered over the processes), so
# the gradients differ only by float32 summation order (~1e-7 relative). Adam's update per step is at most
# ~lr = 1e-3 in size, so after 3 steps the weights differ by far less than that (measured: 6e-8, the weights
# having moved by 2e-3); 1e-5 leaves a wide margin while staying 100x below how far training moves them.
ATOL = 1e-5


def _config(tiny_dir: Path, train_file: Path, method: str = "vanilla", **train) -> RunConfig:
    return RunConfig(method=method, model=str(tiny_dir), recipe="jsonl", recipe_path=str(train_file),
                     train_limit=None, train={**TRAIN, **train})  # fmt: skip


def test_batch_layout_keeps_the_effective_batch() -> None:
    paper = TrainSettings()  # batch 16, 4 per device
    assert batch_layout(paper, 1) == (4, 4)
    assert batch_layout(paper, 2) == (4, 2)
    assert batch_layout(paper, 8) == (2, 1)  # the paper's 8 GPUs: 2 per device, no accumulation
    assert batch_layout(TrainSettings(batch_size=4, per_device_batch_size=8), 1) == (4, 1)
    with pytest.raises(HarnessError, match="batch_size 10 is not a multiple"):
        batch_layout(TrainSettings(batch_size=10, per_device_batch_size=4), 1)
    with pytest.raises(HarnessError, match=r"\(1 x 8\)"):
        batch_layout(TrainSettings(batch_size=4, per_device_batch_size=1), 8)


def _log_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def launch(*args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` of `harness <args>` in two CPU processes (DDP over gloo), its output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HARNESS_FAULT", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
           "-m", "harness.cli", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


# Evaluated by every launch of these tests: a log-likelihood and a generation task, an odd number of items
# (the two processes get 3 and 2: lm-eval pads the second with a copy of its last request).
TASKS, LIMIT, EVAL_BATCH = "sib200_mc_sw,sib200_gen_sw", 5, 2


@pytest.fixture(scope="module")
def launched_run(tmp_path_factory, tiny_dir: Path, train_file: Path) -> Path:
    """One 2-process `harness run` of vanilla and CC-Tuning (trained, then evaluated data-parallel); its run
    store."""
    tmp = tmp_path_factory.mktemp("launched")
    runs = tmp / "runs"
    run_file = tmp / "run.yaml"
    run_file.write_text(yaml.safe_dump({
        "method": "vanilla,cc", "model": str(tiny_dir), "recipe": "jsonl", "recipe_path": str(train_file),
        "train_limit": None, "tasks": TASKS, "limit": LIMIT, "batch_size": EVAL_BATCH, "output": str(runs),
        "set": {**TRAIN, "per_device_batch_size": 2},
    }))  # fmt: skip
    proc = launch("run", "--config", str(run_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_lines = [line for line in proc.stdout.splitlines() if line.startswith("run ")]
    assert len(run_lines) == 2  # printed by the main process only
    return runs


@pytest.mark.distributed
def test_two_cpu_processes_train_the_same_model_as_one(
    tmp_path: Path, tiny_dir: Path, train_file: Path, launched_run: Path
) -> None:
    one = execute(_config(tiny_dir, train_file, per_device_batch_size=4), [], EvalConfig(tasks=[]),
                  tmp_path / "one", "test")  # fmt: skip

    runs = launched_run
    (two,) = runs.glob("vanilla-*")
    (cc,) = runs.glob("cc-*")
    cfg = yaml.safe_load((two / "config.yaml").read_text())
    assert cfg["run_id"] == two.name and cfg["train"]["per_device_batch_size"] == 2
    status = json.loads((two / "status.json").read_text())
    assert status["phase"] == "complete" and status["tasks"] == TASKS.split(",")
    assert status["data_stats"]["examples"] == 12
    assert json.loads((two / "data.json").read_text())["per_language"] == {"en": 6, "sw": 6}
    # Every file of a finished run, and nothing else: no checkpoints/, no process's own cache file, no
    # temporary files left behind.
    expected = [".lock", "config.yaml", "data.json", "eval_cache.sqlite", "lm_eval", "model", "provenance.json",
                "results", "samples", "status.json", "train_log.jsonl"]  # fmt: skip
    assert sorted(p.name for p in two.iterdir()) == expected
    model_files = {p.name for p in (two / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= model_files
    assert not any(name.startswith(".") for name in model_files)
    for task in TASKS.split(","):
        result = json.loads((two / "results" / f"{task}.json").read_text())
        samples = (two / "samples" / f"{task}.jsonl").read_text().splitlines()
        assert result["n"] == LIMIT and len(samples) == LIMIT

    # One log record per step (the other process logs nothing), the same losses as one process.
    losses_one, losses_two = _log_losses(one.dir), _log_losses(two)
    assert [s for s, _ in losses_two] == [1, 2, 3]
    assert [loss for _, loss in losses_two] == pytest.approx([loss for _, loss in losses_one], rel=1e-5)

    base = load_file(str(tiny_dir / "model.safetensors"))
    w_one = load_file(str(one.model_dir / "model.safetensors"))
    w_two = load_file(str(two / "model" / "model.safetensors"))
    assert w_one.keys() == w_two.keys()
    moved = max((w_one[k] - base[k]).abs().max().item() for k in w_one)
    diff = max((w_one[k] - w_two[k]).abs().max().item() for k in w_one)
    assert moved > 100 * ATOL and diff < ATOL, (moved, diff)

    # CC-Tuning trains too (its Gumbel noise differs per process, so its weights are not compared): the
    # Decision Maker's layer choices are counted over both processes' examples, 4 per step.
    assert json.loads((cc / "status.json").read_text())["phase"] == "complete"
    assert {"cc.safetensors", "cc.json", "model.safetensors"} <= {p.name for p in (cc / "model").iterdir()}
    rows = [json.loads(line) for line in (cc / "train_log.jsonl").read_text().splitlines()]
    assert [sum(r["cc_layer_hist"]) for r in rows if "cc_layer_hist" in r] == [4, 4, 4]
    assert sum(json.loads((cc / "cc_artifacts.json").read_text())["train_layer_hist"]) == 12
    assert (cc / "results" / "sib200_mc_sw.json").is_file() and not list(cc.glob("eval_cache.rank*"))


def _evaluate_in_one_process(checkpoint: Path, output: Path, tasks: str = TASKS, limit: int = LIMIT) -> Path:
    """`harness eval` of a checkpoint in this (one) process; its run folder."""
    from harness.cli import main

    assert main(["eval", "--checkpoint", str(checkpoint), "--tasks", tasks, "--limit", str(limit),
                 "--batch-size", str(EVAL_BATCH), "--output", str(output)]) == 0  # fmt: skip
    (run,) = output.iterdir()
    return run


def _same_evaluation(a: Path, b: Path, tasks: str = TASKS) -> None:
    """The same metrics, item count, diagnostics and per-item samples (prompts, outputs, log-likelihoods)."""
    for task in tasks.split(","):
        ra, rb = (json.loads((run / "results" / f"{task}.json").read_text()) for run in (a, b))
        for field in ("metrics", "n", "diagnostics"):
            assert ra.get(field) == rb.get(field), (task, field)
        samples = [(run / "samples" / f"{task}.jsonl").read_text() for run in (a, b)]
        assert samples[0] == samples[1], task


def _last_evaluation(run: Path) -> dict:
    phases = json.loads((run / "provenance.json").read_text())["phases"]
    return [p for p in phases if p["phase"] == "evaluation"][-1]


@pytest.mark.distributed
def test_data_parallel_evaluation_gives_the_numbers_of_one_process(
    tmp_path: Path, launched_run: Path, capsys
) -> None:
    """Each process evaluated its share of the items (lm-eval's rank and world size) and the main process
    wrote what lm-eval gathered: the metrics, the per-item samples (log-likelihoods to the last bit,
    generations) and CC-Tuning's layer choices at evaluation are those of one process evaluating the same
    checkpoint."""
    for method in ("vanilla", "cc"):
        (two,) = launched_run.glob(f"{method}-*")
        one = _evaluate_in_one_process(two / "model", tmp_path / method)
        _same_evaluation(two, one)
        assert _last_evaluation(two)["responses_cached"] == 0
    artifacts = [json.loads((run / "eval_artifacts.json").read_text()) for run in (two, one)]
    assert artifacts[0] == artifacts[1] and artifacts[0]["eval_prompts"] > 0  # both processes' choices

    # A data-parallel evaluation killed before its end leaves each process's cache file; the next
    # evaluation of the run, here in one process, merges them first and reuses every response (and the
    # layer choices saved with them).
    copy = tmp_path / "again"
    shutil.copytree(launched_run, copy)
    (cc,) = copy.glob("cc-*")
    (cc / "eval_cache.sqlite").rename(cc / "eval_cache.rank1.sqlite")
    shutil.rmtree(cc / "results")
    shutil.rmtree(cc / "samples")
    from harness.cli import main

    assert main(["run", "--config", str(launched_run.parent / "run.yaml"), "--method", "cc",
                 "--output", str(copy)]) == 0  # fmt: skip
    capsys.readouterr()
    _same_evaluation(cc, one)
    assert _last_evaluation(cc)["responses_computed"] == 0 and _last_evaluation(cc)["responses_cached"] > 0
    assert json.loads((cc / "eval_artifacts.json").read_text()) == artifacts[1]
    assert not list(cc.glob("eval_cache.rank*"))


@pytest.mark.distributed
def test_a_sweep_runs_its_runs_one_after_another_in_one_launch(
    tmp_path: Path, tiny_dir: Path, train_file: Path
) -> None:
    """Two points in one 2-process launch: the base model zero-shot on one item (evaluated before anything
    trained, so the processes meet without the Trainer's process group; fewer items than processes, so the
    main process evaluates alone), then vanilla (trained after an evaluation, evaluated data-parallel)."""
    runs = tmp_path / "runs"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "model": str(tiny_dir), "recipe": "jsonl", "recipe_path": str(train_file), "train_limit": None,
        "tasks": "sib200_mc_sw", "limit": 3, "batch_size": EVAL_BATCH, "output": str(runs),
        "set": {**TRAIN, "per_device_batch_size": 2},
        "grid": [{"method": "none", "limit": 1}, {"method": "vanilla"}],
    }))  # fmt: skip
    proc = launch("sweep", str(sweep_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [line for line in proc.stdout.splitlines() if "-> done in" in line]
    assert [line.split()[0] for line in done] == ["[1/2]", "[2/2]"]  # printed by the main process only
    assert "the main process evaluates alone" in proc.stderr
    (none,) = runs.glob("none-*")
    (vanilla,) = runs.glob("vanilla-*")
    for run, n in ((none, 1), (vanilla, 3)):
        assert json.loads((run / "status.json").read_text())["phase"] == "complete"
        assert json.loads((run / "results" / "sib200_mc_sw.json").read_text())["n"] == n
        assert not list(run.glob("eval_cache.rank*")) and not list(run.glob(".lm_eval*"))
    one = _evaluate_in_one_process(tiny_dir, tmp_path / "one", tasks="sib200_mc_sw", limit=1)
    _same_evaluation(none, one, tasks="sib200_mc_sw")


@pytest.mark.parametrize("method", ["vanilla", "cc"])
def test_sharded_save_writes_the_gathered_weights(
    method: str, monkeypatch, tmp_path: Path, tiny_dir: Path, train_file: Path
) -> None:
    """ZeRO-3 / FSDP cannot run on a CPU; simulated: after training the Trainer reports sharded weights and
    the gathered state dict is the model's own. The checkpoint (and CC-Tuning's W_T, fitted with the model
    loaded back from it) must equal the one saved from the model itself."""
    from accelerate import Accelerator
    from transformers import Trainer

    cfg = _config(tiny_dir, train_file, method=method, per_device_batch_size=4)
    plain = execute(cfg, [], EvalConfig(tasks=[]), tmp_path / "plain", "test")

    train = Trainer.train
    gathered: list[int] = []

    def train_then_shard(self, *args, **kwargs):
        out = train(self, *args, **kwargs)
        self.is_fsdp_enabled = True
        return out

    def get_state_dict(self, model, unwrap=True):
        gathered.append(1)
        return {k: v.detach().clone() for k, v in self.unwrap_model(model).state_dict().items()}

    monkeypatch.setattr(Trainer, "train", train_then_shard)
    monkeypatch.setattr(Accelerator, "get_state_dict", get_state_dict)
    sharded = execute(cfg, [], EvalConfig(tasks=[]), tmp_path / "sharded", "test")
    assert gathered == [1]
    files = ["model.safetensors"] + (["cc.safetensors"] if method == "cc" else [])
    for name in files:
        a, b = load_file(str(plain.model_dir / name)), load_file(str(sharded.model_dir / name))
        assert a.keys() == b.keys(), name
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")

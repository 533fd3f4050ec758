"""Every input checked before any work starts: training settings by type and range, method options against
the model, tasks the method cannot evaluate, model folders without weights or tokenizer, output folders
that cannot be made, empty lists, and files that are folders. Each case ends with exactly one `error: ...`
line (asserted in full), exit 2, and no run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.cli.test_bad_input import error_of, save_tiny

SETTINGS = "in --set / config"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("learning_rate=abc", f"training setting learning_rate='abc' {SETTINGS}: expected a number (default: 1e-05)"),
        ("epochs=-1", f"training setting epochs=-1 {SETTINGS}: must be above 0 (or give max_steps) (default: 3.0)"),
        ("max_steps=0", f"training setting max_steps=0 {SETTINGS}: must be -1 (train for `epochs`) or at least 1 "
                        "(default: -1)"),
        ("warmup_ratio=2", f"training setting warmup_ratio=2 {SETTINGS}: must be a ratio from 0 to 1 (default: 0.1)"),
        ("batch_size=0", f"training setting batch_size=0 {SETTINGS}: must be at least 1 (default: 16)"),
        ("max_length=-5", f"training setting max_length=-5 {SETTINGS}: must be at least 1 token (default: 1024)"),
        ("lora_dropout=1", f"training setting lora_dropout=1 {SETTINGS}: must be from 0 up to (not including) 1 "
                           "(default: 0.05)"),
        ("lr_scheduler=cosin", f"unknown lr_scheduler 'cosin' {SETTINGS} (did you mean 'cosine'?); valid: constant, "),
    ],
)  # fmt: skip
def test_training_settings_by_type_and_range(tmp_path: Path, tiny_dir: Path, capsys, setting: str, message: str) -> None:
    code, line = error_of(capsys, "run", "--model", str(tiny_dir), "--tasks", "sib200_mc_sw", "--set", setting,
                          "--output", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and line.startswith(f"error: {message}"), line
    assert not (tmp_path / "runs").exists()


def test_a_negative_epoch_count_with_max_steps_is_valid(tmp_path: Path, tiny_dir: Path, capsys) -> None:
    """`max_steps` overrides `epochs`: the pair is a valid plan."""
    assert main(["run", "--model", str(tiny_dir), "--tasks", "sib200_mc_sw", "--set", "epochs=-1", "--set",
                 "max_steps=3", "--dry-run", "--output", str(tmp_path / "runs")]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("fixed_source_layer=999", "option fixed_source_layer=999 of method 'cc' is out of range for --model {m}: it "
                                   "has 2 layers, 0..1 (or -1: the Decision Maker chooses)"),
        ("fuse_after_layer=2", "option fuse_after_layer=2 of method 'cc' is out of range for --model {m}: it has 2 "
                               "layers, 0..1"),
    ],
)  # fmt: skip
def test_method_options_by_range_against_the_model(
    tmp_path: Path, tiny_dir: Path, capsys, option: str, message: str
) -> None:
    code, line = error_of(capsys, "run", "--method", "cc", "--method-opt", option, "--model", str(tiny_dir),
                          "--tasks", "sib200_mc_sw", "--output", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and line == "error: " + message.format(m=tiny_dir), line
    assert not (tmp_path / "runs").exists()  # refused before the data were prepared or the model loaded


def test_a_task_the_method_cannot_evaluate_is_refused_before_training(tmp_path: Path, tiny_dir: Path, capsys) -> None:
    code, line = error_of(capsys, "run", "--method", "cc", "--model", str(tiny_dir), "--tasks", "wikitext",
                          "--output", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2
    assert line == ("error: method 'cc' cannot evaluate task wikitext (loglikelihood_rolling): the CC-Tuning model "
                    "scores continuations of a prompt (it fuses at the prompt's last token); loglikelihood_rolling "
                    "(perplexity) tasks have no prompt: evaluate them with a plain HFLM; leave it out of --tasks")  # fmt: skip
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("model.safetensors", "folder has no weights (*.safetensors); expected a Hugging Face checkpoint"),
        ("tokenizer", "folder has no tokenizer (tokenizer.json, tokenizer_config.json, tokenizer.model); save it "
                      "beside the weights with tokenizer.save_pretrained(folder)"),
        ("config.json", "folder has no config.json; expected a Hugging Face checkpoint"),
    ],
)  # fmt: skip
def test_model_folder_without_weights_or_tokenizer(tmp_path: Path, capsys, drop: str, message: str) -> None:
    folder = save_tiny(tmp_path / "m")
    for path in folder.glob("tokenizer*" if drop == "tokenizer" else drop):
        path.unlink()
    code, line = error_of(capsys, "run", "--model", str(folder), "--tasks", "sib200_mc_sw", "--output",
                          str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and line == f"error: --model {folder}: {message}", line
    assert not (tmp_path / "runs").exists()


def test_messages_that_are_not_about_resuming(tmp_path: Path, tiny_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    model = ["--model", str(tiny_dir), "--tasks", "sib200_mc_sw"]
    cases = [
        (["run", "--config", "folder"], "error: --config folder: is a folder; expected a YAML file of options"),
        (["sweep", "folder"], "error: sweep file folder: is a folder; expected a YAML file of options"),
        (["run", *model, "--output", "afile/runs"],
         f"error: --output afile/runs: {tmp_path / 'afile'} is a file, so the folder cannot be created"),
        (["run", *model, "--output", "afile"], "error: --output afile: is a file; give a folder"),
        (["run", "--method", ""], "error: --method '': expected one or more method names (see `harness methods`)"),
        (["run", "--seeds", ","], "error: --seeds ',': expected one or more whole numbers"),
        (["run", "--langs", ""], "error: --langs '': expected one or more language codes (see `harness tasks`)"),
        (["run", "--train-langs", ","], "error: --train-langs ',': expected one or more language codes (see `harness tasks`)"),
        (["run", "--seed", "-1"], "error: --seed '-1': a seed must be a whole number from 0 to 4294967295"),
        (["report", "folder", "--bootstrap", "0"],
         "error: --bootstrap 0: at least 40 replicates are needed for a 95 % interval (default 2000)"),
        (["report", "folder", "--out", "afile"], "error: --out afile: is a file; give a folder"),
    ]  # fmt: skip
    for argv, message in cases:
        code, line = error_of(capsys, *argv)
        assert (code, line) == (2, message), argv
        assert "resume" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]


def test_output_closed_by_its_reader_is_not_an_error() -> None:
    """`harness tasks | head -1`: the reader goes away; the command stops quietly (141, as after SIGPIPE),
    without a message about resuming. The pipe's read end is closed before the process starts, so its very
    first write fails: nothing here depends on timing."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "harness.cli", "tasks"], stdout=write, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""

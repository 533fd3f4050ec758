"""A latent-level method is one module: `tests/plugins/latent_shift.py` (the second worked example of
docs/adding-a-method.md), registered by this test and nowhere else, is trained, evaluated with its own
evaluator, swept over its evaluation-time option (one training), dry-run and reported with its own figure
through the ordinary commands, on the tiny model."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.core.method import METHODS, checkpoint_owner
from harness.core.store import read_status
from tests.tiny import save_tiny_model

EXAMPLES = [
    {"lang": lang, "instruction": f"{word} topic {i} {lang}", "output": "sports", "instruction_en": f"{word} topic {i}"}
    for i, word in enumerate(["What", "Which", "Name", "Say"]) for lang in ("sw", "fr", "en")
]  # fmt: skip


@pytest.fixture
def shift(monkeypatch):
    """The plugin registered for this test only."""
    METHODS.names()  # the built-in methods first (entry points), then the plugin beside them
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    name = "tests.plugins.latent_shift"
    module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    assert "shift" in METHODS
    return module


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    base = save_tiny_model(tmp_path / "base")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES), encoding="utf-8")
    return {
        "model": str(base), "recipe": "jsonl", "recipe_path": str(data), "train_limit": 10,
        "tasks": "sib200_mc_sw", "limit": 2, "batch_size": 2,
        "set": {"max_steps": 2, "per_device_batch_size": 4, "batch_size": 4, "bf16": False, "logging_steps": 1,
                "max_length": 128},
    }  # fmt: skip


def test_the_plugin_trains_evaluates_sweeps_and_reports(tmp_path: Path, shift, setup, capsys) -> None:
    sweep = tmp_path / "shift.yaml"
    sweep.write_text(yaml.safe_dump({**setup, "grid": {"method": "shift", "method_opt": {"alpha": [0.0, 1.0, 2.0]}}}))
    runs, report = tmp_path / "runs", tmp_path / "report"
    assert main(["sweep", str(sweep), "--output", str(runs), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "3 runs in" in out and ", 1 to train, 3 to evaluate" in out  # alpha is an evaluation-time option

    done = {read_status(d)["phase"] for d in runs.iterdir()}
    assert done == {"complete"}
    by_alpha = {}
    for run_dir in runs.iterdir():
        artifacts = json.loads((run_dir / "eval_artifacts.json").read_text())
        by_alpha[artifacts["alpha"]] = run_dir
        assert artifacts["method"] == "shift" and artifacts["shifted_forwards"] > 0  # its own evaluator ran
    assert sorted(by_alpha) == [0.0, 1.0, 2.0]
    trained = by_alpha[1.0]  # the default: the plain run trains, the others share its model
    assert (trained / shift.ARTIFACTS).is_file()
    for alpha in (0.0, 2.0):
        status = read_status(by_alpha[alpha])
        assert status["training_run"] == trained.name
        shared = (by_alpha[alpha] / "model" / shift.SHIFT_WEIGHTS).stat().st_ino
        assert shared == (trained / "model" / shift.SHIFT_WEIGHTS).stat().st_ino  # hard-linked
    html = (report / "index.html").read_text(encoding="utf-8")
    assert "latent shift: accuracy against alpha" in html and (report / "plots" / "shift_sib200_mc.png").is_file()

    # `harness eval` of the bare checkpoint folder: the plugin owns it and evaluates it at its defaults
    assert checkpoint_owner(by_alpha[2.0] / "model") is METHODS.get("shift")
    assert main(["eval", "--checkpoint", str(by_alpha[2.0] / "model"), "--tasks", "sib200_mc_sw", "--limit", "1",
                 "--output", str(tmp_path / "eval")]) == 0  # fmt: skip
    (eval_run,) = (tmp_path / "eval").iterdir()
    assert json.loads((eval_run / "eval_artifacts.json").read_text())["alpha"] == 1.0


def test_the_plugin_in_the_dry_run_and_its_option_checks(tmp_path: Path, shift, setup, capsys) -> None:
    args = ["run", "--method", "shift", "--model", setup["model"], "--recipe", "jsonl", "--recipe-path",
            setup["recipe_path"], "--tasks", "sib200_mc_sw", "--output", str(tmp_path / "runs"), "--dry-run"]  # fmt: skip
    assert main(args) == 0
    assert "shift: the mean English-minus-native state after decoder layer 0, added x 1.0 at evaluation" in (
        capsys.readouterr().out
    )
    assert main([*args, "--method-opt", "layer=99"]) == 2
    assert "option layer=99 of method 'shift': the model has 2 decoder layers" in capsys.readouterr().err
    assert main([*args, "--method-opt", "alpha=lots"]) == 2
    assert "option alpha='lots' of method 'shift' must be float" in capsys.readouterr().err


def test_the_docs_show_the_plugin_as_it_is() -> None:
    """Every code block of the second worked example in docs/adding-a-method.md is the plugin's own code."""
    import re

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "adding-a-method.md").read_text(encoding="utf-8")
    section = doc[doc.index("## A second worked example"):]
    source = (root / "tests" / "plugins" / "latent_shift.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        assert block in source, block

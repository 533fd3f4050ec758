"""LoRA (peft) works for every training method: the run trains adapters only (plus, for CC-Tuning, the
whole Decision Maker), and saves a plain checkpoint with the adapters merged, which lm-eval loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import set_seed

from harness.core.config import EvalConfig, RunConfig
from harness.data.models import load_model
from harness.evaluation.evaluate import resolve_tasks
from harness.methods import METHODS
from harness.methods.cc.model import CCModel, CCOptions
from harness.methods.cc.transform import load_cc
from harness.orchestration.pipeline import execute
from harness.training.settings import PROFILES, TrainSettings
from harness.training.trainer import apply_lora
from tests.tiny import tiny_llama, tiny_tokenizer

TRAINING_METHODS = [name for name in METHODS if METHODS.get(name).trains]
OPTIONS = {"aug_mt": {"mt_ratio": 0.5}, "sdrrl": {"max_new_tokens": 3}}


def test_every_training_method_is_covered() -> None:
    assert set(TRAINING_METHODS) >= {"vanilla", "cc", "aug_en", "aug_mt", "sdrrl"}


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_lora_run_saves_a_merged_checkpoint(method: str, tmp_path: Path, tiny_dir: Path) -> None:
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 2, "per_device_batch_size": 4, "batch_size": 4,
             "bf16": False, "lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2}  # fmt: skip
    cfg = RunConfig(method=method, model=str(tiny_dir), method_options=OPTIONS.get(method, {}),
                    recipe="mini-parallel", train_langs=["en", "sw"], train_limit=4, train=train)  # fmt: skip
    refs = resolve_tasks(["sib200_mc_sw"])
    run = execute(cfg, refs, EvalConfig(tasks=[r.name for r in refs], limit=2, batch_size=2), tmp_path, "t")
    assert run.status()["phase"] == "complete"
    tuned = load_file(str(run.model_dir / "model.safetensors"))
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert set(tuned) == set(base)  # adapters merged: no lora_A / lora_B / base_layer names left
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any("proj" in k for k in changed)  # the merged adapters moved the linear layers...
    assert not any("norm" in k or "embed" in k for k in changed)  # ...and nothing LoRA does not touch
    if method == "cc":
        # The Decision Maker as CCMethod.train initialises it (seed, then the LoRA model, then the DM).
        set_seed(cfg.seed)
        lm = apply_lora(load_model(str(tiny_dir)), TrainSettings.from_dict(train))
        initial = CCModel(lm, CCOptions()).decision_maker.weight.detach()
        trained = load_cc(run.model_dir).decision_maker
        assert trained.shape == initial.shape and not torch.equal(trained, initial)


def test_cc_with_lora_trains_the_decision_maker_fully() -> None:
    settings = TrainSettings(lora=True, lora_r=4, lora_alpha=8)
    model = CCModel(apply_lora(tiny_llama(tiny_tokenizer()), settings), CCOptions())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "decision_maker.weight" in trainable
    lm_trainable = trainable - {"decision_maker.weight"}
    assert lm_trainable and all("lora_" in name for name in lm_trainable)

"""Host memory under sharded training: with DeepSpeed ZeRO-3 (`zero3_init_flag`) or FSDP
(`cpu_ram_efficient_loading`) the TrainingArguments come before the model, so that `from_pretrained`
partitions it while loading (ZeRO-3) or reads it on local rank 0 only (FSDP, the other processes on the meta
device); elsewhere every process loads the model as before."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from harness.data.models import load_model, sharded_loading
from harness.training import trainer as trainer_module
from harness.training.settings import PROFILES, TrainContext
from tests.tiny import tiny_llama, tiny_tokenizer

LAUNCH_VARS = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO3_INIT", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
               "ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING", "LOCAL_RANK", "RANK")  # fmt: skip
ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"}
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}


@pytest.fixture
def launch(monkeypatch):
    """Set the variables of an `accelerate launch` (none set before)."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(values: dict[str, str]) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_the_loading_path_follows_the_launch(launch):
    assert sharded_loading() == ""
    launch({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    assert sharded_loading() == ""  # zero3_init_flag off: DeepSpeed partitions the loaded model (as before)
    launch(ZERO3)
    assert sharded_loading() == "zero3"
    launch({"ACCELERATE_USE_DEEPSPEED": "false", **FSDP})
    assert sharded_loading() == "fsdp"
    launch({"FSDP_CPU_RAM_EFFICIENT_LOADING": "false"})
    assert sharded_loading() == ""


def _ctx(tmp_path: Path, model: str = "unused") -> TrainContext:
    return TrainContext(model, [], PROFILES["cpu"], 0, run_dir=tmp_path, output_dir=tmp_path / "model")


@pytest.mark.parametrize("env, first", [({}, False), (ZERO3, True), (FSDP, True)])
def test_training_arguments_come_before_the_model_in_a_sharded_launch(env, first, launch, monkeypatch, tmp_path):
    launch(env)
    calls = []
    args = SimpleNamespace(device=torch.device("cpu"))
    monkeypatch.setattr(trainer_module, "training_arguments", lambda ctx, world_size=1: calls.append("args") or args)
    monkeypatch.setattr(trainer_module, "load_model", lambda *a, **k: calls.append("model") or tiny_llama())
    monkeypatch.setattr(trainer_module, "load_tokenizer", lambda *a, **k: tiny_tokenizer())
    ctx = _ctx(tmp_path)
    trainer_module.load_for_training(ctx)
    assert calls == (["args", "model"] if first else ["model"])
    assert (ctx.extra.get("training_args") is args) == first


def test_run_trainer_trains_with_the_arguments_the_model_was_loaded_under(tmp_path):
    class Built(Exception):
        pass

    def trainer_cls(**kwargs):
        raise Built(kwargs["args"])

    ctx = _ctx(tmp_path)
    loaded_under = object()
    ctx.extra["training_args"] = loaded_under
    tokenizer = tiny_tokenizer()
    with pytest.raises(Built) as built:
        trainer_module.run_trainer(ctx, tiny_llama(tokenizer), tokenizer, [], trainer_cls=trainer_cls)
    assert built.value.args[0] is loaded_under and "training_args" not in ctx.extra


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_fsdp_only_rank_0_reads_the_weights(rank, tiny_dir: Path, launch, monkeypatch, tmp_path):
    """Under an FSDP launch with cpu_ram_efficient_loading, a process of rank other than 0 builds the model on
    the meta device (it reads no weights) with its non-persistent buffers (the rotary frequencies, which
    accelerate keeps, not broadcasts) real: given rank 0's weights, as accelerate broadcasts them, it computes
    what rank 0's model computes."""
    launch({**FSDP, "RANK": rank})
    monkeypatch.setattr(trainer_module, "training_arguments", lambda ctx, world_size=1: SimpleNamespace(device="cpu"))
    _, model = trainer_module.load_for_training(_ctx(tmp_path, str(tiny_dir)))
    reference = load_model(str(tiny_dir))
    if rank == "0":
        assert not any(p.is_meta for p in model.parameters())
        torch.testing.assert_close(model.state_dict(), reference.state_dict())
        return
    assert all(p.is_meta for p in model.parameters())
    buffers = {name: b for name, b in model.named_buffers() if not b.is_meta}
    assert buffers and set(buffers) == {name for name, _ in reference.named_buffers()}
    for name, buffer in buffers.items():
        torch.testing.assert_close(buffer, reference.get_buffer(name), msg=name)
    model.load_state_dict(load_file(str(tiny_dir / "model.safetensors")), assign=True, strict=False)
    model.tie_weights()
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_under_zero3_the_model_loads_while_transformers_sees_zero3(launch, monkeypatch, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: ZeRO-3 loading cannot be exercised here")
    from transformers.integrations import is_deepspeed_zero3_enabled

    launch(ZERO3)
    seen = []
    monkeypatch.setattr(trainer_module, "load_model", lambda *a, **k: seen.append(is_deepspeed_zero3_enabled()) or tiny_llama())
    monkeypatch.setattr(trainer_module, "load_tokenizer", lambda *a, **k: tiny_tokenizer())
    trainer_module.load_for_training(_ctx(tmp_path))
    assert seen == [True]

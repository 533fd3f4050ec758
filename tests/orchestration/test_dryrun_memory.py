"""The dry run's memory figures for the paper configs, offline: activations per GPU (one training pass, and
CC-Tuning's two passes with and without gradient through the English pass and checkpointing), the total per
GPU with the fit verdict for an 80 GB GPU, and the host memory per process while the model loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import AutoConfig

from harness.cli import main
from harness.orchestration import dryrun
from harness.training.memory import GIB, Pass, Shape, estimate, single_pass

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / "experiments" / "llama31_8b.yaml"
ACCELERATE = ROOT / "configs" / "accelerate"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dryrun.hub_reachable.cache_clear()
    yield
    dryrun.hub_reachable.cache_clear()


def dry_run(capsys, tmp_path: Path, *argv: str) -> str:
    code = main(["run", "--config", str(LLAMA), "--output", str(tmp_path), *argv, "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def gib(text: str) -> float:
    return float(text.removesuffix(" GiB"))


def test_llama_under_zero3_fits_an_80gb_gpu(capsys, tmp_path):
    out = dry_run(capsys, tmp_path, "--accelerate-config", str(ACCELERATE / "deepspeed_zero3.yaml"))
    assert ("activations per GPU (estimate: harness/training/memory.py, after Korthikanti et al. 2022; per-device "
            "batch 2 x cutoff 1024, every token a response token, bf16): one training pass") in out  # fmt: skip
    # the paper profile checkpoints: a few GiB of activations, 15 GiB of sharded states, and the gathered units
    shape = Shape.of(AutoConfig.from_pretrained(ROOT / "harness/orchestration/model_configs/meta-llama__Llama-3.1-8B"))
    one_pass = single_pass(shape, 2, 1024, 2 * 1023, checkpointing=True, e=2).peak
    assert f"one training pass {one_pass / GIB:.1f} GiB with gradient checkpointing on" in out
    for method in ("vanilla", "cc"):
        line = re.search(rf"^memory per GPU, {method}: (.*)$", out, re.M).group(1)
        states, gathered, activations, total = re.findall(r"[\d.]+ GiB", line)[:4]
        assert gib(states) == 15.0 and 0 < gib(activations) < 10 and gib(gathered) < 5
        assert gib(total) == pytest.approx(gib(states) + gib(gathered) + gib(activations), abs=0.15)
        assert "fits an 80 GiB GPU" in line
    cc = re.search(r"^cc: activations per GPU \(estimate; English pass \+ fused pass, 2 x 1024 tokens each\): (.*)$", out, re.M)
    cells = dict(re.findall(r"(\w[\w ]*? through the English pass, checkpointing o\w+) ([\d.]+) GiB", cc.group(1)))
    assert len(cells) == 4
    no_grad_gc = gib(cells["no gradient through the English pass, checkpointing on"] + " GiB")
    assert cc.group(1).endswith(f"this run: {no_grad_gc:.1f} GiB")  # the authors': detached, checkpointing
    assert gib(cells["gradient through the English pass, checkpointing off"] + " GiB") > 1.5 * no_grad_gc
    assert ("host memory per process while loading: rank 0 reads the checkpoint (15.0 GiB, memory-mapped) and "
            "partitions it as it loads, the other 7 read nothing (DeepSpeed zero3_init_flag)") in out  # fmt: skip


def test_fsdp_reads_the_weights_on_rank_0_only(capsys, tmp_path):
    out = dry_run(capsys, tmp_path, "--accelerate-config", str(ACCELERATE / "fsdp.yaml"))
    assert re.search(r"^memory per GPU, cc: .*: fits an 80 GiB GPU", out, re.M)
    assert ("host memory per process while loading: rank 0 29.9 GiB (float32), the other 7 none (built on the meta "
            "device, their shards broadcast from rank 0; FSDP cpu_ram_efficient_loading)") in out  # fmt: skip


def test_one_process_does_not_fit(capsys, tmp_path):
    out = dry_run(capsys, tmp_path)
    line = re.search(r"^memory per GPU, vanilla: model states 119\.7 GiB \+ activations .*$", out, re.M).group(0)
    assert "does NOT fit an 80 GiB GPU" in line and "gathered" not in line
    assert "host memory per process while loading: 29.9 GiB in the process (the whole model in float32)" in out


def test_the_english_pass_without_gradient_adds_little():
    """CC-Tuning's English pass without autograd keeps only a (batch x layers x hidden); with gradient it keeps
    its layers' activations, and every weight's first gradient waits for its second."""
    shape = Shape.of(AutoConfig.from_pretrained(ROOT / "harness/orchestration/model_configs/meta-llama__Llama-3.1-8B"))
    fused = Pass(2, 1024, True, logits=2 * 1023)
    for checkpointing in (False, True):
        vanilla = estimate(shape, [fused], checkpointing=checkpointing, e=2).peak
        english = Pass(2, 1024, False, keeps=2 * 32 * 4096 * 2)
        detached = estimate(shape, [english, fused], checkpointing=checkpointing, e=2).peak
        assert vanilla <= detached <= 1.01 * vanilla
        with_grad = estimate(shape, [Pass(2, 1024, True, keeps=english.keeps), fused], checkpointing=checkpointing, e=2)
        assert with_grad.peak > vanilla + 0.9 * shape.layers * shape.layer_params * 2  # the held gradients

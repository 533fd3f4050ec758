"""The paper-reproduction configs in experiments/ dry-run offline: runs, tasks, training data, training
arguments and the model built on the meta device from the shipped config.json, with the right size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.orchestration import dryrun

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))

# Published parameter counts of the paper's base models (the model cards: 8.03B, 7.62B, 7.25B).
PARAMETERS = {
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "mistralai/Mistral-7B-v0.3": 7.25e9,
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network, whatever the machine has: the Hub counts as unreachable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dryrun.hub_reachable.cache_clear()
    yield
    dryrun.hub_reachable.cache_clear()


def _dry_run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_one_experiment_per_paper_model() -> None:
    models = {re.search(r"^model: (\S+)", p.read_text(), re.M).group(1) for p in EXPERIMENTS}
    assert models == set(PARAMETERS)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_dry_runs_offline(path: Path, capsys, tmp_path: Path) -> None:
    code, out, err = _dry_run(capsys, "--config", str(path), "--output", str(tmp_path))
    assert code == 0, err
    model = re.search(r"^model: (\S+)", path.read_text(), re.M).group(1)
    params = int(re.search(r"^parameters: ([\d,]+) ", out, re.M).group(1).replace(",", ""))
    assert params == pytest.approx(PARAMETERS[model], rel=0.01)
    plan = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[2] for line in plan] == ["none", "vanilla", "cc"]
    assert all(not (tmp_path / line.split()[1]).exists() for line in plan)  # a dry run creates nothing
    assert re.search(r"^tasks: 93 \(65,248 items, limit none\)", out, re.M)
    assert re.search(r"^training data: recipe mini-parallel, [\d,]+ examples in 22 languages", out, re.M)
    assert "effective batch 16 = 4 per device x 4 accumulation x 1" in out
    assert re.search(r"^tokenizer: \S+ not available offline", out, re.M) or "tokenised:" in out
    assert "optimizer states" in out and "tokens per optimizer step: at most 16,384" in out
    # CC-Tuning as the authors ran it: re-entrant checkpointing, no English-pass gradient, their RST
    assert "gradient_checkpointing=True gradient_checkpointing_reentrant=True" in out
    assert ("cc: no gradient through the English pass (detach_english=true, as the authors' runs); "
            "gradient checkpointing re-entrant") in out  # fmt: skip
    rst = "rst=last: the last prompt token" if "llama" in path.stem else "rst=authors: "
    assert f"cc: Response Start Token: {rst}" in out


def test_english_gradient_with_the_paper_profile_is_refused_before_any_work(capsys, tmp_path: Path) -> None:
    config = ROOT / "experiments" / "qwen25_7b.yaml"
    code, _, err = _dry_run(capsys, "--config", str(config), "--output", str(tmp_path),
                            "--method-opt", "detach_english=false")  # fmt: skip
    assert code == 2 and "detach_english=false" in err and "gradient_checkpointing_reentrant=false" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = _dry_run(capsys, "--config", str(config), "--output", str(tmp_path), "--method-opt",
                              "detach_english=false", "--set", "gradient_checkpointing_reentrant=false")  # fmt: skip
    assert code == 0, err
    assert "cc: gradient through the English pass (detach_english=false); gradient checkpointing non-re-entrant" in out


def test_dry_run_with_the_deepspeed_config(capsys, tmp_path: Path) -> None:
    config = ROOT / "experiments" / "llama31_8b.yaml"
    zero3 = ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml"
    code, out, err = _dry_run(
        capsys, "--config", str(config), "--output", str(tmp_path), "--accelerate-config", str(zero3)
    )
    assert code == 0, err
    assert "processes: 8, DeepSpeed ZeRO-3" in out
    assert "effective batch 16 = 2 per device x 1 accumulation x 8" in out
    assert "per_device_train_batch_size=2 gradient_accumulation_steps=1" in out
    # 16 bytes per parameter over 8 processes: 8.03e9 * 16 / 8 bytes = 15.0 GiB per GPU.
    assert re.search(r"per device with DeepSpeed ZeRO-3 over 8 processes: 15\.0 GiB$", out, re.M)


def test_dry_run_errors_are_one_line(capsys, tmp_path: Path) -> None:
    code, _, err = _dry_run(
        capsys, "--model", "nobody/no-such-model", "--method", "none", "--output", str(tmp_path)
    )
    assert code == 2 and err.startswith("error: cannot read the config of --model nobody/no-such-model")
    assert len(err.strip().splitlines()) == 1
    bad = tmp_path / "accelerate.yaml"  # zero_stage belongs under deepspeed_config
    bad.write_text("distributed_type: DEEPSPEED\nnum_processes: 8\nzero_stage: 3\n")
    code, _, err = _dry_run(
        capsys, "--method", "none", "--output", str(tmp_path), "--accelerate-config", str(bad)
    )
    assert code == 2 and err.startswith(f"error: --accelerate-config {bad}: ")
    assert "unknown keys (['zero_stage'])" in err and len(err.strip().splitlines()) == 1

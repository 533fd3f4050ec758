"""The `report_to` training setting: the Trainer's logs (and CC-Tuning's per-step Decision Maker numbers)
reach TensorBoard / wandb under the run folder, read back equal to train_log.jsonl; bad values and a
missing logger package end with one line before any work; the run id does not change."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.core.config import RunConfig
from harness.core.store import Run
from harness.data.base import Example
from harness.methods import METHODS
from harness.orchestration.options import RunOptions, plan_runs
from harness.orchestration.pipeline import train_run
from harness.plumbing.errors import HarnessError
from harness.training.reporting import TENSORBOARD_DIR, place_loggers, wandb_run
from harness.training.settings import PROFILES, TrainContext, TrainSettings, resolve_settings

EXAMPLES = [
    Example("1", "fr", "traduis le chat noir", "the black cat", "translate the black cat"),
    Example("2", "de", "zähle bis drei", "one two three", "count to three"),
    Example("3", "en", "name a colour", "blue", "name a colour"),
    Example("4", "fr", "quelle est la capitale", "paris", "what is the capital"),
]
STEPS = 3
TINY = {"epochs": 1.0, "learning_rate": 1e-3, "batch_size": 2, "per_device_batch_size": 2, "max_length": 64,
        "bf16": False, "max_steps": STEPS, "logging_steps": 1, "save_steps": 100, "warmup_ratio": 0.0,
        "gradient_checkpointing": False}  # fmt: skip


def train(method: str, tiny_dir: Path, run_dir: Path, report_to: str = "tensorboard", **options) -> Path:
    settings = TrainSettings(**TINY, report_to=report_to)
    METHODS.get(method)(**options).train(
        TrainContext(str(tiny_dir), EXAMPLES, settings, 0, run_dir, run_dir / "model")
    )
    return run_dir


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard folder: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    rows = [
        json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return [(row["step"], row[key]) for row in rows if key in row]


def same(board: list[tuple[int, float]], log: list[tuple[int, float]]) -> bool:
    """Equal steps and values (TensorBoard stores 32-bit floats)."""
    return [s for s, _ in board] == [s for s, _ in log] and all(
        v == pytest.approx(w, rel=1e-6, abs=1e-7) for (_, v), (_, w) in zip(board, log, strict=True)
    )


def test_vanilla_loss_reaches_tensorboard_in_the_run_folder(tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
    run_dir = train("vanilla", tiny_dir, tmp_path / "run")
    board = scalars(run_dir)
    assert len(board["train/loss"]) == STEPS and same(board["train/loss"], logged(run_dir, "loss"))
    assert same(board["train/learning_rate"], logged(run_dir, "learning_rate"))
    assert not (run_dir / "checkpoints").exists() and (run_dir / "model" / "config.json").is_file()


def test_cc_decision_maker_numbers_reach_tensorboard(tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
    run_dir = train("cc", tiny_dir, tmp_path / "run", wt_samples=2)
    board = scalars(run_dir)
    assert len(board["train/loss"]) == STEPS and same(board["train/loss"], logged(run_dir, "loss"))
    for key in ("cc_layer_entropy", "cc_dm_entropy"):
        assert len(board[f"train/{key}"]) == STEPS and same(board[f"train/{key}"], logged(run_dir, key))
    hist = logged(run_dir, "cc_layer_hist")  # [(step, [count per layer])]
    layers = len(hist[0][1])
    assert layers == 2 and all(sum(counts) == TINY["batch_size"] for _, counts in hist)
    for layer in range(layers):
        per_step = [(step, counts[layer]) for step, counts in hist]
        assert same(board[f"train/cc_layer_hist/{layer}"], per_step)
    assert f"train/cc_layer_hist/{layers}" not in board


def test_report_to_none_writes_no_logger_files(tiny_dir: Path, tmp_path: Path) -> None:
    run_dir = train("vanilla", tiny_dir, tmp_path / "run", report_to="none")
    assert sorted(p.name for p in run_dir.iterdir()) == ["model", "train_log.jsonl"]


def test_the_setting_from_a_run_config_reaches_training(tiny_dir: Path, tmp_path: Path) -> None:
    """Through the pipeline's path: config.yaml records report_to; the run id leaves it out."""
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
    train_settings = {**PROFILES["cpu"].to_dict(), **TINY, "max_length": 256}
    cfg = RunConfig(method="vanilla", model=str(tiny_dir), recipe="mini-parallel", train_langs=["en", "sw"],
                    train_limit=4, train={**train_settings, "report_to": "tensorboard"})  # fmt: skip
    plain = RunConfig(**{**cfg.to_dict(), "train": {**train_settings, "report_to": "none"}})
    assert cfg.run_id == plain.run_id
    run = Run(tmp_path, cfg)
    run.init("test")
    train_run(run, METHODS.get("vanilla")(), str(tiny_dir))
    assert (
        yaml.safe_load((run.dir / "config.yaml").read_text(encoding="utf-8"))["train"]["report_to"]
        == "tensorboard"
    )
    assert len(scalars(run.dir)["train/loss"]) == STEPS


def test_report_to_does_not_change_the_run_id() -> None:
    base = {"method": "vanilla,cc", "tasks": "sib200_mc", "langs": "sw", "profile": "cpu"}
    plain = plan_runs(RunOptions.parse(base))
    watched = plan_runs(RunOptions.parse({**base, "set": ["report_to=tensorboard"]}))
    assert [p.run_id for p in watched] == [p.run_id for p in plain]
    assert all(p.config.train["report_to"] == "tensorboard" for p in watched)  # recorded in config.yaml
    assert "report_to" not in watched[0].config.identity()["train"]
    other = plan_runs(RunOptions.parse({**base, "set": ["learning_rate=0.001"]}))
    assert other[0].run_id != plain[0].run_id  # a setting that shapes the model still does


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", "none"), ("tensorboard", "tensorboard"), ("TensorBoard, wandb", "tensorboard,wandb"),
     (["wandb", "tensorboard"], "wandb,tensorboard"), ("wandb,wandb", "wandb")],
)  # fmt: skip
def test_values_are_read_as_a_list_of_loggers(value, expected: str) -> None:
    settings = TrainSettings.from_dict({"report_to": value})
    assert settings.report_to == expected
    assert settings.integrations == (() if expected == "none" else tuple(expected.split(",")))


@pytest.mark.parametrize(
    ("value", "message"),
    [("tensorbord", "report_to='tensorbord' in --set / config (did you mean 'tensorboard'?): expected none, "
                    "tensorboard, wandb or a comma list of them (e.g. tensorboard,wandb)"),
     ("none,wandb", "report_to='none,wandb' in --set / config: expected none"),
     ("all", "report_to='all' in --set / config: expected none"),
     ("tensorboard,", "report_to='tensorboard,' in --set / config: expected none"),
     (3, "report_to=3 in --set / config: expected text (default: none)")],
)  # fmt: skip
def test_bad_values_are_refused(value, message: str) -> None:
    with pytest.raises(HarnessError) as e:
        resolve_settings("cpu", {"report_to": value})
    assert str(e.value).startswith(f"training setting {message}") and "\n" not in str(e.value)
    with pytest.raises(HarnessError, match="report_to"):
        TrainSettings(report_to=str(value))


def cli_error(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return code, lines[0]


def test_cli_refuses_a_bad_value_before_any_work(tmp_path: Path, capsys) -> None:
    code, line = cli_error(capsys, "run", "--method", "vanilla", "--tasks", "sib200_mc_sw", "--output",
                           str(tmp_path / "runs"), "--set", "report_to=tensorbord")  # fmt: skip
    assert code == 2 and line.startswith("error: training setting report_to='tensorbord'")
    assert not (tmp_path / "runs").exists()


def hide(monkeypatch, package: str) -> None:
    """`importlib.util.find_spec` does not find `package` (as when it is not installed)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == package else real(name, *a, **k)
    )


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_logger_package_is_named_before_any_work(
    package: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    hide(monkeypatch, package)
    value = "tensorboard" if package == "tensorboard" else "tensorboard,wandb"
    code, line = cli_error(capsys, "run", "--method", "vanilla", "--tasks", "sib200_mc_sw", "--output",
                           str(tmp_path / "runs"), "--set", f"report_to={value}")  # fmt: skip
    assert code == 2
    assert line == (f"error: --set report_to={value}: the {package} package is not installed; "
                    f"install it with `pip install {package}` (or this project's extra: `pip install -e '.[logging]'`), or train "
                    "with --set report_to=none")  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_a_missing_package_stops_training_before_it_starts(
    tiny_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """A method called directly (not planned by the CLI) fails before the Trainer is built."""
    hide(monkeypatch, "tensorboard")
    with pytest.raises(
        HarnessError, match=r"^--set report_to=tensorboard: the tensorboard package is not installed"
    ):
        train("vanilla", tiny_dir, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()


def test_wandb_runs_start_in_each_run_folder_and_finish(tmp_path: Path, monkeypatch) -> None:
    """The wandb run around training, with a stand-in module (wandb itself: the test below)."""
    calls: list = []
    fake = types.SimpleNamespace(
        init=lambda **kw: calls.append(("init", kw)), finish=lambda: calls.append("finish")
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for name in ("run1", "run2"):
        ctx = TrainContext(
            "unused", [], TrainSettings(report_to="wandb"), 0, tmp_path / name, tmp_path / name / "model"
        )
        with wandb_run(ctx):
            calls.append("train")
    init = {"dir": str(tmp_path / "run1"), "name": "run1", "project": "cc-harness"}
    assert calls == [("init", init), "train", "finish", ("init", {**init, "dir": str(tmp_path / "run2"), "name": "run2"}),
                     "train", "finish"]  # fmt: skip
    calls.clear()
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    with wandb_run(ctx, main=True):
        pass
    assert calls == [("init", {"dir": None, "name": "run2", "project": "mine"}), "finish"]
    calls.clear()
    with wandb_run(ctx, main=False):  # the other processes of a data-parallel run start none
        pass
    assert calls == []

    def no_login(**kw):
        raise RuntimeError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    monkeypatch.setattr(fake, "init", no_login)
    with pytest.raises(HarnessError) as e, wandb_run(ctx):
        pass
    assert str(e.value) == (
        "--set report_to=wandb: wandb could not start a run (api_key not configured (no-tty). "
        "call wandb.login(key=[your_api_key])); log in with `wandb login`, or set WANDB_MODE=offline"
    )


def test_wandb_offline_run(tiny_dir: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (optional: pip install -e '.[logging]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    for name in ("run1", "run2"):  # the second run of a process writes into its own folder too
        run_dir = train("cc", tiny_dir, tmp_path / name, report_to="tensorboard,wandb", wt_samples=2)
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        assert any(offline.glob("*.wandb"))
        assert len(scalars(run_dir)["train/cc_layer_entropy"]) == STEPS


def test_a_resumed_run_replaces_the_steps_logged_after_its_checkpoint(tmp_path: Path) -> None:
    """Killed at step 4 with a checkpoint at step 2: the resumed run logs steps 3 and 4 again, once."""
    pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    first = SummaryWriter(log_dir=str(tmp_path / TENSORBOARD_DIR))
    for step in (1, 2, 3, 4):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    callback = TensorBoardCallback()
    place_loggers(
        types.SimpleNamespace(callback_handler=types.SimpleNamespace(callbacks=[callback])), tmp_path, 2
    )
    assert callback.logging_dir == str(tmp_path / TENSORBOARD_DIR)
    for step in (3, 4):
        callback.tb_writer.add_scalar("train/loss", 10.0 * step, step)
    callback.tb_writer.close()
    assert scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    callback = TensorBoardCallback()  # training that starts over (no checkpoint) hides every earlier step
    place_loggers(
        types.SimpleNamespace(callback_handler=types.SimpleNamespace(callbacks=[callback])), tmp_path, 0
    )
    callback.tb_writer.add_scalar("train/loss", 7.0, 1)
    callback.tb_writer.close()
    assert scalars(tmp_path)["train/loss"] == [(1, 7.0)]

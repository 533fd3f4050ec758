"""Core pieces without a model: registries, errors, config identity, run store, atomic writes, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.config import RunConfig
from harness.core.provenance import environment, environment_id
from harness.core.store import Run, find_runs
from harness.data.base import Example, iter_jsonl
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json
from harness.plumbing.registry import Registry
from harness.training.settings import PROFILES, TrainSettings, resolve_settings
from harness.training.trainer import pad_collate


def test_registry_suggests_near_match() -> None:
    reg: Registry[int] = Registry("method")
    reg.register("vanilla")(1)
    reg.register("cc")(2)
    with pytest.raises(HarnessError) as e:
        reg.get("vanila", "--method")
    assert str(e.value) == "unknown method 'vanila' in --method (did you mean 'vanilla'?); valid: cc, vanilla"


def test_run_id_is_stable_and_depends_on_training_fields() -> None:
    a = RunConfig(method="vanilla", seed=1, train=PROFILES["cpu"].to_dict())
    b = RunConfig(method="vanilla", seed=1, train=PROFILES["cpu"].to_dict())
    c = RunConfig(method="vanilla", seed=2, train=PROFILES["cpu"].to_dict())
    assert a.run_id == b.run_id != c.run_id
    assert a.run_id.startswith("vanilla-")
    code = (
        "from harness.core.config import RunConfig; from harness.training.settings import PROFILES;"
        "print(RunConfig(method='vanilla', seed=1, train=PROFILES['cpu'].to_dict()).run_id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})  # fmt: skip
    assert out.stdout.strip() == a.run_id


def test_untrained_method_id_ignores_training_fields() -> None:
    a = RunConfig(method="none", seed=1, train_limit=5)
    b = RunConfig(method="none", seed=2, train_limit=50)
    assert a.run_id == b.run_id


def test_training_settings_reject_unknown_keys() -> None:
    with pytest.raises(
        HarnessError, match=r"unknown training setting 'learning_rat' .*did you mean 'learning_rate'"
    ):
        resolve_settings("cpu", {"learning_rat": 1e-4})
    assert resolve_settings("paper", {}) == TrainSettings()
    with pytest.raises(HarnessError, match="unknown training profile 'gpu'"):
        resolve_settings("gpu", {})


def test_training_settings_take_numbers_written_as_yaml_reads_them() -> None:
    """`--set learning_rate=3e-4` reaches the settings as the string '3e-4' (YAML 1.1 floats need a dot);
    it once went on to the optimizer and failed in torch with a traceback after data preparation."""
    from harness.orchestration.options import pairs as _pairs

    settings = resolve_settings("cpu", _pairs(["learning_rate=3e-4", "epochs=4", "max_steps=10", "bf16=false"], "--set"))
    assert (settings.learning_rate, settings.epochs, settings.max_steps, settings.bf16) == (3e-4, 4.0, 10, False)
    assert isinstance(settings.epochs, float) and isinstance(settings.max_steps, int)
    for value, message in (("learning_rate=fast", "training setting learning_rate='fast' in --set / config: "
                            "expected a number (default: 1e-05)"),
                           ("max_steps=2.5", "training setting max_steps=2.5 in --set / config: expected a whole "
                            "number (default: -1)"),
                           ("bf16=maybe", "training setting bf16='maybe' in --set / config: expected true or false "
                            "(default: True)")):  # fmt: skip
        with pytest.raises(HarnessError) as e:
            resolve_settings("cpu", _pairs([value], "--set"))
        assert str(e.value) == message
    # method options the same way (`--method-opt wt_samples=1e3`)
    from harness.methods import METHODS

    options = METHODS.get("cc").resolve_options(_pairs(["wt_samples=1e3", "dm_tau=5e-1"], "--method-opt"))
    assert (options["wt_samples"], options["dm_tau"]) == (1000, 0.5) and isinstance(options["wt_samples"], int)


def test_pad_collate_pads_right_and_masks_labels() -> None:
    batch = pad_collate(0)([
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "rst": 0},
        {"input_ids": [5], "labels": [5], "rst": 0},
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["rst"].tolist() == [0, 0]


def test_jsonl_reader_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"a": 1}\n\n{"a": 2,}\n', encoding="utf-8")
    with pytest.raises(HarnessError) as e:
        list(iter_jsonl(bad))
    assert str(e.value).startswith(f"{bad}:3: malformed JSON")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="empty file"):
        list(iter_jsonl(empty))
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(HarnessError, match=r"l.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(latin))


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_run_store_phases_and_results(tmp_path: Path) -> None:
    run = Run(tmp_path, RunConfig(method="none"))
    run.init("harness run --method none")
    assert run.status()["phase"] == "created"
    key = {"limit": 5, "apply_chat_template": True}
    run.save_result("t", {"task": "t", "key": key}, [{"id": 0}])
    # Each result names the environment (code and library versions) that computed it.
    env = environment_id(environment())
    assert run.stored_result("t", key) == {"task": "t", "key": key, "env": env}
    assert run.stored_result("t", {"limit": 6, "apply_chat_template": True}) is None
    run.set_phase("complete", tasks=["t"])
    assert run.status()["tasks"] == ["t"]
    assert find_runs([str(tmp_path)]) == [run.dir]


def test_example_round_trip() -> None:
    ex = Example("i", "sw", "Habari?", "Nzuri.", "How are you?")
    assert Example(**ex.to_dict()) == ex


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--method", "vanila"],
            "error: unknown method 'vanila' in --method (did you mean 'vanilla'?); valid: ",
        ),
        (["run", "--tasks", "xnlii"], "error: unknown task 'xnlii' (did you mean 'xnli'?)"),
        (["run", "--tasks", "xnli", "--langs", "sx"], "error: unknown language 'sx' in --langs"),
        (
            ["run", "--tasks", "xquad", "--langs", "sw"],
            "error: benchmark 'xquad' has none of the languages sw; "
            "its languages: en, ar, de, el, hi, ru, th, tr, vi, zh",
        ),
        (["run", "--tasks", "xquad_mc"], "error: benchmark 'xquad' has no protocol 'mc'; valid: xquad_gen"),
        (["run", "--limit", "0"], "error: --limit 0: must be at least 1 (omit it to use every item)"),
        (
            ["run", "--set", "epoch=2"],
            "error: unknown training setting 'epoch' in --set / config (did you mean 'epochs'?)",
        ),
        (["run", "--method-opt", "foo=1"], "error: unknown option for method 'vanilla' 'foo'"),
        (["run", "--train-langs", "en,xx"], "error: unknown language 'xx' in --train-langs"),
    ],
)
def test_cli_bad_input_gives_one_line(args: list[str], message: str) -> None:
    out = _cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    assert "Traceback" not in out.stderr


def test_cli_missing_data_dir(tmp_path: Path) -> None:
    out = _cli("run", "--tasks", "xnli", env={"HARNESS_DATA": str(tmp_path / "nowhere")})
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == f"error: HARNESS_DATA={tmp_path / 'nowhere'} has no benchmarks/ folder; point it at the shared data folder"
    )


def test_cli_config_file_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train_limt: 3\n", encoding="utf-8")
    out = _cli("run", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: unknown option 'train_limt' in {cfg} (did you mean 'train-limit'?)")
    cfg.write_text("tasks: [a\n", encoding="utf-8")
    out = _cli("run", "--config", str(cfg))
    assert out.returncode == 2 and out.stderr.startswith(f"error: {cfg}:2: malformed YAML"), out.stderr


def test_cli_report_on_missing_folder(tmp_path: Path) -> None:
    out = _cli("report", str(tmp_path / "none"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path / 'none'}: no such run folder"


def test_methods_are_entry_point_plugins() -> None:
    """The built-in methods reach the core's registry through this project's entry point (the core never
    imports them); a registry whose group no installed package declares says so, with the fix."""
    from importlib.metadata import entry_points

    from harness.plumbing.registry import Registry

    assert [p.value for p in entry_points(group="cc_harness.methods") if p.name == "builtin"] == ["harness.methods"]
    with pytest.raises(HarnessError, match=r"no thing is registered: .*'cc_harness.nothing'; install this project"):
        Registry("thing", plugins="cc_harness.nothing").get("x")

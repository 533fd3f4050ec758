"""Bad input that needs files, a trained run or a changed model to provoke: each case ends with exactly one
`error: ...` line (asserted in full), a non-zero exit, and nothing half-written that looks complete.
(Flag-level cases are in test_core.py, sweep-file cases in test_sweep.py, a full disk in
test_reliability.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from tests.tiny import tiny_llama, tiny_tokenizer

TINY_TRAIN = ["--set", "max_steps=1", "--set", "per_device_batch_size=4", "--set", "batch_size=4",
              "--set", "bf16=false", "--limit", "2", "--batch-size", "2"]  # fmt: skip


def error_of(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; return its exit code and its one error line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return code, lines[0]


def write_jsonl(path: Path, rows: list[dict] | str) -> Path:
    path.write_text(rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def save_tiny(folder: Path, layers: int = 2) -> Path:
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    if layers != 2:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(**{**model.config.to_dict(), "num_hidden_layers": layers})
        model = LlamaForCausalLM(config)
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def run_argv(model: Path, data: Path, out: Path, *extra: str, method: str = "vanilla") -> list[str]:
    return ["run", "--method", method, "--model", str(model), "--recipe", "jsonl", "--recipe-path", str(data),
            "--tasks", "sib200_mc_sw", "--output", str(out), *TINY_TRAIN, *extra]  # fmt: skip


def test_cc_example_without_english_parallel(tmp_path: Path, tiny_dir: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "t.jsonl", [
        {"lang": "en", "instruction": "What is the topic?", "output": "sports"},
        {"lang": "sw", "instruction": "Mada ni nini?", "output": "michezo"},
    ])  # fmt: skip
    code, line = error_of(capsys, *run_argv(tiny_dir, data, tmp_path / "runs", method="cc"))
    assert code == 2
    assert line == ("error: training example t/2 (sw) has no instruction_en; method 'cc' needs the English "
                    "parallel of every instruction (use a parallel recipe such as mini-parallel)")  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "failed"
    assert not (run_dir / "model").exists() and not (run_dir / "results").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "lang": "en", "instruction": "x", "output": "y"}\n'
         '{"id": "b", "lang": "sw", "instruction": "x", "output": "y"}\n'
         '{"id": "a", "lang": "sw", "instruction": "z", "output": "y"}\n',
         "{path}:3: duplicate id 'a' (first used on line 1); ids must be unique"),
        ('{"lang": "en", "instruction": "x", "output": "y"}\n{"lang": "sw", "instruction": "x", "outp',
         "{path}:2: malformed JSON: Unterminated string starting at (column 36)"),
        ('{"lang": "en", "instruction": "x"}\n', "{path}:1: missing field 'output'"),
        ('{"lang": "xx", "instruction": "x", "output": "y"}\n', "unknown language 'xx' in {path}:1"),
        ("\n\n", "{path}: empty file, expected one JSON object per line"),
    ],
    ids=["duplicate-id", "truncated", "missing-field", "bad-language", "empty"],
)
def test_bad_training_file(tmp_path: Path, tiny_dir: Path, capsys, content: str, message: str) -> None:
    data = write_jsonl(tmp_path / "t.jsonl", content)
    code, line = error_of(capsys, *run_argv(tiny_dir, data, tmp_path / "runs"))
    assert code == 2 and line.startswith("error: " + message.format(path=data)), line


def test_checkpoint_of_another_model(tmp_path: Path, train_file: Path, capsys) -> None:
    """A local --model folder whose contents changed between a run and its continuation."""
    model = save_tiny(tmp_path / "my-model")
    runs = tmp_path / "runs"
    assert main(run_argv(model, train_file, runs)) == 0
    (run_dir,) = runs.iterdir()
    save_tiny(model, layers=3)  # the folder now holds another model
    capsys.readouterr()
    code, line = error_of(capsys, *run_argv(model, train_file, runs, "--tasks", "sib200_gen_sw"))
    assert code == 2
    assert line == (f"error: {run_dir / 'model'}: a checkpoint of another model than {model} "
                    "(num_hidden_layers 2 vs 3); delete it to retrain, or use another --output")  # fmt: skip
    assert not (run_dir / "results" / "sib200_gen_sw.json").exists()


def test_cc_run_with_its_artifacts_missing(tmp_path: Path, tiny_dir: Path, train_file: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(run_argv(tiny_dir, train_file, runs, method="cc")) == 0
    (run_dir,) = runs.iterdir()
    (run_dir / "model" / "cc.safetensors").unlink()
    capsys.readouterr()
    code, line = error_of(capsys, *run_argv(tiny_dir, train_file, runs, "--tasks", "sib200_gen_sw", method="cc"))
    assert code == 2
    folder = run_dir / "model"
    assert line == (f"error: {folder}: CC-Tuning artifacts missing (cc.safetensors); delete {folder} and run the "
                    "same command again to retrain")  # fmt: skip
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "failed"


def test_report_never_replaces_a_folder_of_other_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "config.yaml").write_text("run_id: r\nmethod: none\n")
    code, line = error_of(capsys, "report", str(runs), "--out", str(out))
    assert code == 2
    assert line == f"error: --out {out}: exists and is not a report folder; give a new or empty folder"
    assert (out / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--seeds", "1,x"], "error: --seeds 'x': expected a whole number"),
        (["run", "--batch-size", "0"], "error: --batch-size 0: must be at least 1"),
        (["run", "--recipe", "nosuch"], "error: unknown recipe 'nosuch' in --recipe; valid: aya, jsonl, llamafactory, mini-parallel"),
        (["run", "--model", "/nonexistent/model"],
         "error: --model /nonexistent/model: no such folder; give a local checkpoint folder or a Hub id like org/name"),
        (["run", "--method", "cc", "--method-opt", "wt_samples=0"],
         "error: option wt_samples=0 of method 'cc' must be >= 1"),
        (["run", "--method-opt", "detach_englsh=true", "--method", "cc"],
         "error: unknown option for method 'cc' 'detach_englsh' (did you mean 'detach_english'?)"),
    ],
)  # fmt: skip
def test_flag_errors(tmp_path: Path, capsys, monkeypatch, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, line = error_of(capsys, *argv)
    assert code == 2 and line.startswith(message), line
    assert not (tmp_path / "runs").exists()  # nothing written before the input was checked


def test_sweep_file_typo_on_the_command_line(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text("tasks: sib200_gen\ngrid:\n  - method: [vanilla, cc]\n    seedz: [0, 1]\n")
    code, line = error_of(capsys, "sweep", str(sweep), "--dry-run")
    assert code == 2
    assert line.startswith(f"error: unknown sweep key 'seedz' in {sweep}: grid block 1 (did you mean 'seed'?)"), line


def test_pickle_only_checkpoint_is_refused(tmp_path: Path, capsys) -> None:
    """Weights load from safetensors only: a checkpoint holding just a pickle (pytorch_model.bin) is refused."""
    import torch

    folder = save_tiny(tmp_path / "pickled")
    state = tiny_llama(tiny_tokenizer()).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    code, line = error_of(capsys, "eval", "--checkpoint", str(folder), "--tasks", "sib200_mc_sw", "--limit", "2",
                          "--output", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2
    assert line == (f"error: --model {folder.resolve()}: the weights are pickle files (pytorch_model.bin); the harness "
                    "loads safetensors only: save them with model.save_pretrained(folder, safe_serialization=True)")  # fmt: skip
    assert not list((tmp_path / "runs").rglob("results/*.json"))


def test_remote_code_never_runs_without_the_flag(tmp_path: Path, capsys) -> None:
    """A checkpoint that ships its own modelling code (`auto_map`) is evaluated with the built-in class of its
    model type, and its code never runs, unless --trust-remote-code."""
    folder = save_tiny(tmp_path / "custom")
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    code = main(["eval", "--checkpoint", str(folder), "--tasks", "sib200_mc_sw", "--limit", "2",
                 "--output", str(tmp_path / "runs")])  # fmt: skip
    assert code == 0 and not marker.exists()

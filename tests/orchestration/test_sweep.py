"""`harness sweep`: grid expansion and validation, the plan, progress and failures, the ready-made sweep
files, and (on a tiny model) a W_T sample-size sweep that trains once and refits W_T per point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from harness.core.config import RunConfig
from harness.core.store import Run, read_status
from harness.orchestration.sweep import SweepResult, load_sweep, plan_lines, run_sweep
from harness.plumbing.errors import HarnessError

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def write_sweep(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


# -- expansion ----------------------------------------------------------------------------------------


def test_grid_blocks_axes_and_shared_points(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {
        "tasks": "sib200_mc", "langs": "sw,en", "limit": 5, "train_limit": 10,
        "set": {"gradient_checkpointing_reentrant": False},  # detach_english=False needs it
        "grid": [
            {"method": "none"},
            {"method": ["vanilla", "cc"], "seed": [0, 1]},
            {"method": "cc", "method_opt": {"fixed_source_layer": [-1, 3]}},  # -1 is the default: cc seed 0
            {"method": ["vanilla", "cc"], "method_opt": {"detach_english": False}},  # cc only
            {"method": "vanilla", "tasks": "xnli_mc", "langs": "sw"},  # adds a task to vanilla seed 0
        ],
    }), output=tmp_path / "runs")  # fmt: skip
    labels = [r.label for r in sweep.runs]
    assert labels == ["none", "vanilla seed=0", "vanilla seed=1", "cc seed=0", "cc seed=1",
                      "cc fixed_source_layer=3 seed=0", "cc detach_english=False seed=0"]  # fmt: skip
    vanilla0 = sweep.runs[1]
    assert vanilla0.ecfg.tasks == ["sib200_mc_en", "sib200_mc_sw", "xnli_mc_sw"] and vanilla0.ecfg.limit == 5
    cc = sweep.runs[3].config
    assert cc.method_options == {} and cc.train_limit == 10 and cc.seed == 0
    assert sweep.runs[5].config.method_options == {"fixed_source_layer": 3}
    assert len({r.run_id for r in sweep.runs}) == 7 and sweep.output == tmp_path / "runs"
    command = sweep.command(sweep.runs[5])
    assert command.startswith("harness run --method cc") and "--method-opt fixed_source_layer=3" in command
    assert "--tasks sib200_mc_en,sib200_mc_sw" in command and "# from: harness sweep" in command


def test_training_settings_axis_and_equivalent_command(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {
        "method": "vanilla", "grid": {"set": {"learning_rate": [1e-4, 3e-4], "epochs": 1}},
    }))  # fmt: skip
    rates = [r.config.train["learning_rate"] for r in sweep.runs]
    assert rates == [1e-4, 3e-4] and all(r.config.train["epochs"] == 1 for r in sweep.runs)
    assert "--set learning_rate=0.0003" in sweep.command(sweep.runs[1])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grid": [{"method": "cc", "method_opt": {"wt_sample": [1]}}]},
         r"unknown option for method\(s\) cc 'wt_sample' in .*s\.yaml: grid block 1 \(did you mean 'wt_samples'"),
        ({"grid": [{"method": "vanilla", "method_opt": {"wt_samples": [1]}}]}, r"option .*'wt_samples'"),
        ({"grid": [{"method": "cc", "method_opt": {"wt_samples": ["many"]}}]}, r"wt_samples='many'.* must be int"),
        ({"grid": [{"seedz": [1]}]}, r"unknown sweep key 'seedz'.*did you mean 'seed'"),
        ({"grid": [{"method": "vanila"}]}, r"unknown method 'vanila'.*did you mean 'vanilla'"),
        ({"tasks": "xnli_foo"}, r"grid block 1: benchmark 'xnli' has no protocol 'foo'"),
        ({"grid": [{"seed": "one"}]}, r"grid block 1: seed 'one': expected a whole number"),
        ({"limit": 0}, r"grid block 1: limit 0: must be at least 1"),
        ({"grid": ["cc"]}, r"grid block 1: expected a mapping"),
    ],
)  # fmt: skip
def test_bad_sweep_files_fail_with_one_line(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        load_sweep(write_sweep(tmp_path / "s.yaml", values))


def test_training_identity_excludes_evaluation_time_options() -> None:
    base = RunConfig(method="cc", seed=1)
    point = RunConfig(method="cc", seed=1, method_options={"wt_samples": 10, "use_wt": False})
    ablation = RunConfig(method="cc", seed=1, method_options={"detach_english": True, "wt_samples": 10})
    assert base.training_id == base.run_id and base.training_config() is base
    assert point.run_id != base.run_id and point.training_id == base.run_id
    assert ablation.training_config().method_options == {"detach_english": True}
    assert (
        ablation.training_id == RunConfig(method="cc", seed=1, method_options={"detach_english": True}).run_id
    )
    assert RunConfig(method="vanilla").training_id == RunConfig(method="vanilla").run_id


# -- the ready-made sweeps and the plan ---------------------------------------------------------------


def test_ready_made_sweeps_plan(tmp_path: Path) -> None:
    plans = {p.stem: plan_lines(load_sweep(p, output=tmp_path)) for p in sorted(SWEEPS.glob("*.yaml"))}
    assert set(plans) == {"main", "layer_choice", "wt_samples", "eval_gumbel"}
    assert plans["main"][0].endswith("7 runs in " + f"{tmp_path}/, 6 to train, 7 to evaluate, 0 finished")
    langs = len(yaml.safe_load((SWEEPS / "main.yaml").read_text())["langs"].split(","))
    assert "none " in plans["main"][1] and f"evaluate {langs} tasks" in plans["main"][1]
    # every W_T point shares the plain cc run's trained model: two trainings (vanilla, cc) for 10 runs
    assert ", 2 to train, 10 to evaluate" in plans["wt_samples"][0]
    cc_id = next(line.split()[1] for line in plans["wt_samples"][1:] if "  cc seed=0" in line)
    shared = [line for line in plans["wt_samples"] if f"train (shared) in {cc_id}" in line]
    assert len(shared) == 8
    assert ", 9 to train," in plans["layer_choice"][0]
    # five sampled evaluations of the one trained cc model (evaluation-time options share its training)
    assert ", 2 to train, 7 to evaluate" in plans["eval_gumbel"][0]
    cc_id = next(line.split()[1] for line in plans["eval_gumbel"][1:] if "  cc seed=0" in line)
    assert sum(f"train (shared) in {cc_id}" in line for line in plans["eval_gumbel"]) == 5
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_run_sweep_reports_progress_and_keeps_going(tmp_path: Path, monkeypatch) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"grid": {"method": "vanilla", "seed": [0, 1, 2]}}),
                       output=tmp_path / "runs")  # fmt: skip
    failing = sweep.runs[1].run_id

    def fake_execute(cfg, refs, ecfg, root, command):
        run = Run(root, cfg)
        run.init(command)
        if cfg.run_id == failing:
            raise RuntimeError("out of memory")
        run.set_phase("complete", tasks=ecfg.tasks, eval=ecfg.key())
        return run

    monkeypatch.setattr("harness.orchestration.sweep.execute", fake_execute)
    lines: list[str] = []
    result = run_sweep(sweep, lines.append)
    assert isinstance(result, SweepResult) and result.failed == [(failing, "RuntimeError: out of memory")]
    assert [line.split()[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "FAILED: RuntimeError: out of memory" in lines[1] and "-> done in" in lines[2]
    assert len(result.run_dirs) == 2
    config = yaml.safe_load((tmp_path / "runs" / failing / "config.yaml").read_text())
    assert config["command"].startswith("harness run --method vanilla") and config["seed"] == 1


# -- a W_T sweep on a tiny model ----------------------------------------------------------------------


EXAMPLES = [
    {"lang": lang, "instruction": f"{word} topic {i} {lang}", "output": "sports", "instruction_en": f"{word} topic {i}"}
    for i, word in enumerate(["What", "Which", "Name", "Say"]) for lang in ("sw", "fr", "en")
]  # fmt: skip


def test_wt_sweep_trains_once_and_refits_per_point(tmp_path: Path, monkeypatch, capsys) -> None:
    from harness.cli import main
    from harness.methods.cc import CCTuning
    from harness.methods.cc.pairs import pairs_from_examples
    from harness.methods.cc.transform import load_cc, refit_checkpoint
    from tests.tiny import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES), encoding="utf-8")
    sweep_file = write_sweep(tmp_path / "wt.yaml", {
        "model": str(base), "recipe": "jsonl", "recipe_path": str(data), "train_limit": 10,
        "tasks": "sib200_mc_sw", "limit": 2, "batch_size": 2,
        "set": {"max_steps": 2, "per_device_batch_size": 4, "batch_size": 4, "bf16": False,
                "logging_steps": 1, "max_length": 128},
        "grid": [{"method": "cc", "method_opt": {"wt_samples": [2, 3, 1000]}},
                 {"method": "cc", "method_opt": {"use_wt": False}}],
    })  # fmt: skip
    trainings = []
    original = CCTuning.train
    monkeypatch.setattr(
        CCTuning, "train", lambda self, ctx: trainings.append(ctx.run_dir) or original(self, ctx)
    )
    runs = tmp_path / "runs"
    assert main(["sweep", str(sweep_file), "--output", str(runs), "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "4 runs in" in out and ", 1 to train, 4 to evaluate" in out and "[4/4]" in out

    sweep = load_sweep(sweep_file, output=runs)
    by_label = {r.label: Run(runs, r.config) for r in sweep.runs}
    source = by_label["cc seed=0"]  # wt_samples=1000 is the default: the plain cc run trains
    assert trainings == [source.dir] and read_status(source.dir)["phase"] == "complete"
    for label in ("cc wt_samples=2 seed=0", "cc wt_samples=3 seed=0", "cc use_wt=False seed=0"):
        run = by_label[label]
        status = read_status(run.dir)
        assert status["phase"] == "complete" and status["training_run"] == source.id
        weights = (run.model_dir / "model.safetensors").stat()
        assert weights.st_ino == (source.model_dir / "model.safetensors").stat().st_ino  # hard link
        shared_cc = (run.model_dir / "cc.safetensors").stat().st_ino == (
            source.model_dir / "cc.safetensors"
        ).stat().st_ino
        assert shared_cc == (label == "cc use_wt=False seed=0")  # only W_T refits write their own
    # the refitted W_T is the least-squares fit of the shared model on M of the training pairs, drawn as
    # training draws them (the trained run's W_T, on all pairs but the held-out one, is reproduced so too)
    refit = by_label["cc wt_samples=2 seed=0"]
    pairs = pairs_from_examples(refit.config.training_examples())
    copy = tmp_path / "copy"
    shutil.copytree(source.model_dir, copy)  # refitted in place: a copy of the trained model
    fit = refit_checkpoint(copy, pairs, {**CCTuning.defaults, "wt_samples": 2}, 0)
    expected, mse = fit.transform_matrix, fit.mse
    torch.testing.assert_close(load_cc(refit.model_dir).transform_matrix, expected)
    everything = refit_checkpoint(copy, pairs, CCTuning.defaults, 0).transform_matrix
    torch.testing.assert_close(load_cc(source.model_dir).transform_matrix, everything, atol=1e-4, rtol=1e-3)
    artifacts = json.loads((refit.dir / "cc_artifacts.json").read_text())
    trained = json.loads((source.dir / "cc_artifacts.json").read_text())
    assert artifacts["transform"]["m"] == 2 and artifacts["transform"]["mse"] == pytest.approx(mse)
    # 8 training pairs: one (8 // 5) held out, the same for every M: 7 left to fit on
    assert artifacts["train_layer_hist"] == trained["train_layer_hist"] and trained["transform"]["m"] == 7
    assert trained["transform"]["heldout"] == artifacts["transform"]["heldout"] == 1
    assert load_cc(refit.model_dir).decision_maker.equal(load_cc(source.model_dir).decision_maker)
    assert (tmp_path / "report" / "plots" / "wt_mse.png").is_file()

    # interrupted evaluation: the sweep resumes just the missing task, and trains nothing
    (refit.results_dir / "sib200_mc_sw.json").unlink()
    refit.set_phase("evaluating")
    mtime = (source.model_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["sweep", str(sweep_file), "--output", str(runs), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert plan.count("complete: reuse") == 3 and "wt_samples=2 seed=0  evaluate 1 task" in plan
    assert main(["sweep", str(sweep_file), "--output", str(runs)]) == 0
    assert trainings == [source.dir] and read_status(refit.dir)["phase"] == "complete"
    assert (source.model_dir / "model.safetensors").stat().st_mtime_ns == mtime

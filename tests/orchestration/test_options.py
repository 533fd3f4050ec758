"""One run-options model: the command line, a --config file and a sweep file parse and validate the same way,
and a planned run's command line plans that run again."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser
from harness.cli.common import run_values
from harness.orchestration.options import RunOptions, command_line, plan_runs, run_label
from harness.orchestration.sweep import load_sweep
from harness.plumbing.errors import HarnessError


def from_cli(argv: list[str]) -> RunOptions:
    values, name = run_values(build_parser().parse_args(["run", *argv]))
    return RunOptions.parse(values, name)


def from_config(tmp_path: Path, values: dict) -> RunOptions:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return from_cli(["--config", str(path)])


def from_sweep(tmp_path: Path, values: dict):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return load_sweep(path, output=tmp_path / "runs")


def test_the_three_sources_read_numbers_alike(tmp_path: Path) -> None:
    values = {"method": "vanilla", "tasks": "sib200_mc_sw", "limit": "5", "train_limit": 7, "seed": "3"}
    cli = from_cli(["--method", "vanilla", "--tasks", "sib200_mc_sw", "--limit", "5", "--train-limit", "7", "--seed", "3"])
    config = from_config(tmp_path, values)
    assert (cli.limit, cli.train_limit, cli.seeds) == (config.limit, config.train_limit, config.seeds) == (5, 7, [3])
    (point,) = from_sweep(tmp_path, values).runs
    assert point.ecfg.limit == 5 and point.config.train_limit == 7 and point.config.seed == 3
    assert point.run_id == plan_runs(cli)[0].run_id == plan_runs(config)[0].run_id


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("limit", 0, "limit 0: must be at least 1 (omit it to use every item)"),
        ("limit", "many", "limit 'many': expected a positive whole number"),
        ("seed", "one", "seed 'one': expected a whole number"),
        ("seed", True, "seed True: expected a whole number"),
        ("batch_size", -2, "batch_size -2: must be at least 1"),
        ("trust_remote_code", "yes", "trust_remote_code 'yes': expected true or false"),
    ],
)
def test_the_three_sources_refuse_alike(tmp_path: Path, key: str, value, message: str) -> None:
    """The same bad value gives the same message from a config file and a sweep file, each naming where."""
    config = tmp_path / "run.yaml"
    with pytest.raises(HarnessError) as from_file:
        from_config(tmp_path, {key: value})
    assert str(from_file.value) == f"{config}: {message}"
    with pytest.raises(HarnessError) as from_grid:
        from_sweep(tmp_path, {"grid": {key: value}})
    assert str(from_grid.value) == f"{tmp_path / 'sweep.yaml'}: grid block 1: {message}"
    if not isinstance(value, bool) and key != "trust_remote_code":
        with pytest.raises(HarnessError) as from_flag:
            from_cli([f"--{key.replace('_', '-')}", str(value)])
        assert str(from_flag.value) == f"--{key.replace('_', '-')} {message.split(' ', 1)[1]}"


def test_a_planned_runs_command_line_plans_it_again(tmp_path: Path) -> None:
    (run,) = plan_runs(from_cli([
        "--method", "cc", "--tasks", "sib200_mc_sw", "--limit", "4", "--method-opt", "wt_samples=10",
        "--set", "epochs=1", "--train-langs", "en,sw", "--train-limit", "12", "--seed", "2",
    ]))  # fmt: skip
    assert run_label(run.config) == "cc wt_samples=10 seed=2"
    args = command_line(run, tmp_path / "runs")
    assert shlex.split(shlex.join(args)) == args and args[:2] == ["harness", "run"]
    (again,) = plan_runs(from_cli(args[2:]))
    assert again.run_id == run.run_id and again.ecfg == run.ecfg


def test_empty_names_are_refused_with_what_was_expected() -> None:
    with pytest.raises(HarnessError, match=r"--method '': expected one or more method names"):
        from_cli(["--method", ""])
    with pytest.raises(HarnessError, match=r"--seeds ',': expected one or more whole numbers"):
        from_cli(["--seeds", ","])

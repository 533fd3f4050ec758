"""The project as a wheel: built from the source tree, installed with `--no-deps` into a fresh virtual
environment that borrows this interpreter's site-packages for the dependencies, and used from a folder
outside the source tree. Nothing installs under a generic top-level name: `tasks/`, `methods/` and
`reports/` become `harness.tasks`, `harness.methods` and `harness.reports`, with the task YAMLs inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from harness.data.base import data_dir

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("harness", "tasks", "methods", "reports", "pyproject.toml", "README.md")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import harness
found = [m.name for m in pkgutil.walk_packages(harness.__path__, "harness.") if not m.name.endswith(".__main__")]
for name in found:
    importlib.import_module(name)
print(json.dumps({"harness": harness.__file__, "modules": found,
                  "generic": [n for n in ("tasks", "methods", "reports") if importlib.util.find_spec(n)]}))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so that building leaves no build/ or egg-info in the checkout
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], check=True,
                   capture_output=True, text=True)  # fmt: skip
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    # The dependencies: this interpreter's site-packages, added as plain paths (their .pth files, such as an
    # editable install of this project, are not run).
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    wheel = next(dist.glob("cc_harness-*.whl"))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True,
                   capture_output=True, text=True)  # fmt: skip
    return env_dir


def test_wheel_holds_the_packages_under_harness_with_their_data(wheel_env: Path) -> None:
    wheel = next((wheel_env.parent / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("cc_harness-")}
    assert tops == {"harness"}
    assert any(n.startswith("harness/tasks/xnli/") and n.endswith(".yaml") for n in names)
    assert "harness/tasks/_gen.yaml" in names
    assert "harness/orchestration/model_configs/meta-llama__Llama-3.1-8B/config.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "builtin = harness.methods" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_from_outside_the_source_tree(wheel_env: Path, tmp_path: Path) -> None:
    python = wheel_env / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HARNESS_DATA"] = str(data_dir())
    done = subprocess.run([python, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(info["harness"]).is_relative_to(wheel_env), info["harness"]
    assert info["generic"] == []
    assert {"harness.tasks.utils", "harness.methods.cc.lm", "harness.reports.html", "harness.cli.run"} <= set(
        info["modules"]
    )
    tasks = subprocess.run([wheel_env / "bin" / "harness", "tasks"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert tasks.returncode == 0, tasks.stderr
    assert "xnli" in tasks.stdout and "sib200" in tasks.stdout
    methods = subprocess.run([wheel_env / "bin" / "harness", "methods"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert methods.returncode == 0 and "cc " in methods.stdout, methods.stderr


def test_installed_wheel_loads_the_task_yamls_through_lm_eval(wheel_env: Path, tmp_path: Path) -> None:
    """lm-eval reads the task folder inside the installed package, and its `!function utils.*` hooks import
    `harness.tasks` from there."""
    python = wheel_env / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HARNESS_DATA"] = str(data_dir())
    code = ("from harness.evaluation.evaluate import _task_manager\n"
            "import harness.tasks.catalog as c\n"
            "t = _task_manager().load(['sib200_gen_sw'])['tasks']['sib200_gen_sw']\n"
            "print(c.TASKS_DIR, len(t.eval_docs))")  # fmt: skip
    done = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    folder, count = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert Path(folder).is_relative_to(wheel_env) and int(count) == 204

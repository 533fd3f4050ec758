"""What produced a run's numbers: the code and library versions, the hardware, and the time of each phase.

`environment()` describes this process's software (the harness version, its git commit and whether the
tree had uncommitted changes, Python, and the libraries that shape the numbers); `environment_id` names it
by a short hash. A run records every phase it went through (`provenance.json`, written by the store) with
the environment id that did it, the device, the dtype, the thread count, and the wall and CPU seconds, so
that a run resumed or extended by another version of the code says which version produced which results.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import harness

# The libraries whose versions can change a number (distribution names).
LIBRARIES = (
    "torch",
    "transformers",
    "lm_eval",
    "peft",
    "accelerate",
    "datasets",
    "safetensors",
    "tokenizers",
)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The harness version, and where it runs from a git checkout, its commit and whether tracked files had
    uncommitted changes (`dirty`). An installed wheel has no commit: `commit` is None."""
    root = Path(harness.__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    dirty = None
    if commit:
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = bool(changes) if changes is not None else None
    return {"harness": harness.__version__, "commit": commit, "dirty": dirty}


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """This process's software: `code_version()`, Python, the platform and the `LIBRARIES` versions."""
    return {
        **code_version(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def environment_id(env: dict[str, Any]) -> str:
    """A short, stable name for an environment (12 hex digits of the SHA-256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:12]


def hardware(dtype: str | None = None) -> dict[str, Any]:
    """The device, dtype and threads of this process (torch's view of them when torch is loaded)."""
    info: dict[str, Any] = {"device": "cpu", "threads": None, "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})"
    if dtype:
        info["dtype"] = dtype
    return info


class PhaseClock:
    """Wall and CPU seconds of one phase (the CPU time of this process and the children it waited for)."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = self._cpu()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def elapsed(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall0, 2),
            "cpu_s": round(self._cpu() - self.cpu0, 2),
        }


def describe(env: dict[str, Any]) -> str:
    """`0.1.0 @ 9626d1a (dirty)`, `0.1.0 (installed)`: the code version in a few characters."""
    if not env:
        return "not recorded"
    text = str(env.get("harness", "?"))
    if env.get("commit"):
        text += f" @ {str(env['commit'])[:7]}" + (" (dirty)" if env.get("dirty") else "")
    else:
        text += " (no git checkout)"
    return text


def library_line(env: dict[str, Any]) -> str:
    """`torch 2.13.0, transformers 5.1.0, ...` for the libraries that are installed."""
    libs = env.get("libraries") or {}
    return ", ".join(f"{name} {version}" for name, version in libs.items() if version)

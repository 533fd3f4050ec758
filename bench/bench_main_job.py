"""Wall time and peak memory (RSS) of the README's main job, run exactly as the README gives it, in a fresh
run store.

    python bench/bench_main_job.py [--output /tmp/main-job-runs]

Peak RSS is the largest resident set of the command's process tree (`ru_maxrss` of the waited-for
children, as `/usr/bin/time -v` reports it). Prints the job's own output (the per-language table) after
the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_main_job() -> list[str]:
    """The `harness run ...` part of the README's first set-up command."""
    first = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install"))
    match = re.search(r"harness run .*$", first)
    if not match:
        raise SystemExit("README's first command has no `harness run`")
    return shlex.split(match.group(0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="/tmp/main-job-runs", help="run store (emptied first)")
    args = p.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    cmd = readme_main_job() + ["--output", args.output]
    argv = [sys.executable, "-m", "harness.cli", *cmd[1:]]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ})
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"exit {out.returncode}; wall {wall / 60:.1f} min; peak RSS {peak_gb:.2f} GB")
    print(out.stdout)
    if out.returncode:
        print(out.stderr[-3000:])


if __name__ == "__main__":
    main()

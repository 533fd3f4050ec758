"""Evaluation throughput: `harness run --method none` against plain `lm_eval.simple_evaluate` with `HFLM`,
same model, tasks, limit, batch size, dtype and chat template.

    python bench/bench_eval.py [--tasks sib200_gen_en,sib200_gen_sw,sib200_mc_en,sib200_mc_sw] [--limit 20]
                               [--repeats 3]

Both sides run as fresh subprocesses, alternating, so each pays its imports, model load and task
building, as a user's command does; the harness starts with an empty run store each time (no cached
responses). Prints the wall time of each run, the medians, plain/harness (>= 1.0: the harness is at
least as fast), and both sides' scores (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import json, sys, time
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
ref, tasks, limit, batch = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
lm = HFLM(pretrained=ref, dtype="float32", batch_size=batch, device="cpu")
out = simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=TaskManager(include_path=sys.argv[5]),
                      apply_chat_template=True, log_samples=True, bootstrap_iters=0, random_seed=0,
                      numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
scores = {t: {k.split(",")[0]: v for k, v in r.items() if "," in k and "stderr" not in k}
          for t, r in out["results"].items() if t in tasks}
print(json.dumps(scores))
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def harness_scores(output: Path, tasks: list[str]) -> dict[str, dict[str, float]]:
    (run,) = [p for p in output.iterdir() if (p / "config.yaml").is_file()]
    found = {}
    for task in tasks:
        result = json.loads((run / "results" / f"{task}.json").read_text())
        found[task] = result["metrics"]
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="sib200_gen_en,sib200_gen_sw,sib200_mc_en,sib200_mc_sw")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from harness.data.models import resolve_model

    ref = resolve_model("smollm2-135m-instruct")
    tasks = args.tasks.split(",")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    times: dict[str, list[float]] = {"harness": [], "plain": []}
    scores: dict[str, dict] = {}
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "harness.cli", "run", "--method", "none", "--tasks", args.tasks,
                   "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--output", tmp]  # fmt: skip
            seconds, _ = timed(cmd, env)
            times["harness"].append(seconds)
            scores["harness"] = harness_scores(Path(tmp), tasks)
        cmd = [sys.executable, "-c", PLAIN, ref, args.tasks, str(args.limit), str(args.batch_size),
               str(ROOT / "tasks")]  # fmt: skip
        seconds, out = timed(cmd, env)
        times["plain"].append(seconds)
        scores["plain"] = json.loads(out.strip().splitlines()[-1])
        print(f"repeat {i + 1}: harness {times['harness'][-1]:.1f} s, plain {times['plain'][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\ntasks {args.tasks}, limit {args.limit}, batch size {args.batch_size}, {args.repeats} repeats")
    print(f"median wall time: harness {med['harness']:.1f} s, plain lm_eval {med['plain']:.1f} s; "
          f"plain/harness = {med['plain'] / med['harness']:.2f}")  # fmt: skip
    for task in tasks:
        h = {k: round(v, 4) for k, v in scores["harness"][task].items() if isinstance(v, float)}
        q = {k: round(v, 4) for k, v in scores["plain"][task].items() if isinstance(v, float) and k in h}
        print(f"{task}: harness {h} plain {q}{'' if h == q else '  << DIFFERENT'}")


if __name__ == "__main__":
    main()

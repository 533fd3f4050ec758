"""Time and memory of fitting the Transform Matrix W_T (CC-Tuning), ours against LAPACK's gelsd.

    python bench/bench_wt.py random [--m 1000] [--layers 32] [--d 4096] [--solvers ours,gelsd]
    python bench/bench_wt.py model [--m 1000] [--langs sw,hi,zh,fr,ar,ru]

`random`: X, Y of the shape an 8B model gives (M pairs x L layers x d), random (Y = X A + noise), fitted
by our solver (normal equations in float64 blocks + eigendecomposition: `fit_transform_matrix`) and by
`torch.linalg.lstsq(driver="gelsd")` on the stacked float64 matrices (what the harness did before).
`model`: the default model's real activations for M parallel pairs of the shared corpus
(`wt_source: parallel`): the time to collect them (two forward passes per pair) and to solve, with both
solvers, and how far apart their MSEs are.

Each solver runs in a fresh subprocess: its time, and its peak RSS above the RSS it had once the data
was in memory (ru_maxrss). Prints one Markdown row per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def solve(solver: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    from harness.cc.transform import fit_transform_matrix, transform_mse

    if solver == "ours":
        return fit_transform_matrix(x, y)
    d = x.shape[-1]
    solution = torch.linalg.lstsq(x.reshape(-1, d).double(), y.reshape(-1, d).double(), driver="gelsd").solution
    return solution.float(), transform_mse(x, y, solution)


def random_data(m: int, layers: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, layers, d, generator=g)
    y = x @ (torch.randn(d, d, generator=g) / d**0.5)
    y += 0.1 * torch.randn(m, layers, d, generator=g)
    return x, y


def model_data(m: int, langs: list[str]) -> tuple[torch.Tensor, torch.Tensor, float]:
    from harness.cc.transform import collect_activations, pairs_from_parallel, sample_pairs
    from harness.models import load_model, load_tokenizer, resolve_model

    ref = resolve_model("smollm2-135m-instruct")
    tokenizer, model = load_tokenizer(ref), load_model(ref)
    pairs = sample_pairs(pairs_from_parallel(langs), m, seed=0)
    start = time.perf_counter()
    with torch.no_grad():
        x = collect_activations(model, tokenizer, [p.text for p in pairs], batch_size=8)
        y = collect_activations(model, tokenizer, [p.text_en for p in pairs], batch_size=8)
    return x, y, time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """One solver on one data set, in this (fresh) process; prints a JSON line."""
    collect = None
    if args.mode == "random":
        x, y = random_data(args.m, args.layers, args.d)
    else:
        cache = Path(args.cache)
        if cache.is_file():
            saved = torch.load(cache, weights_only=True)  # our own tensors, written below
            x, y, collect = saved["x"], saved["y"], saved["seconds"]
        else:
            x, y, collect = model_data(args.m, args.langs.split(","))
            torch.save({"x": x, "y": y, "seconds": collect}, cache)
    base = rss_gb()
    start = time.perf_counter()
    _, mse = solve(args.solver, x, y)
    seconds = time.perf_counter() - start
    print(json.dumps({"solver": args.solver, "shape": list(x.shape), "seconds": seconds, "mse": mse,
                      "data_gb": base, "extra_gb": rss_gb() - base, "collect_seconds": collect}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["random", "model"])
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--langs", default="sw,hi,zh,fr,ar,ru")
    p.add_argument("--solvers", default="ours,gelsd")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--solver", help=argparse.SUPPRESS)
    p.add_argument("--cache", default="/tmp/bench_wt_activations.pt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.solver:
        child(args)
        return
    if args.mode == "model":
        Path(args.cache).unlink(missing_ok=True)
    rows = []
    for solver in args.solvers.split(","):
        cmd = [sys.executable, __file__, args.mode, "--solver", solver, "--m", str(args.m), "--layers",
               str(args.layers), "--d", str(args.d), "--langs", args.langs, "--cache", args.cache,
               "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"torch threads: {args.threads or torch.get_num_threads()}")
    print("| solver | X shape (M, L, d) | activations collected (s) | solve (s) | solve peak RSS above data (GB) "
          "| data in memory (GB) | MSE |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        collect = f"{r['collect_seconds']:.1f}" if r["collect_seconds"] is not None else "-"
        print(f"| {r['solver']} | {tuple(r['shape'])} | {collect} | {r['seconds']:.2f} | {r['extra_gb']:.2f} "
              f"| {r['data_gb']:.2f} | {r['mse']:.6g} |")  # fmt: skip
    by = {r["solver"]: r for r in rows}
    if {"ours", "gelsd"} <= set(by):
        o, g = by["ours"], by["gelsd"]
        print(f"\ngelsd / ours: time {g['seconds'] / o['seconds']:.1f}x, extra memory "
              f"{g['extra_gb'] / max(o['extra_gb'], 1e-3):.1f}x; MSE relative difference "
              f"{abs(o['mse'] - g['mse']) / max(g['mse'], 1e-30):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()

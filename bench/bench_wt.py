"""Time and memory of fitting the Transform Matrix W_T (CC-Tuning), ours against LAPACK's gelsd.

    python bench/bench_wt.py random [--m 1000] [--layers 32] [--d 4096] [--solvers ours,gelsd]
    python bench/bench_wt.py model [--m 1000] [--langs sw,hi,zh,fr,ar,ru]
    python bench/bench_wt.py lstsq [--m 10,20,50,100,250,1000] [--langs sw,hi,zh,fr,ar,ru]

`random`: X, Y of the shape an 8B model gives (M pairs x L layers x d), random (Y = X A + noise), fitted
by our solver (normal equations in float64 blocks + eigendecomposition: `fit_transform_matrix`) and by
`torch.linalg.lstsq(driver="gelsd")` on the stacked float64 matrices (what the harness did before).
`model`: the default model's real activations for M parallel pairs of the shared corpus
(`wt_source: parallel`): the time to collect them (two forward passes per pair) and to solve, with both
solvers, and how far apart their MSEs are.
`lstsq`: the accuracy of the normal equations against `np.linalg.lstsq` (gelsd, rcond=None) on the default
model's real activations (collected once for the largest M plus the held-out pairs of `split_pairs`;
smaller M are prefixes) and on badly conditioned variants of them: per M, cond(X), cond(G) as the fast
path sees it, the relative difference of W_T on X's row space, and the in-sample and held-out MSE of each,
for the raw normal equations and for `fit_transform_matrix` (which falls back to gelsd above
GRAM_CONDITION_MAX). Runs in this process; prints one Markdown table.

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
    from harness.methods.cc.transform import fit_transform_matrix, transform_mse

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
    from harness.data.models import load_model, load_tokenizer, resolve_model
    from harness.methods.cc.pairs import pairs_from_parallel, sample_pairs
    from harness.methods.cc.transform import collect_activations

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


# -- lstsq: the normal equations against numpy's gelsd ---------------------------------------------------


def conditioned_cases(d: int):
    """(name, make) for the real activations and badly conditioned variants of them: make(x, y, x_held,
    y_held) of the first M pairs gives the case's (x, y, x_held, y_held); every change to X's columns is
    applied to the held-out X too."""
    g = torch.Generator().manual_seed(0)
    yield "real", lambda x, y, xh, yh: (x, y, xh, yh)
    cols = torch.randperm(d, generator=g)[:4]
    for name, scales in (("4 columns x 1e3", [1e3] * 4), ("4 columns x 1e3..1e6", [1e3, 1e4, 1e5, 1e6])):
        factor = torch.ones(d)
        factor[cols] = torch.tensor(scales)
        yield name, lambda x, y, xh, yh, factor=factor: (x * factor, y, xh * factor, yh)
    # one column a linear combination of 8 others plus noise at 1e-7 of its size
    j, others = int(cols[0]), torch.randperm(d, generator=g)[:9]
    others = others[others != j][:8]
    coef = torch.randn(len(others), generator=g, dtype=torch.float64)

    def collinear(a: torch.Tensor) -> torch.Tensor:
        a = a.double().clone()
        combo = a[..., others] @ coef
        noise = torch.randn(combo.shape, generator=torch.Generator().manual_seed(a.shape[0])).double()
        a[..., j] = combo + 1e-7 * combo.std() * noise
        return a

    yield "near-collinear column", lambda x, y, xh, yh: (collinear(x), y, collinear(xh), yh)

    # the M pairs are M/2 pairs twice, the second time with noise at 1e-7 of the activations' size (same Y)
    def duplicated(x: torch.Tensor, y: torch.Tensor, xh: torch.Tensor, yh: torch.Tensor):
        half = (x.shape[0] + 1) // 2
        base = x[:half].double()
        noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(half), dtype=torch.float64)
        dup_x = torch.cat([base, base + 1e-7 * base.std() * noise])[: x.shape[0]]
        return dup_x, torch.cat([y[:half], y[:half]])[: x.shape[0]], xh, yh

    yield "near-duplicate rows", duplicated


def lstsq_row(case: str, x: torch.Tensor, y: torch.Tensor, xh: torch.Tensor, yh: torch.Tensor) -> dict:
    import numpy as np

    from harness.methods.cc.transform import _normal_equations, fit_transform_matrix, transform_mse

    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d).double(), y.reshape(-1, d).double()
    n = x2.shape[0]
    start = time.perf_counter()
    reference, _, rank, singular = np.linalg.lstsq(x2.numpy(), y2.numpy(), rcond=None)
    gelsd_s = time.perf_counter() - start
    nonzero = singular[singular > np.finfo(np.float64).eps * max(n, d) * singular[0]]
    _, _, vt = np.linalg.svd(x2.numpy(), full_matrices=False)
    row_space = vt[:rank]  # (rank, d): X's row space as gelsd sees it

    def rel_diff(w: torch.Tensor) -> float:
        diff = row_space @ (w.double().numpy() - reference)
        return float(np.linalg.norm(diff) / max(np.linalg.norm(row_space @ reference), 1e-300))

    start = time.perf_counter()
    normal, gram_condition = _normal_equations(x2, y2)
    normal_s = time.perf_counter() - start
    info: dict = {}
    harness_w, _ = fit_transform_matrix(x, y, info)
    ref_w = torch.from_numpy(reference)
    return {
        "case": case, "m": x.shape[0], "rows": n, "cond_x": float(nonzero[0] / nonzero[-1]), "rank": int(rank),
        "cond_g": gram_condition, "normal_diff": rel_diff(normal), "normal_s": normal_s, "gelsd_s": gelsd_s,
        "normal_mse": transform_mse(x, y, normal), "gelsd_mse": transform_mse(x, y, ref_w),
        "normal_held": transform_mse(xh, yh, normal), "gelsd_held": transform_mse(xh, yh, ref_w),
        "solver": info["solver"], "harness_diff": rel_diff(harness_w.double()),
    }  # fmt: skip


def lstsq_bench(args: argparse.Namespace) -> None:
    from harness.data.models import load_model, load_tokenizer, resolve_model
    from harness.methods.cc.pairs import pairs_from_parallel, split_pairs
    from harness.methods.cc.transform import FIT_RTOL, GRAM_CONDITION_MAX, collect_activations

    ms = sorted(int(v) for v in args.m.split(","))
    ref = resolve_model("smollm2-135m-instruct")
    tokenizer, model = load_tokenizer(ref), load_model(ref)
    sample, held = split_pairs(pairs_from_parallel(args.langs.split(",")), ms[-1], seed=0)
    both = [*sample, *held]
    start = time.perf_counter()
    with torch.no_grad():  # one call per side for the fit and held-out pairs, as fit_transform does
        x_all = collect_activations(model, tokenizer, [p.text for p in both], batch_size=8)
        y_all = collect_activations(model, tokenizer, [p.text_en for p in both], batch_size=8)
    collect = time.perf_counter() - start
    del model
    x, xh, y, yh = x_all[: len(sample)], x_all[len(sample) :], y_all[: len(sample)], y_all[len(sample) :]
    print(f"default model {ref}: X {tuple(x.shape)}, {len(held)} held-out pairs; activations of "
          f"{2 * len(both)} prompts collected in {collect:.0f} s; torch threads {torch.get_num_threads()}; "
          f"GRAM_CONDITION_MAX = {GRAM_CONDITION_MAX:.0e}, FIT_RTOL = {FIT_RTOL:.0e}; held-out: mean square "
          f"of Y {float((yh.double() ** 2).mean()):.4g}, MSE of W_T = identity "
          f"{float(((xh.double() - yh.double()) ** 2).mean()):.4g}\n")  # fmt: skip
    print("| case | M | rows M*L | cond(X) | rank | cond(G), fast path | normal eq.: rel. diff of W_T "
          "| in-sample MSE: normal eq. / gelsd | held-out MSE: normal eq. / gelsd | solve (s): normal eq. / gelsd "
          "| harness solver | harness: rel. diff of W_T |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case, make in conditioned_cases(x.shape[-1]):
        for m in ms:
            if m > len(sample):
                continue
            r = lstsq_row(case, *make(x[:m], y[:m], xh, yh))
            print(f"| {r['case']} | {r['m']} | {r['rows']} | {r['cond_x']:.3g} | {r['rank']} | {r['cond_g']:.3g} "
                  f"| {r['normal_diff']:.2e} | {r['normal_mse']:.4g} / {r['gelsd_mse']:.4g} "
                  f"| {r['normal_held']:.4g} / {r['gelsd_held']:.4g} | {r['normal_s']:.2f} / {r['gelsd_s']:.2f} "
                  f"| {r['solver']} | {r['harness_diff']:.2e} |", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["random", "model", "lstsq"])
    p.add_argument("--m", default=None, help="M; lstsq: a list (default 10,20,50,100,250,1000)")
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
    if args.mode == "lstsq":
        args.m = args.m or "10,20,50,100,250,1000"
        lstsq_bench(args)
        return
    args.m = int(args.m or 1000)
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

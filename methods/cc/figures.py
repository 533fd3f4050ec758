"""The report figures of CC-Tuning runs (`CCTuning.report_figures`): the Decision Maker's layer choices per
run, accuracy against a fixed source layer, W_T's fit and accuracy against M, and the sampled Decision Maker
at evaluation against the argmax one."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports import plots
from harness.reports.benches import BenchReport, with_bench
from harness.reports.figures import Figure, FigureContext, mean_spread, non_en_average, safe_name
from harness.reports.runs import RunRecord, natural_key

log = logging.getLogger(__name__)

ARTIFACTS = "cc_artifacts.json"  # <run_dir>/ of a CC run: layer choices in training, the W_T fit


def cc_figures(ctx: FigureContext) -> dict[str, list[Figure]]:
    """Every CC figure of the report, by section."""
    if ctx.frame.empty:
        return {}
    figures = layer_figures(ctx.runs, ctx.frame, ctx.benches, ctx.out)
    sampled = gumbel_figures(ctx.runs, ctx.frame, ctx.benches, ctx.out)
    if sampled:
        figures["sampled Decision Maker at evaluation"] = sampled
    return figures


def layer_figures(runs: list[RunRecord], frame: pd.DataFrame, benches: list[BenchReport], out: Path) -> dict[str, list[Figure]]:  # fmt: skip
    """Decision Maker layer choices per CC run; accuracy against a fixed source layer; W_T against M."""
    figures: dict[str, list[Figure]] = defaultdict(list)
    cc_runs = sorted((r for r in runs if r.method == "cc"), key=lambda r: (natural_key(r.variant), r.seed))
    for run in cc_runs:
        train = run.artifact(ARTIFACTS) or {}
        evals = run.artifact("eval_artifacts.json") or {}
        if run.resolved_options().get("fixed_source_layer", -1) >= 0 or not (train or evals):
            continue
        per_step = [(row["step"], row["cc_layer_hist"]) for row in train.get("train_layer_hist_per_step", [])]
        path = plots.layer_choice(train.get("train_layer_hist"), evals.get("eval_layer_hist"), per_step,
                                  f"{run.variant}, seed {run.seed} ({run.name})",
                                  out / "plots" / f"layers_{safe_name(run.name)}.png")  # fmt: skip
        entropies = [(name, values.get(key)) for name, values, key in
                     (("training", train, "train_layer_entropy"), ("evaluation", evals, "eval_layer_entropy"))]  # fmt: skip
        caption = "; ".join(f"{name} entropy {value:.2f} nats" for name, value in entropies if isinstance(value, float))
        if evals.get("decision"):
            caption += f" (evaluation: {evals['decision']}" + (
                f", eval_seed {evals['eval_seed']})" if evals.get("eval_seed") is not None else ")"
            )
        figures["layer choice"].append(
            Figure(str(path.relative_to(out)), f"{run.variant}, seed {run.seed}", caption)
        )

    frame = with_bench(frame)
    by_variant: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_variant[run.variant].append(run)

    def reference_lines(avg: pd.Series, names: dict[str, str]) -> dict[str, float]:
        lines = {}
        for variant, label in names.items():
            values = [avg.get(r.name) for r in by_variant.get(variant, [])]
            values = [v for v in values if v is not None and not np.isnan(v)]
            if values:
                lines[label] = float(np.mean(values))
        return lines

    # accuracy against the fixed source layer (the layer-choice ablation)
    fixed = [r for r in cc_runs if r.resolved_options().get("fixed_source_layer", -1) >= 0]
    if fixed:
        for bench in benches:
            avg = non_en_average(frame, bench)
            groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
            for run in fixed:
                value = avg.get(run.name)
                if value is None or np.isnan(value):
                    continue
                rest = {k: v for k, v in run.options.items() if k != "fixed_source_layer"}
                name = "fixed layer" + (
                    f" ({', '.join(f'{k}={v}' for k, v in sorted(rest.items()))})" if rest else ""
                )
                groups[name][int(run.options["fixed_source_layer"])].append(float(value))
            if not groups:
                continue
            curves = []
            for name, points in groups.items():
                layers = sorted(points)
                stats = [mean_spread(points[layer]) for layer in layers]
                curves.append(plots.Curve(name, layers, [s[0] for s in stats], [s[1] for s in stats]))
            refs = reference_lines(avg, {"cc": "Decision Maker (cc)", "vanilla": "vanilla SFT"})
            path = plots.against(curves, refs, f"{bench.bench}: fixed source layer", "source layer",
                                 f"{bench.metric} x 100, avg non-en", out / "plots" / f"fixed_layer_{bench.bench}.png",
                                 integer_x=True)  # fmt: skip
            figures["fixed source layer"].append(Figure(str(path.relative_to(out)), bench.bench,
                "each point trains a model that always fuses that layer; lines: the learned Decision Maker, vanilla SFT"))  # fmt: skip

    # W_T: MSE and accuracy against M, one curve per setting of the other options
    groups_m: dict[str, list[RunRecord]] = defaultdict(list)
    for run in cc_runs:
        rest = {k: v for k, v in run.options.items() if k != "wt_samples"}
        if rest.get("use_wt", True) is False:
            continue
        groups_m[", ".join(f"{k}={v}" for k, v in sorted(rest.items())) or "cc"].append(run)
    groups_m = {k: v for k, v in groups_m.items() if len({_m(r) for r in v}) > 1}
    if groups_m:
        # two curves per group: the in-sample MSE (dashed; exactly 0 whenever M*L <= d, so it says nothing
        # at small M) and the MSE on the held-out pairs (solid; absent from runs that predate it)
        curves, heldout_sizes = [], set()
        for i, (name, members) in enumerate(groups_m.items()):
            for key, kind, style in (("mse", "in-sample", "--"), ("mse_heldout", "held-out", "-")):
                points: dict[int, list[float]] = defaultdict(list)
                for run in members:
                    transform = (run.artifact(ARTIFACTS) or {}).get("transform") or {}
                    if transform.get(key) is not None:
                        points[_m(run)].append(float(transform[key]))
                        if key == "mse_heldout":
                            heldout_sizes.add(transform.get("heldout"))
                ms = sorted(points)
                stats = [mean_spread(points[m]) for m in ms]
                if ms:
                    curves.append(plots.Curve(f"{name}, {kind}", ms, [s[0] for s in stats], [s[1] for s in stats],
                                              linestyle=style, color=f"C{i % 10}"))  # fmt: skip
        sizes = sorted(h for h in heldout_sizes if h is not None)
        held = f"H = {', '.join(map(str, sizes))} pairs" if sizes else "H pairs"
        caption = ("dashed: in-sample MSE on the M pairs fitted on, exactly 0 whenever M*L <= d (no more rows "
                   f"than the hidden size: the fit is exact); solid: held-out MSE on {held} never used in any fit "
                   "(the same pairs for every M of a seed)")  # fmt: skip
        if not heldout_sizes:
            caption += "; these runs recorded no held-out MSE"
        path = plots.against(curves, {}, "W_T fit: MSE(X W_T, Y) against M", "M (parallel pairs)",
                             "MSE", out / "plots" / "wt_mse.png", logx=True, logy=True)  # fmt: skip
        figures["W_T against M"].append(Figure(str(path.relative_to(out)), "MSE against M", caption))
        for bench in benches:
            avg = non_en_average(frame, bench)
            curves = []
            for name, members in groups_m.items():
                points = defaultdict(list)
                for run in members:
                    value = avg.get(run.name)
                    if value is not None and not np.isnan(value):
                        points[_m(run)].append(float(value))
                ms = sorted(points)
                stats = [mean_spread(points[m]) for m in ms]
                if ms:
                    curves.append(plots.Curve(name, ms, [s[0] for s in stats], [s[1] for s in stats]))
            if not curves:
                continue
            off = [v for v in by_variant if v.startswith("cc (") and "use_wt=False" in v]
            refs = reference_lines(avg, {**{v: f"W_T off: {v}" for v in off}, "vanilla": "vanilla SFT"})
            path = plots.against(curves, refs, f"{bench.bench}: accuracy against M", "M (parallel pairs)",
                                 f"{bench.metric} x 100, avg non-en", out / "plots" / f"wt_acc_{bench.bench}.png", logx=True)  # fmt: skip
            figures["W_T against M"].append(Figure(str(path.relative_to(out)), bench.bench,
                                                   "one trained model per seed; W_T refitted for each M"))  # fmt: skip
    return figures


def _m(run: RunRecord) -> int:
    """The number of pairs W_T was fitted on (fewer than asked when the source has fewer)."""
    transform = (run.artifact(ARTIFACTS) or {}).get("transform") or {}
    return int(transform.get("m") or run.resolved_options().get("wt_samples", 0))


SAMPLING_OPTIONS = ("eval_gumbel", "eval_seed")


def gumbel_figures(runs: list[RunRecord], frame: pd.DataFrame, benches: list[BenchReport], out: Path) -> list[Figure]:  # fmt: skip
    """CC runs evaluated with the Decision Maker sampled (`eval_gumbel=true`, one run per `eval_seed`, as
    the authors evaluate) against the argmax run of the same trained model: per benchmark and language,
    each sampled score, their mean, and the argmax score."""
    groups: dict[tuple[str, int], dict[str, list[RunRecord]]] = defaultdict(lambda: {"argmax": [], "sampled": []})
    for run in runs:
        if run.method != "cc":
            continue
        rest = {k: v for k, v in sorted(run.options.items()) if k not in SAMPLING_OPTIONS}
        kind = "sampled" if run.resolved_options().get("eval_gumbel") else "argmax"
        groups[(json.dumps(rest, sort_keys=True, default=str), run.seed)][kind].append(run)
    frame = with_bench(frame)
    figures = []
    for (_, seed), members in sorted(groups.items()):
        if not members["sampled"] or len(members["argmax"]) != 1:
            continue
        argmax_run = members["argmax"][0]
        for bench in benches:
            sub = frame[frame.bench == bench.bench]
            wide = sub.pivot_table(index="run", columns="lang", values="value", aggfunc="mean")
            wide = wide.reindex(columns=bench.langs)
            names = [r.name for r in members["sampled"]]
            if argmax_run.name not in wide.index or not set(names) & set(wide.index):
                continue
            argmax = [float(v) for v in wide.loc[argmax_run.name]]
            sampled = [[float(v) for v in wide.loc[n]] for n in names if n in wide.index]
            means = np.nanmean(np.asarray(sampled, float), axis=0)
            gaps = np.abs(means - np.asarray(argmax, float))
            worst = int(np.nanargmax(gaps)) if np.isfinite(gaps).any() else 0
            label = f"{argmax_run.variant}, seed {seed}"
            path = plots.seed_spread(bench.langs, argmax, sampled, f"{bench.metric} x 100",
                                     f"{bench.bench}: {label}", out / "plots" / f"gumbel_{bench.bench}_{safe_name(argmax_run.name)}.png")  # fmt: skip
            figures.append(Figure(str(path.relative_to(out)), f"{bench.bench}, {label}",
                f"dots: {len(sampled)} evaluations with the Decision Maker sampled (eval_gumbel, one eval_seed each); "
                f"bar: their mean; diamond: the argmax decision (the harness's default). Mean |sampled mean - argmax| "
                f"{float(np.nanmean(gaps)):.1f} points, largest {float(gaps[worst]):.1f} ({bench.langs[worst]})"))  # fmt: skip
    return figures



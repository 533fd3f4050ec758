"""The tables `harness run`, `harness eval` and `harness report` print: per benchmark, the baseline rows
(chance, majority), every variant's scores with their flags, the most frequent answers, and the deltas
with their intervals, as in the report (`harness.reports.benches.build_benches`), in plain text."""

from __future__ import annotations

import math

from tabulate import tabulate

from harness.reports.benches import BASELINE_ROWS, FLAGS, REFERENCES, BenchReport, build_benches
from harness.reports.runs import load_runs
from harness.reports.stats import Delta
from harness.reports.table import frame_of


def _num(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _delta(d: Delta | None) -> str:
    if d is None:
        return "-"
    mark = " ▲" if d.significant and d.delta > 0 else " ▼" if d.significant else " †" if d.caveat else ""
    return f"{_num(d.delta, True)}{mark} [{_num(d.lo, True)}, {_num(d.hi, True)}]"


def bench_text(bench: BenchReport) -> list[str]:
    head = ["", *bench.columns]
    rows = []
    for name in BASELINE_ROWS if not bench.baselines.empty else ():
        rows.append([name, *(_num(bench.baselines.loc[name, c]) for c in bench.columns)])
    for variant in bench.scores.index:
        rows.append([variant, *(f"{_num(bench.scores.loc[variant, c])} {bench.flags(variant, c)}".rstrip()
                                for c in bench.columns)])  # fmt: skip
    rows.append(["items", *(bench.items.get(c, "") for c in bench.columns)])
    lines = [f"{bench.bench} ({bench.metric} x 100)", tabulate(rows, head, disable_numparse=True), ""]
    if bench.answers:
        answers = []
        for variant in bench.scores.index:
            cells = []
            for lang in bench.langs:
                c = bench.answers.get((variant, lang))
                none = f" ∅{c.no_answer:.0%}" if c is not None and c.no_answer else ""
                cells.append("-" if c is None else f"{c.top_answer or '-'} {c.top_share:.0%}{none}")
            answers.append([variant, *cells])
        lines += ["most frequent answer and its share of the items (∅: share of outputs with no readable answer)",
                  tabulate(answers, ["", *bench.langs], disable_numparse=True), ""]  # fmt: skip
    for reference, name in REFERENCES.items():
        cells = bench.deltas.get(reference)
        if not cells:
            continue
        rows = [[variant, *(_delta(row.get(c)) for c in bench.columns)] for variant, row in cells.items()]
        lines += [f"delta against {name} (paired bootstrap 95 % interval; ▲/▼ significant, † a side collapsed)",
                  tabulate(rows, [f"- {reference}", *bench.columns], disable_numparse=True), ""]  # fmt: skip
        caveats = sorted({d.caveat for row in cells.values() for d in row.values() if d is not None and d.caveat})
        lines += [f"  † not significant whatever the interval: {c}" for c in caveats]
        if caveats:
            lines.append("")
    return lines


def render(benches: list[BenchReport]) -> str:
    """All benchmarks' tables and the legend of the flags."""
    if not benches:
        return "no results"
    lines = [line for bench in benches for line in bench_text(bench)]
    if any(b.answers for b in benches):
        lines += ["flags: " + "; ".join(f"{k} {v}" for k, v in FLAGS.items())]
    return "\n".join(lines).rstrip()


def run_table(run_dirs: list[str], tasks: list[str] | None = None) -> str:
    """The table of the runs in `run_dirs` for `tasks` (default: all they have), as `harness run` prints it."""
    runs, _ = load_runs(run_dirs)
    frame = frame_of(runs)
    if tasks is not None:
        frame = frame[frame.task.isin(tasks)]
    return render(build_benches(runs, frame, iters=2000, seed=0))

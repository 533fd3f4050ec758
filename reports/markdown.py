"""The report as Markdown (`index.md`): the same tables, deltas, figures, runs and commands as the HTML
page, for reading in a terminal, a pull request or a notebook."""

from __future__ import annotations

import math
from typing import Any

import yaml

from harness.core.provenance import describe, library_line
from harness.reports.alignment import render_markdown as alignment_section
from harness.reports.answer_language import markdown_section as answer_language_section
from harness.reports.benches import BASELINE_ROWS, FLAGS, REFERENCES, BenchReport
from harness.reports.consistency_render import markdown_section as consistency_section
from harness.reports.report import Report
from harness.reports.runs import environments_of


def cell(value: Any) -> str:
    """Table cell text: pipes and line breaks escaped."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _num(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def scores(bench: BenchReport) -> list[str]:
    """Baseline rows (italic), then the variants with their flags; the best variant of each column bold."""
    best = {c: bench.scores[c].max() for c in bench.columns}
    rows = []
    for name in BASELINE_ROWS if not bench.baselines.empty else ():
        rows.append([f"_{name}_", *(f"_{_num(bench.baselines.loc[name, c])}_" for c in bench.columns), ""])
    for variant in bench.scores.index:
        row = [variant]
        for column in bench.columns:
            value = bench.scores.loc[variant, column]
            text = _num(value)
            if not math.isnan(value) and value == best[column] and bench.scores[column].notna().sum() > 1:
                text = f"**{text}**"
            flags = bench.flags(variant, column)
            row.append(f"{text} {flags}" if flags else text)
        rows.append([*row, str(bench.seeds.get(variant, 0))])
    rows.append(["items per run", *(bench.items.get(c, "") for c in bench.columns), ""])
    return table(["variant", *bench.columns, "runs"], rows)


def legend() -> str:
    return "Flags: " + "; ".join(f"**{k}** {v}" for k, v in FLAGS.items()) + "."


def answers(bench: BenchReport) -> list[str]:
    """Per variant and language: the most frequent answer and its share, the normalised entropy of the
    answers and the share of outputs with no readable answer."""
    rows = []
    for variant in bench.scores.index:
        row = [variant]
        for lang in bench.langs:
            c = bench.answers.get((variant, lang))
            if c is None:
                row.append("–")
                continue
            row.append(f"{c.top_answer or '–'} {c.top_share:.0%} · H {c.entropy:.2f} · none {c.no_answer:.0%}")
        rows.append(row)
    if bench.majority_labels:
        rows.append(["gold (majority)", *(f"{label} {share:.0%}" for label, share in map(bench.gold_majority, bench.langs))])
    return table(["answers", *bench.langs], rows)


def deltas(bench: BenchReport, reference: str) -> list[str]:
    rows, caveats = [], []
    for variant, cells in bench.deltas[reference].items():
        row = [variant]
        for column in bench.columns:
            d = cells.get(column)
            if d is None:
                row.append("–")
                continue
            mark = " ▲" if d.significant and d.delta > 0 else " ▼" if d.significant else ""
            if d.caveat:
                caveats.append(f"{variant}, {column}: {d.caveat}")
                mark = f" †{len(caveats)}"
            text = f"{_num(d.delta, True)}{mark} [{_num(d.lo, True)}, {_num(d.hi, True)}] n={d.n_items}"
            row.append(f"**{text}**" if d.significant else text)
        rows.append(row)
    notes = [f"†{i} not significant whatever the interval: {c}" for i, c in enumerate(caveats, 1)]
    return table([f"variant − {reference}", *bench.columns], rows) + [f"- {n}" for n in notes] + ([""] if notes else [])


def render(report: Report) -> str:
    lines = [f"# {report.title}", "", f"Generated {report.generated} from {len(report.runs)} complete runs. "
             "Scores x 100; the best value of each column in bold. Deltas in points with paired bootstrap 95 % "
             f"intervals over items (and seeds), {report.iters} replicates; ▲/▼ and bold: the interval "
             "excludes zero and neither side is collapsed (†: a side is collapsed; the interval is shown but "
             "is not evidence); n = paired items. Baselines: chance = 1 / options, majority = the share of the most frequent gold "
             "label among the evaluated items. HTML version with per-item pages: index.html.", ""]  # fmt: skip
    if report.skipped:
        lines += ["> **Warning: skipped incomplete runs** (not reported):", ">"]
        lines += [f"> - `{s}`" for s in report.skipped] + [""]
    lines += [f"_{note}_" for note in report.notes] + ([""] if report.notes else [])
    for bench in report.benches:
        lines += [f"## {bench.bench} ({bench.metric} x 100)", ""] + scores(bench)
        if bench.answers:
            lines += [legend(), "", "### Answers", ""] + answers(bench)
        for reference, name in REFERENCES.items():
            if bench.deltas.get(reference):
                lines += [f"### Δ against {name} ({reference})", ""] + deltas(bench, reference)
        if bench.plot:
            lines += [f"![{bench.bench} per language]({bench.plot})", ""]
        if bench.answers_plot:
            lines += [f"![{bench.bench} predicted answers against gold]({bench.answers_plot})", ""]
    lines += consistency_section(report.consistency)
    lines += answer_language_section(report.answer_language)
    for section, figures in report.figures.items():
        lines += [f"## {section}", ""]
        for f in figures:
            lines += [f"![{f.title}]({f.path})", "", f"{f.title}{': ' + f.caption if f.caption else ''}", ""]
    lines += alignment_section(report.alignment)
    if report.item_pages:
        lines += ["## Per-item browser", ""]
        lines += [f"- [{p.task}]({p.path}): {p.items} items, {p.runs} runs" for p in report.item_pages] + [""]
    lines += ["## Runs", ""]
    for run in report.runs:
        shared = run.status.get("training_run")
        lines += [f"### {run.name}: {run.variant}, seed {run.seed}", ""]
        if shared:
            lines += [f"Trained model of `{shared}`.", ""]
        lines += [f"Code: {run.code_summary()}. Time: {run.time_summary()}."
                  + (f" Hardware: {run.hardware_summary()}." if run.hardware_summary() else ""), ""]
        lines += ["```bash", run.command, "```", "", "```yaml",
                  yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]  # fmt: skip
    envs = environments_of(report.runs)
    if envs:
        lines += ["## Versions", ""] + table(["environment", "code", "python", "libraries"],
                                             [[i, describe(e), str(e.get("python")), library_line(e)]
                                              for i, e in envs.items()])  # fmt: skip
    return "\n".join(lines)

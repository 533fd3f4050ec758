"""The report as static HTML: `index.html` and one per-item page per task under `items/`.

Plain HTML with inline CSS and a few lines of inline JavaScript (the per-item filter, and a count of
loaded images that tests read); figures are PNG files referenced relative to the page, so the folder
opens from disk with no server and no network. Every piece of text from the run store (model outputs,
prompts, configs, run names) goes through `esc` (`html.escape`): model outputs are untrusted.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.core.provenance import describe, library_line
from harness.plumbing.io import atomic_write_text
from harness.reports import answer_language
from harness.reports.alignment import render_html as alignment_html
from harness.reports.alignment import toc_entry as alignment_toc
from harness.reports.benches import AVG, AVG_NON_EN, BASELINE_ROWS, FLAGS, REFERENCES, BenchReport
from harness.reports.consistency_render import html_section as consistency_section
from harness.reports.report import ItemPage, Report
from harness.reports.runs import RunRecord, environments_of, variant_order
from harness.reports.stats import Delta


def esc(value: Any) -> str:
    """HTML-escaped text (quotes included, so it is safe in attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1400px; padding: 1em 2em 4em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4em; font-size: 1.05em; }
.meta, .note, figcaption, .small { color: #555; font-size: .9em; }
.warning { border: 1px solid #e0a800; background: #fff8e1; padding: .6em 1em; margin: 1em 0; }
.warning ul { margin: .3em 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f5; } td.name, th.name { text-align: left; white-space: nowrap; }
td.en, th.en { border-left: 3px solid #888; background: #f7f7f7; }
td.avg, th.avg { font-weight: 600; } th.avg { background: #e8eefc; }
td.best { background: #dff3e3; font-weight: 700; }
td.sig-pos { background: #dff3e3; } td.sig-neg { background: #fde2e1; }
td .ci { display: block; color: #666; font-size: .8em; white-space: nowrap; }
tr.items td { color: #666; font-size: .85em; }
tr.baseline td { color: #555; font-style: italic; background: #fafafa; }
td.degenerate { background: #eeeeee; color: #666; }
.flag { display: inline-block; margin-left: .25em; padding: 0 .3em; border-radius: 3px; font-size: .75em;
        font-weight: 700; font-style: normal; color: #fff; background: #8a6d3b; cursor: help; }
.flag-C { background: #b00020; } .flag-N { background: #6a1b9a; } .flag-B { background: #8a6d3b; }
.legend { font-size: .9em; color: #333; margin: .2em 0 1em; } .legend .flag { margin: 0 .3em 0 .8em; }
td.caveat .why { display: block; color: #b00020; font-size: .75em; white-space: normal; max-width: 14em; }
table.answers td { text-align: left; font-size: .9em; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
details pre { background: #f7f7f9; padding: .5em; max-height: 30em; overflow: auto; }
nav ul { columns: 3; } .runs td { text-align: left; }
.filters { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd; }
.filters input[type=search] { width: 24em; }
tbody.item tr.head td { background: #f3f3f5; text-align: left; }
tbody.item td, .items-table th { text-align: left; } td.ok { color: #1a7f37; } td.wrong { color: #c62828; }
"""

INDEX_JS = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.dataset.images = String(images.length);
  document.body.dataset.imagesLoaded = String(images.filter(function (i) {
    return i.complete && i.naturalWidth > 0; }).length);
});
"""

ITEMS_JS = """
function applyFilter() {
  var q = document.getElementById("q").value.toLowerCase();
  var run = document.getElementById("run").value;
  var ok = document.getElementById("ok").value;
  var disagree = document.getElementById("disagree").checked;
  var bodies = document.querySelectorAll("tbody.item"), shown = 0;
  for (var i = 0; i < bodies.length; i++) {
    var body = bodies[i], rows = body.querySelectorAll("tr.run"), any = false;
    for (var j = 0; j < rows.length; j++) {
      var show = (!run || rows[j].dataset.run === run) && (!ok || rows[j].dataset.ok === ok);
      rows[j].hidden = !show;
      any = any || show;
    }
    var visible = any && (!disagree || body.dataset.disagree === "1") &&
                  (!q || body.textContent.toLowerCase().indexOf(q) >= 0);
    body.hidden = !visible;
    if (visible) shown++;
  }
  document.getElementById("count").textContent = shown + " of " + bodies.length + " items";
}
document.addEventListener("DOMContentLoaded", function () {
  ["q", "run", "ok", "disagree"].forEach(function (id) {
    document.getElementById(id).addEventListener("input", applyFilter);
    document.getElementById(id).addEventListener("change", applyFilter);
  });
  applyFilter();
});
"""


def page(title: str, body: str, script: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        + (f"<script>{script}</script>\n" if script else "")
        + "</body>\n</html>\n"
    )


def _num(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return text.replace("-", "−")


def _col_class(column: str) -> str:
    return {"en": "en", AVG_NON_EN: "avg", AVG: "avg"}.get(column, "")


def _header(columns: Iterable[str], first: str, extra: str = "") -> str:
    cells = "".join(f'<th class="{_col_class(c)}">{esc(c)}</th>' for c in columns)
    return f'<thead><tr><th class="name">{esc(first)}</th>{cells}{extra}</tr></thead>'


def flag_marks(flags: str) -> str:
    return "".join(f'<span class="flag flag-{f}" title="{esc(FLAGS[f])}">{f}</span>' for f in flags)


def legend() -> str:
    items = "".join(f"{flag_marks(f)}{esc(text)}" for f, text in FLAGS.items())
    return f'<p class="legend">Flags:{items}.</p>'


def score_table(bench: BenchReport) -> str:
    """Baseline rows, then variants x languages with their flags; the best value of each column marked;
    English and the averages apart."""
    best = {c: bench.scores[c].max() for c in bench.columns}
    rows = []
    for name in BASELINE_ROWS if not bench.baselines.empty else ():
        cells = "".join(f'<td class="{_col_class(c)}">{_num(bench.baselines.loc[name, c])}</td>' for c in bench.columns)
        rows.append(f'<tr class="baseline"><td class="name">{esc(name)}</td>{cells}<td></td></tr>')
    for variant in bench.scores.index:
        cells = []
        for column in bench.columns:
            value = bench.scores.loc[variant, column]
            spread = bench.spread.loc[variant, column] if column in bench.spread.columns else float("nan")
            is_best = (
                not math.isnan(value) and value == best[column] and bench.scores[column].notna().sum() > 1
            )
            extra = f'<span class="ci">±{_num(spread)}</span>' if spread and spread > 0 else ""
            flags = bench.flags(variant, column)
            state = "degenerate" if "C" in flags else "best" if is_best else ""
            classes = " ".join(c for c in (_col_class(column), state) if c)
            cells.append(f'<td class="{classes}">{_num(value)}{flag_marks(flags)}{extra}</td>')
        seeds = bench.seeds.get(variant, 0)
        rows.append(f'<tr><td class="name">{esc(variant)}</td>{"".join(cells)}<td>{seeds}</td></tr>')
    items = "".join(f'<td class="{_col_class(c)}">{esc(bench.items.get(c, ""))}</td>' for c in bench.columns)
    rows.append(f'<tr class="items"><td class="name">items per run</td>{items}<td></td></tr>')
    return (f'<table class="scores">{_header(bench.columns, "variant", "<th>runs</th>")}'
            f'<tbody>{"".join(rows)}</tbody></table>')  # fmt: skip


def delta_cell(d: Delta | None, column: str) -> str:
    base = _col_class(column)
    if d is None:
        return f'<td class="{base}">–</td>'
    mark, why = "", ""
    if d.significant:
        base = f"{base} sig-pos" if d.delta > 0 else f"{base} sig-neg"
        mark = " ▲" if d.delta > 0 else " ▼"
    elif d.caveat:
        base = f"{base} caveat"
        mark = " †"
        why = f'<span class="why">not significant: {esc(d.caveat)}</span>'
    title = f"{d.n_items} items, {d.seeds_a} vs {d.seeds_b} runs"
    return (f'<td class="{base.strip()}" title="{esc(title)}">{_num(d.delta, True)}{mark}'
            f'<span class="ci">[{_num(d.lo, True)}, {_num(d.hi, True)}]</span>{why}</td>')  # fmt: skip


def delta_table(bench: BenchReport, reference: str) -> str:
    rows = []
    deltas = bench.deltas[reference]
    for variant, cells in deltas.items():
        seeds = next((f"{d.seeds_a} vs {d.seeds_b}" for d in cells.values() if d is not None), "")
        tds = "".join(delta_cell(cells.get(c), c) for c in bench.columns)
        rows.append(f'<tr><td class="name">{esc(variant)}</td>{tds}<td>{esc(seeds)}</td></tr>')
    counts = []
    for column in bench.columns:
        ns = sorted({cells[column].n_items for cells in deltas.values() if cells.get(column) is not None})
        text = "" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        counts.append(f'<td class="{_col_class(column)}">{esc(text)}</td>')
    rows.append(f'<tr class="items"><td class="name">paired items</td>{"".join(counts)}<td></td></tr>')
    return (f'<table class="deltas">{_header(bench.columns, f"variant − {reference}", "<th>runs</th>")}'
            f'<tbody>{"".join(rows)}</tbody></table>')  # fmt: skip


def answers_table(bench: BenchReport) -> str:
    """Per variant and language: the most frequent answer and its share, the normalised entropy of the
    answers and the share of outputs with no readable answer."""
    rows = []
    for variant in bench.scores.index:
        cells = []
        for lang in bench.langs:
            c = bench.answers.get((variant, lang))
            if c is None:
                cells.append("<td>–</td>")
                continue
            state = ' class="degenerate"' if c.collapsed else ""
            cells.append(f"<td{state}><code>{esc(c.top_answer or '–')}</code> {c.top_share:.0%}"
                         f'<span class="ci">entropy {c.entropy:.2f} · no answer {c.no_answer:.0%}</span></td>')  # fmt: skip
        rows.append(f'<tr><td class="name">{esc(variant)}</td>{"".join(cells)}</tr>')
    if bench.majority_labels:
        gold = "".join(f"<td><code>{esc(label)}</code> {share:.0%}</td>"
                       for label, share in map(bench.gold_majority, bench.langs))  # fmt: skip
        rows.append(f'<tr class="baseline"><td class="name">gold (majority label)</td>{gold}</tr>')
    head = "".join(f"<th>{esc(lang)}</th>" for lang in bench.langs)
    return (f'<table class="answers"><thead><tr><th class="name">most frequent answer</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')  # fmt: skip


def figure(path: str, title: str, caption: str = "") -> str:
    text = esc(title) + (f" — {esc(caption)}" if caption else "")
    return f'<figure><img src="{esc(path)}" alt="{esc(title)}"><figcaption>{text}</figcaption></figure>'


def runs_table(runs: list[RunRecord]) -> str:
    rows = []
    for run in runs:
        config = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
        shared = run.status.get("training_run", "")
        rows.append(
            f'<tr id="run-{esc(run.name)}"><td><code>{esc(run.name)}</code></td><td>{esc(run.variant)}</td>'
            f"<td>{run.seed}</td><td>{len(run.tasks)}</td><td>{esc(shared)}</td>"
            f"<td>{esc(run.code_summary())}</td><td>{esc(run.time_summary())}<br>"
            f'<span class="small">{esc(run.hardware_summary())}</span></td>'
            f"<td><details><summary>command</summary><pre>{esc(run.command)}</pre></details>"
            f"<details><summary>config.yaml</summary><pre>{esc(config)}</pre></details></td></tr>"
        )
    head = ("<thead><tr><th>run</th><th>variant</th><th>seed</th><th>tasks</th><th>trained model of</th>"
            "<th>code</th><th>time, hardware</th><th>command and config</th></tr></thead>")  # fmt: skip
    versions = "".join(
        f"<tr><td><code>{esc(i)}</code></td><td>{esc(describe(e))}</td><td>{esc(e.get('python'))}</td>"
        f"<td>{esc(library_line(e))}</td></tr>"
        for i, e in environments_of(runs).items()
    )
    return (f'<table class="runs">{head}<tbody>{"".join(rows)}</tbody></table>'
            '<h3 id="versions">Versions</h3><table class="runs"><thead><tr><th>environment</th><th>code</th>'
            f"<th>python</th><th>libraries</th></tr></thead><tbody>{versions}</tbody></table>")  # fmt: skip


def render_index(report: Report) -> str:
    """The report's main page."""
    parts = [f"<h1>{esc(report.title)}</h1>"]
    variants = {r.variant for r in report.runs}
    parts.append(
        f'<p class="meta">Generated {esc(report.generated)} from {len(report.runs)} complete runs '
        f"({len(variants)} variants). Scores x 100 (accuracy; ROUGE-L F1 for xlsum). Deltas: paired bootstrap "
        f"95 % intervals over items (and over seeds when a variant has several runs), {report.iters} "
        "replicates; a marked cell (▲/▼) has an interval that excludes zero and no collapsed side (per cell, not "
        "corrected for multiple comparisons); † marks a delta whose side is collapsed, never significant. Baselines: "
        "chance = 1 / options, majority = the share of the most frequent gold label among the evaluated items. "
        'Files: <a href="index.md">index.md</a>, <a href="scores.csv">scores.csv</a>, '
        '<a href="deltas.csv">deltas.csv</a>, <a href="results.csv">results.csv</a>.</p>'
    )
    if report.skipped:
        items = "".join(f"<li><code>{esc(s)}</code></li>" for s in report.skipped)
        parts.append(f'<div class="warning" id="skipped"><strong>Skipped {len(report.skipped)} incomplete '
                     f"run(s) or result(s)</strong> (not reported):<ul>{items}</ul></div>")  # fmt: skip
    for note in report.notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    toc = [f'<li><a href="#bench-{esc(b.bench)}">{esc(b.bench)}</a></li>' for b in report.benches]
    toc += ['<li><a href="#consistency">consistency with English</a></li>'] if report.consistency else []
    toc += alignment_toc(report.alignment)
    toc += answer_language.toc_entry(report.answer_language)
    toc += [f'<li><a href="#fig-{esc(_anchor(s))}">{esc(s)}</a></li>' for s in report.figures]
    toc += ['<li><a href="#items">per-item browser</a></li>', '<li><a href="#runs">runs</a></li>']
    parts.append(f"<nav><ul>{''.join(toc)}</ul></nav>")
    if not report.benches:
        parts.append("<p>No results in the given runs.</p>")
    for bench in report.benches:
        parts.append(f'<h2 id="bench-{esc(bench.bench)}">{esc(bench.bench)} <span class="small">'
                     f"({esc(bench.metric)} x 100)</span></h2>")  # fmt: skip
        parts.append(score_table(bench))
        if bench.answers:
            parts.append(legend())
        for reference, name in REFERENCES.items():
            if reference in bench.deltas and bench.deltas[reference]:
                parts.append(f"<h3>Δ against {esc(name)} ({esc(reference)}), points</h3>")
                parts.append(delta_table(bench, reference))
        if bench.plot:
            parts.append(figure(bench.plot, f"{bench.bench} per language"))
        if bench.answers:
            parts.append("<h3>Answers</h3>" + answers_table(bench))
        if bench.answers_plot:
            parts.append(figure(bench.answers_plot, f"{bench.bench}: predicted answers against gold",
                                "per language, the share of each answer (grey: no answer could be read)"))
    parts.append(consistency_section(report.consistency))
    parts.append(answer_language.html_section(report.answer_language))
    for section, figures in report.figures.items():
        parts.append(f'<h2 id="fig-{esc(_anchor(section))}">{esc(section)}</h2>')
        parts.extend(figure(f.path, f.title, f.caption) for f in figures)
    parts.append(alignment_html(report.alignment))
    parts.append('<h2 id="items">Per-item browser</h2>')
    if report.item_pages:
        links = "".join(
            f'<li><a href="{esc(p.path)}">{esc(p.task)}</a> <span class="small">{p.items} items, '
            f"{p.runs} runs</span></li>"
            for p in report.item_pages
        )
        parts.append(f'<ul class="item-pages">{links}</ul>')
    parts.append('<h2 id="runs">Runs</h2>')
    parts.append(runs_table(report.runs))
    return page(report.title, "\n".join(parts), INDEX_JS)


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


# -- per-item pages -----------------------------------------------------------------------------------


def _is_correct(score: float | None) -> str:
    return "" if score is None else "1" if score >= 0.5 else "0"


def item_page(task: str, metric: str, runs: list[tuple[RunRecord, list[dict[str, Any]]]]) -> tuple[str, int]:
    """One task's items: prompt and gold once per item, then each run's output, extracted answer and
    score; filterable by text, run, correctness and disagreement between runs."""
    by_id: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[tuple[RunRecord, dict[str, Any]]]] = {}
    for run, samples in runs:
        for row in samples:
            key = str(row.get("id"))
            by_id.setdefault(key, row)
            answers.setdefault(key, []).append((run, row))
    labels = [f"{run.variant} seed={run.seed}" for run, _ in runs]
    bodies = []
    for key, first in by_id.items():
        rows = []
        verdicts = set()
        for run, row in answers[key]:
            score = row.get(metric)
            score = float(score) if isinstance(score, int | float) else None
            ok = _is_correct(score)
            verdicts.add(ok)
            shown = "" if score is None else ("✓" if ok == "1" else "✗") + f" {score:.2f}"
            label = f"{run.variant} seed={run.seed}"
            rows.append(
                f'<tr class="run" data-run="{esc(label)}" data-ok="{ok}"><td>{esc(label)}</td>'
                f"<td><pre>{esc(row.get('output'))}</pre></td><td><pre>{esc(row.get('extracted'))}</pre></td>"
                f'<td class="{"ok" if ok == "1" else "wrong" if ok == "0" else ""}">{esc(shown)}</td></tr>'
            )
        head = (f'<tr class="head"><td colspan="4"><strong>item {esc(key)}</strong> · gold: '
                f"<code>{esc(first.get('gold'))}</code><details><summary>prompt</summary>"
                f"<pre>{esc(first.get('prompt'))}</pre></details></td></tr>")  # fmt: skip
        disagree = "1" if len(verdicts) > 1 else "0"
        bodies.append(f'<tbody class="item" data-disagree="{disagree}">{head}{"".join(rows)}</tbody>')
    options = "".join(
        f'<option value="{esc(label)}">{esc(label)}</option>' for label in dict.fromkeys(labels)
    )
    body = (
        f'<p><a href="../index.html">← report</a></p><h1>{esc(task)}</h1>'
        f'<p class="meta">{len(by_id)} items, {len(runs)} runs; score: {esc(metric)} (✓ when ≥ 0.5). '
        "Model outputs are shown as text.</p>"
        '<div class="filters"><input id="q" type="search" placeholder="search prompt, output, answer, gold"> '
        f'<select id="run"><option value="">all runs</option>{options}</select> '
        '<select id="ok"><option value="">correct and wrong</option><option value="1">correct</option>'
        '<option value="0">wrong</option></select> '
        '<label><input id="disagree" type="checkbox"> runs disagree</label> <span id="count"></span></div>'
        '<table class="items-table"><thead><tr><th>run</th><th>output</th><th>extracted</th><th>score</th>'
        f"</tr></thead>{''.join(bodies)}</table>"
    )
    return page(f"{task}: items", body, ITEMS_JS), len(by_id)


def write_item_pages(report: Report, out: Path) -> list[ItemPage]:
    """`items/<task>.html` for every task of the report's runs."""
    rank = {v: i for i, v in enumerate(variant_order([r.variant for r in report.runs]))}
    tasks: dict[str, list[RunRecord]] = {}
    for run in sorted(report.runs, key=lambda r: (rank[r.variant], r.seed, r.name)):
        for task in run.tasks:
            tasks.setdefault(task, []).append(run)
    pages = []
    for task in sorted(tasks):
        runs = tasks[task]
        metric = runs[0].result(task).get("primary_metric", "")
        text, n_items = item_page(task, metric, [(run, run.samples(task)) for run in runs])
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
        atomic_write_text(out / "items" / f"{name}.html", text)
        pages.append(ItemPage(task, f"items/{name}.html", n_items, len(runs)))
    return pages

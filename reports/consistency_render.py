"""The consistency section (`harness.reports.consistency`) as HTML (a section of `index.html`), Markdown (of
`index.md`) and CSV rows (`consistency.csv`). Every name from the run store is escaped (`html.escape`)."""

from __future__ import annotations

import html
import math
from typing import Any

from harness.reports.benches import REFERENCES
from harness.reports.consistency import COMPARE, STATS, ConsistencyBench, ConsistencyCell
from harness.reports.stats import Delta

TITLE = "Consistency with English on parallel items"
HOW_TO_READ = (
    "How to read it: each item of a parallel benchmark is the same question in every language, so each row "
    "sets a variant's answers in one language beside its own answers to the same items in English (matched "
    "by item id, within each run). Same answer: the share of items answered alike (an unreadable answer agrees "
    "with nothing). Accuracy | English right (wrong): accuracy in the language on the items the model got "
    "right (wrong) in English, with how many items that is per run. Lost in transfer: items right in English "
    "but wrong in the language, as a share of the paired items and a count per run; lower is better. A model "
    "that carries what it does in English over to a language has high agreement and accuracy | English right "
    "and little lost in transfer; agreement alone is not skill (the same mistake in both languages agrees, "
    "and a collapsed model, C, agrees trivially). Shares pool a variant's runs. Δ: points, with paired "
    "bootstrap 95 % intervals over items (and seeds); ▲/▼ where the interval excludes zero and no side is "
    "collapsed in the language or in English (†)."
)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _count(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def compare_note(cb: ConsistencyBench) -> str:
    return f"Answers compared: {COMPARE[cb.compare]}" + ("." if cb.compare else " (same answer is not shown).")


def left_out(benches: list[ConsistencyBench]) -> list[str]:
    return [f"{cb.bench}: {'; '.join(cb.notes)}" for cb in benches if cb.excluded]


def cell_texts(cb: ConsistencyBench, cell: ConsistencyCell) -> list[tuple[str, str]]:
    """(value, detail) per shown statistic."""
    details = {"agreement": "", "acc_en_right": f"of {_count(cell.en_right)}",
               "acc_en_wrong": f"of {_count(cell.en_wrong)}", "lost": f"{_count(cell.lost)} items"}  # fmt: skip
    return [(_num(cell.values[s]), details[s]) for s in cb.stats]


def delta_text(d: Delta | None) -> tuple[str, str, str]:
    """(value with its mark, interval, class) of a delta."""
    if d is None:
        return "–", "", ""
    if d.significant:
        return f"{_num(d.delta, True)} {'▲' if d.delta > 0 else '▼'}", f"[{_num(d.lo, True)}, {_num(d.hi, True)}]", (
            "sig-pos" if d.delta > 0 else "sig-neg")  # fmt: skip
    mark = " †" if d.caveat else ""
    return f"{_num(d.delta, True)}{mark}", f"[{_num(d.lo, True)}, {_num(d.hi, True)}]", "caveat" if d.caveat else ""


# -- HTML ----------------------------------------------------------------------------------------------


def html_section(benches: list[ConsistencyBench]) -> str:
    """`<h2 id="consistency">` with the reading sentence, the benchmarks left out, then per benchmark a
    table of values, a table of deltas per reference and the plot ("" when there is nothing to show)."""
    if not benches:
        return ""
    parts = [f'<h2 id="consistency">{esc(TITLE)}</h2>', f'<p class="note">{esc(HOW_TO_READ)} Also in '
             '<a href="consistency.csv">consistency.csv</a>.</p>']  # fmt: skip
    if notes := left_out(benches):
        parts.append('<p class="note">Left out: ' + "; ".join(esc(n) for n in notes) + ".</p>")
    for cb in benches:
        if cb.excluded:
            continue
        notes = [compare_note(cb), *cb.notes]
        parts.append(f'<h3 id="consistency-{esc(cb.bench)}">{esc(cb.bench)}: consistency with English</h3>'
                     f'<p class="note">{" ".join(esc(n) for n in notes)}</p>{html_values(cb)}')  # fmt: skip
        for reference, name in REFERENCES.items():
            if cb.deltas.get(reference):
                parts.append(f"<h3>{esc(cb.bench)}: Δ consistency against {esc(name)} ({esc(reference)}), "
                             f"points</h3>{html_deltas(cb, reference)}")  # fmt: skip
        if cb.plot:
            caption = "per language and variant, in % of the paired items; a collapsed cell (C) agrees trivially"
            parts.append(f'<figure><img src="{esc(cb.plot)}" alt="{esc(cb.bench)} consistency with English">'
                         f"<figcaption>{esc(cb.bench)}: consistency with English — {esc(caption)}"
                         "</figcaption></figure>")  # fmt: skip
    return "\n".join(parts)


def _head(first: list[str], cb: ConsistencyBench, prefix: str = "", counts: tuple[str, ...] = ()) -> str:
    cells = "".join(f'<th class="name">{esc(h)}</th>' for h in first)
    cells += "".join(f"<th>{esc(h)}</th>" for h in counts)
    cells += "".join(f"<th>{esc(prefix + STATS[s])}</th>" for s in cb.stats)
    return f"<thead><tr>{cells}</tr></thead>"


def html_values(cb: ConsistencyBench) -> str:
    rows = []
    for column in cb.columns:
        for variant in cb.variants:
            cell = cb.cells.get((variant, column))
            if cell is None:
                continue
            flag = (f' <span class="flag flag-C" title="{esc(cell.caveat)}">C</span>' if cell.caveat else "")
            state = ' class="degenerate"' if cell.caveat else ""
            tds = "".join(f"<td{state}>{esc(v)}" + (f'<span class="ci">{esc(d)}</span>' if d else "") + "</td>"
                          for v, d in cell_texts(cb, cell))  # fmt: skip
            rows.append(f'<tr><td class="name">{esc(column)}</td><td class="name">{esc(variant)}{flag}</td>'
                        f"<td>{cell.runs}</td><td>{esc(_count(cell.items))}</td>{tds}</tr>")  # fmt: skip
    head = _head(["language", "variant"], cb, counts=("runs", "items per run"))
    return f'<table class="consistency">{head}<tbody>{"".join(rows)}</tbody></table>'


def html_deltas(cb: ConsistencyBench, reference: str) -> str:
    rows = []
    for variant, columns in cb.deltas[reference].items():
        for column in cb.columns:
            cells = columns.get(column) or {}
            tds, seeds, caveat = [], "", ""
            for stat in cb.stats:
                d = cells.get(stat)
                value, interval, cls = delta_text(d)
                if d is not None:
                    seeds, caveat = f"{d.seeds_a} vs {d.seeds_b}", d.caveat
                title = "" if d is None else f' title="{d.n_items} paired items"'
                value, interval = value.replace("-", "−"), interval.replace("-", "−")
                tds.append(f'<td class="{cls}"{title}>{esc(value)}<span class="ci">{esc(interval)}</span></td>')
            why = f'<span class="why">not significant: {esc(caveat)}</span>' if caveat else ""
            rows.append(f'<tr><td class="name">{esc(column)}</td><td class="name caveat">{esc(variant)}{why}</td>'
                        f'{"".join(tds)}<td class="name">{esc(seeds)}</td></tr>')  # fmt: skip
    head = _head(["language", f"variant − {reference}"], cb, "Δ ").replace("</tr>", "<th>runs</th></tr>")
    return f'<table class="deltas consistency">{head}<tbody>{"".join(rows)}</tbody></table>'


# -- Markdown ------------------------------------------------------------------------------------------


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""]


def markdown_section(benches: list[ConsistencyBench]) -> list[str]:
    if not benches:
        return []
    lines = [f"## {TITLE}", "", HOW_TO_READ + " Also in `consistency.csv`.", ""]
    if notes := left_out(benches):
        lines += ["Left out: " + "; ".join(notes) + ".", ""]
    for cb in benches:
        if cb.excluded:
            continue
        lines += [f"### {cb.bench}: consistency with English", "", " ".join([compare_note(cb), *cb.notes]), ""]
        rows = []
        for column in cb.columns:
            for variant in cb.variants:
                if (cell := cb.cells.get((variant, column))) is not None:
                    name = f"{variant} C ({cell.caveat})" if cell.caveat else variant
                    rows.append([column, name, str(cell.runs), _count(cell.items),
                                 *(f"{v} ({d})" if d else v for v, d in cell_texts(cb, cell))])
        lines += _md_table(["language", "variant", "runs", "items per run", *(STATS[s] for s in cb.stats)], rows)
        for reference, name in REFERENCES.items():
            if not cb.deltas.get(reference):
                continue
            rows = []
            for variant, columns in cb.deltas[reference].items():
                for column in cb.columns:
                    cells = columns.get(column) or {}
                    texts = [delta_text(cells.get(s)) for s in cb.stats]
                    caveat = next((d.caveat for d in cells.values() if d is not None and d.caveat), "")
                    rows.append([column, f"{variant} († {caveat})" if caveat else variant, *(f"**{v} {i}**" if c.startswith("sig") else f"{v} {i}".strip()
                                                    for v, i, c in texts)])  # fmt: skip
            lines += [f"#### Δ against {name} ({reference})", ""]
            lines += _md_table(["language", f"variant − {reference}", *(f"Δ {STATS[s]}" for s in cb.stats)], rows)
        if cb.plot:
            lines += [f"![{cb.bench} consistency with English]({cb.plot})", ""]
    return lines


# -- CSV -----------------------------------------------------------------------------------------------


def csv_rows(benches: list[ConsistencyBench]) -> list[dict[str, Any]]:
    """`consistency.csv`: one row per benchmark x column x variant x statistic (reference empty: the value;
    else the delta against it, with its interval), and one row with the note of a benchmark left out."""
    rows: list[dict[str, Any]] = []
    for cb in benches:
        base = {"bench": cb.bench, "benchmark": cb.benchmark, "compare": cb.compare}
        if cb.excluded:
            rows.append({**base, "note": "; ".join(cb.notes)})
            continue
        for (variant, column), cell in cb.cells.items():
            counts = {"agreement": cell.items, "acc_en_right": cell.en_right, "acc_en_wrong": cell.en_wrong,
                      "lost": cell.lost}  # fmt: skip
            for stat in cb.stats:
                value = cell.values[stat]
                rows.append({**base, "column": column, "variant": variant, "reference": "", "statistic": stat,
                             "value": None if value is None else round(value, 4), "count_per_run": counts[stat],
                             "items_per_run": cell.items, "runs": cell.runs, "caveat": cell.caveat})  # fmt: skip
        for reference, variants in cb.deltas.items():
            for variant, columns in variants.items():
                for column, stats in columns.items():
                    for stat, d in stats.items():
                        if d is None:
                            continue
                        rows.append({**base, "column": column, "variant": variant, "reference": reference,
                                     "statistic": stat, "value": round(d.delta, 4), "ci_lo": round(d.lo, 4),
                                     "ci_hi": round(d.hi, 4), "significant": d.significant,
                                     "excludes_zero": d.excludes_zero, "caveat": d.caveat, "items": d.n_items,
                                     "runs": d.seeds_a, "runs_reference": d.seeds_b})  # fmt: skip
    return rows

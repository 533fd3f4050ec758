"""The report's "Alignment with English" section: per layer, how close each language's representations are
to their English parallels (`harness analyze`, `harness.evaluation.alignment`), for the runs holding one.

A figure per representation (the hidden state at the RST; the mean over the sentence's tokens; the methods'
own views, e.g. CC-Tuning's feed-forward outputs with and without W_T): one line per variant (the mean over
its seeds), one panel per language group (`LANGUAGE_GROUPS`), rows: top-1 English retrieval, the same after
centering, and the cosine gap (parallel minus non-parallel). A table of the mean retrieval over languages
per layer, the best layer per language, and `alignment.csv` (every run, representation, language, layer).
Rendered here for both pages (`render_html`, `render_markdown`): html.py and markdown.py add one call each.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.evaluation.alignment import POOLINGS, read_alignment
from harness.plumbing.io import atomic_write_text
from harness.reports import plots
from harness.reports.figures import Figure
from harness.reports.runs import RunRecord, variant_order

# Panels of the figures: by script, the Latin-script languages split by how much of them a small
# English-centric model has seen (high-resource European languages against the rest). Others: "other".
LANGUAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "Latin, European high-resource": ("de", "es", "fr", "pt"),
    "Latin, other": ("eu", "id", "sw", "tr", "vi", "yo"),
    "Greek, Cyrillic, Arabic scripts": ("ar", "el", "ru", "ur"),
    "Indic scripts": ("bn", "hi", "te"),
    "CJK, Thai": ("ja", "ko", "th", "zh"),
}

READING = (
    "How to read it: each line is one model; higher is closer to English at that layer (x: 0 = the "
    "embeddings, L = the last layer, after the final norm). Top: the share of a language's sentences whose "
    "nearest English sentence (cosine) is their own translation (chance = 1 / sentences); middle: the same "
    "once each language's mean vector is subtracted (what remains is the sentence's content); bottom: the "
    "mean cosine with the translation minus that with the other English sentences. A fine-tuned model above "
    "the zero-shot one moved those languages' representations towards English there."
)


@dataclass
class AlignmentSection:
    figures: list[Figure]
    table: tuple[
        list[str], list[list[str]]
    ]  # layer x (variant · representation): mean retrieval over languages
    best: tuple[list[str], list[list[str]]]  # language x (variant · representation): the best layer
    rows: list[dict[str, Any]]  # alignment.csv
    notes: list[str] = field(default_factory=list)
    reading: str = READING


def group_of(lang: str) -> str:
    return next((name for name, langs in LANGUAGE_GROUPS.items() if lang in langs), "other")


def csv_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run, representation, language and layer."""
    rows = []
    for run in runs:
        doc = read_alignment(run.dir)
        if doc is None:
            continue
        for lang, entry in sorted(doc["languages"].items()):
            for name, layers in doc.get("layers", {}).items():
                if name not in entry:
                    continue
                m = entry[name]
                for i, layer in enumerate(layers):
                    row = {"run": run.name, "variant": run.variant, "seed": run.seed, "representation": name,
                           "lang": lang, "group": group_of(lang), "layer": layer}  # fmt: skip
                    row |= {metric: values[i] for metric, values in m.items()}
                    row["gap"] = m["parallel"][i] - m["nonparallel"][i]
                    row["sentences"] = len(doc["ids"])
                    rows.append(row)
    return rows


def _label(variant: str, name: str) -> str:
    return f"{variant} · {name}"


# Rows of each figure: (column of alignment.csv, axis label).
FIGURE_ROWS = (("retrieval", "top-1 retrieval"), ("centered_retrieval", "top-1 retrieval, centered"),
               ("gap", "cosine gap"))  # fmt: skip


def _figure(per_lang: pd.DataFrame, order: list[str], members: list[str], langs: list[str], title: str,
            path: Path) -> Path:  # fmt: skip
    """Rows `FIGURE_ROWS`, one panel per language group, one line per variant (x representation)."""
    grid: dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]] = {
        label: {} for _, label in FIGURE_ROWS
    }
    for metric, row in FIGURE_ROWS:
        for group in [*LANGUAGE_GROUPS, "other"]:
            in_group = [lang for lang in langs if group_of(lang) == group]
            lines = {}
            for variant in order:
                for name in members:
                    if (variant, name) not in per_lang.index.droplevel(["lang", "layer"]):
                        continue
                    sub = per_lang.loc[(variant, name)]
                    sub = sub[sub.index.get_level_values("lang").isin(in_group)]
                    if not sub.empty and metric in sub:
                        curve = sub[metric].groupby(level="layer").mean()
                        lines[variant if len(members) == 1 else _label(variant, name)] = (
                            list(curve.index),
                            list(curve.values),
                        )
            if lines:
                grid[row][f"{group} ({' '.join(in_group)})"] = lines
    return plots.layer_curves(grid, title, path)


def _percent(value: float | None) -> str:
    return "–" if value is None or np.isnan(value) else f"{100 * value:.0f}"


def alignment_section(runs: list[RunRecord], out: Path) -> AlignmentSection | None:
    """The section, with its figures drawn into `out/plots`; None when no run holds an analysis."""
    rows = csv_rows(runs)
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if "centered_retrieval" not in frame:
        frame["centered_retrieval"] = np.nan
    order = variant_order(
        [r.variant for r in runs]
    )  # variants (the mean over their seeds), as the report orders them
    metrics = [m for m, _ in FIGURE_ROWS]
    per_lang = frame.groupby(["variant", "representation", "lang", "layer"])[metrics].mean()
    langs = sorted(set(frame.lang))
    names = list(dict.fromkeys(frame.representation))
    views = [n for n in names if n not in POOLINGS]
    drawn = [(n, [n], POOLINGS[n]) for n in POOLINGS if n in names]
    if views:
        drawn.append(("views", views, "the methods' own representations: " + ", ".join(views)))
    figures = []
    for slug, members, what in drawn:
        path = _figure(per_lang, order, members, langs, f"Alignment with English per layer: {what}",
                       out / "plots" / f"alignment_{slug}.png")  # fmt: skip
        figures.append(Figure(str(path.relative_to(out)), f"alignment with English: {slug}", what))
    overall = frame.groupby(["variant", "representation", "layer"])[
        ["retrieval", "centered_retrieval"]
    ].mean()
    present = set(overall.index.droplevel("layer"))
    columns = [(v, n) for v in order for n in names if (v, n) in present]
    body = []
    for layer in sorted(set(frame.layer)):
        cells = [str(layer)]
        for column in columns:
            key = (*column, layer)
            raw, centered = overall.loc[key] if key in overall.index else (None, None)
            cells.append(f"{_percent(raw)} / {_percent(centered)}")
        body.append(cells)
    table = (["layer", *(_label(v, n) for v, n in columns)], body)
    best_cols = [(v, n) for v, n in columns if n in POOLINGS]
    best_rows = []
    for lang in langs:
        cells = [lang]
        for variant, name in best_cols:
            if (variant, name, lang) not in per_lang.index.droplevel("layer"):
                cells.append("–")
                continue
            sub = per_lang.loc[(variant, name, lang)]
            raw, centered = sub["retrieval"], sub["centered_retrieval"]
            text = f"L{raw.idxmax()}: {_percent(raw.max())}"
            if centered.notna().any():
                text += f" · L{centered.idxmax()}: {_percent(centered.max())}"
            cells.append(text)
        best_rows.append(cells)
    best = (["language", *(_label(v, n) for v, n in best_cols)], best_rows)
    sizes = sorted(set(frame.sentences))
    notes = [f"{' / '.join(map(str, sizes))} parallel sentences per language (FLORES dev + test), "
             f"{len(langs)} languages; chance retrieval = 1 / sentences; centered: each side minus its mean "
             "over the sentences (removes what all sentences of a language share)."]  # fmt: skip
    if len(sizes) > 1:
        notes.append("the runs were analyzed with different numbers of sentences: retrieval is not "
                     "comparable across them (chance differs)")  # fmt: skip
    missing = [r.name for r in runs if read_alignment(r.dir) is None]
    if missing:
        notes.append(f"{len(missing)} run(s) without an analysis (`harness analyze RUNS` adds it): "
                     + ", ".join(missing))  # fmt: skip
    return AlignmentSection(figures, table, best, rows, notes)


def write_csv(section: AlignmentSection | None, out: Path) -> list[Path]:
    """`alignment.csv` when the report has the section."""
    if section is None:
        return []
    path = out / "alignment.csv"
    atomic_write_text(path, pd.DataFrame(section.rows).round(5).to_csv(index=False))
    return [path]


# -- rendering ---------------------------------------------------------------------------------------

TITLE = "Alignment with English"
TABLE = "Top-1 English retrieval per layer, mean over languages (%): as it is / centered"
BEST = "Best layer per language: top-1 retrieval (%) as it is · centered"
ANCHOR = "alignment"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(value: str) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""]


def render_markdown(section: AlignmentSection | None) -> list[str]:
    if section is None:
        return []
    lines = [f"## {TITLE}", "", section.reading, ""] + [
        line for n in section.notes for line in (f"_{n}_", "")
    ]
    for f in section.figures:
        lines += [f"![{f.title}]({f.path})", "", f"{f.title}: {f.caption}", ""]
    lines += [f"### {TABLE}", ""] + _md_table(*section.table) + [f"### {BEST}", ""] + _md_table(*section.best)
    return lines + ["Every run, representation, language and layer: alignment.csv.", ""]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(value: str) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="alignment"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(section: AlignmentSection | None) -> str:
    if section is None:
        return ""
    parts = [f'<h2 id="{ANCHOR}">{TITLE}</h2>', f"<p>{html.escape(section.reading)}</p>"]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
    for f in section.figures:
        caption = f"{html.escape(f.title)} — {html.escape(f.caption)}"
        parts.append(f'<figure><img src="{html.escape(f.path)}" alt="{html.escape(f.title)}">'
                     f"<figcaption>{caption}</figcaption></figure>")  # fmt: skip
    parts += [
        f"<h3>{TABLE}</h3>",
        _html_table(*section.table),
        f"<h3>{BEST}</h3>",
        _html_table(*section.best),
    ]
    parts.append('<p class="small">Every run, representation, language and layer: '
                 '<a href="alignment.csv">alignment.csv</a>.</p>')  # fmt: skip
    return "\n".join(parts)


def toc_entry(section: AlignmentSection | None) -> list[str]:
    return [f'<li><a href="#{ANCHOR}">{TITLE.lower()}</a></li>'] if section is not None else []

"""The report's "Answer language" section: per generation benchmark, for every variant and language, the
share of the outputs written in the prompt's language, in English, in another language, that are only a
label or a number, and whose language could not be told (`harness.evaluation.answer_language` classifies
each output; docs/answer-language.md). English-centric models, and methods that fuse English activations,
may answer in English: this makes it visible.

`build_answer_language` computes it from the stored samples (pooled over seeds) and draws one figure per
benchmark; `html_section`, `markdown_section` and `csv_rows` render it. Cells in a language the detector
does not recognise reliably (`UNRELIABLE`) show "unreliable" instead of their language shares.
"""

from __future__ import annotations

import html
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.evaluation import answer_language as lid
from harness.plumbing.errors import HarnessError
from harness.reports import plots
from harness.reports.benches import language_order
from harness.reports.runs import RunRecord, variant_order

log = logging.getLogger(__name__)

NAMES = {"prompt": "prompt's language", "en": "English", "other": "another language", lid.LABEL: "label/number",
         lid.UNKNOWN: "unknown"}  # fmt: skip
# The categories that depend on the detector (shown as "unreliable" in an unreliable language).
DETECTED = ("prompt", "en", "other", lid.UNKNOWN)
HOW_TO_READ = (
    "Each bar is one variant in one language: the share of its outputs written in the prompt's language, in "
    "English, in another language, that are only a label or a number (no language), and whose language could "
    "not be told (too short, or below the detector's confidence threshold); a long English part where the "
    "prompt is not English means the model answers in English. Pooled over seeds; in English cells English "
    "counts as the prompt's language."
)
COLORS = ("one bar per variant and language: blue the prompt's language, orange English, red another language, "
          "dark grey label/number, light grey unknown, hatched: the detector is unreliable in that language")


@dataclass
class LanguageCell:
    """One variant's outputs in one language, pooled over its runs."""

    counts: Counter[str]  # category (`lid.CATEGORIES`) -> outputs
    others: Counter[str]  # language code of the outputs in another language -> outputs
    runs: int
    reliable: bool
    example: str = ""  # the most frequent output written in English or another language

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def share(self, category: str) -> float | None:
        """The share of the outputs in `category`; None where the detector is unreliable."""
        if not self.reliable and category in DETECTED:
            return None
        return self.counts[category] / self.n if self.n else 0.0


@dataclass
class LanguageSection:
    bench: str  # e.g. "xlsum_gen"
    langs: list[str]
    variants: list[str]
    cells: dict[tuple[str, str], LanguageCell] = field(default_factory=dict)  # (variant, lang)
    plot: str | None = None


def build_answer_language(
    runs: list[RunRecord], out: Path, identifier: lid.LanguageIdentifier | None = None,
    unreliable: frozenset[str] = lid.UNRELIABLE,
) -> tuple[list[LanguageSection], list[str]]:  # fmt: skip
    """The section of every `gen` benchmark among the runs' results, and notes for the report (why the
    section is missing, which languages are unreliable)."""
    outputs: dict[tuple[str, str, str], list[list[str]]] = defaultdict(list)  # (benchmark, variant, lang)
    for run in runs:
        for task in run.tasks:
            result = run.result(task)
            if result.get("protocol") != "gen" or not result.get("lang"):
                continue
            samples = run.samples(task)
            if samples:
                outputs[(result["benchmark"], run.variant, result["lang"])].append(
                    [str(s.get("output") or "") for s in samples])  # fmt: skip
    if not outputs:
        return [], []
    try:
        identifier = identifier or lid.default_identifier()
    except HarnessError as e:
        log.warning("%s", e)
        return [], [f"no answer-language section: {e}"]
    sections = []
    for benchmark in sorted({b for b, _, _ in outputs}):
        keys = [k for k in outputs if k[0] == benchmark]
        section = LanguageSection(f"{benchmark}_gen", language_order(benchmark, list({k[2] for k in keys})),
                                  variant_order([k[1] for k in keys]))  # fmt: skip
        for _, variant, lang in keys:
            section.cells[(variant, lang)] = classify_cell(benchmark, lang, outputs[(benchmark, variant, lang)],
                                                           identifier, lang not in unreliable)  # fmt: skip
        section.plot = figure(section, out)
        sections.append(section)
    shown = sorted({lang for s in sections for lang in s.langs} & set(unreliable))
    notes = [f"answer language: the detector is unreliable in {', '.join(shown)} (docs/answer-language.md); "
             "those cells show no language shares"] if shown else []  # fmt: skip
    return sections, notes


def classify_cell(benchmark: str, lang: str, runs_outputs: list[list[str]], identifier: lid.LanguageIdentifier,
                  reliable: bool) -> LanguageCell:  # fmt: skip
    texts = [o for outputs in runs_outputs for o in outputs]
    codes = lid.classify_outputs(benchmark, texts, identifier)
    cats = [lid.category(code, lang) for code in codes]
    off = Counter(" ".join(t.split()) for t, c in zip(texts, cats, strict=True) if c in ("en", "other"))
    return LanguageCell(
        counts=Counter(cats), others=Counter(code for code, c in zip(codes, cats, strict=True) if c == "other"),
        runs=len(runs_outputs), reliable=reliable, example=off.most_common(1)[0][0] if off else "",
    )  # fmt: skip


def figure(section: LanguageSection, out: Path) -> str:
    panels = {lang: [(v, {c: cell.share(c) for c in lid.CATEGORIES})
                     for v in section.variants if (cell := section.cells.get((v, lang)))]
              for lang in section.langs}  # fmt: skip
    path = plots.answer_language_bars(
        [NAMES[c] for c in lid.CATEGORIES], {lang: [(v, [s.get(c) for c in lid.CATEGORIES]) for v, s in rows]
                                             for lang, rows in panels.items()},
        f"{section.bench}: the language of the answers", out / "plots" / f"answer_language_{section.bench}.png",
    )  # fmt: skip
    return str(path.relative_to(out))


# -- rendering ----------------------------------------------------------------------------------------


def _pct(cell: LanguageCell, category: str, lang: str) -> str:
    if category == "en" and lang == "en":
        return "–"
    value = cell.share(category)
    return "unreliable" if value is None else f"{100 * value:.0f} %"


def _others(cell: LanguageCell) -> str:
    return ", ".join(f"{code} {count}" for code, count in cell.others.most_common(3))


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def rows(section: LanguageSection) -> list[tuple[str, str, LanguageCell]]:
    """(lang, variant, cell) in the order of the tables: language by language, variants in report order."""
    return [(lang, v, c) for lang in section.langs for v in section.variants
            if (c := section.cells.get((v, lang))) is not None]  # fmt: skip


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def html_section(sections: list[LanguageSection]) -> str:
    if not sections:
        return ""
    head = "".join(f"<th>{_esc(NAMES[c])}</th>" for c in lid.CATEGORIES)
    parts = ['<h2 id="answer-language">Answer language</h2>', f'<p class="note">{_esc(HOW_TO_READ)}</p>']
    for section in sections:
        parts.append(f'<h3 id="answer-language-{_esc(section.bench)}">{_esc(section.bench)}</h3>')
        if section.plot:
            parts.append(f'<figure><img src="{_esc(section.plot)}" alt="{_esc(section.bench)} answer language" '
                         f'loading="lazy"><figcaption>{_esc(section.bench)}: {_esc(COLORS)}</figcaption></figure>')
        body = []
        for lang, variant, cell in rows(section):
            shares = "".join(f"<td>{_esc(_pct(cell, c, lang))}</td>" for c in lid.CATEGORIES)
            body.append(f'<tr><td class="name">{_esc(lang)}</td><td class="name">{_esc(variant)}</td>{shares}'
                        f"<td>{_esc(_others(cell))}</td><td>{cell.n}</td>"
                        f'<td class="name"><code>{_esc(_short(cell.example))}</code></td></tr>')  # fmt: skip
        parts.append('<table class="answer-language"><thead><tr><th class="name">language</th>'
                     f'<th class="name">variant</th>{head}<th>other languages (outputs)</th><th>outputs</th>'
                     f'<th class="name">most frequent answer not in the prompt\'s language</th></tr></thead>'
                     f"<tbody>{''.join(body)}</tbody></table>")  # fmt: skip
    return "\n".join(parts)


def toc_entry(sections: list[LanguageSection]) -> list[str]:
    return ['<li><a href="#answer-language">answer language</a></li>'] if sections else []


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def markdown_section(sections: list[LanguageSection]) -> list[str]:
    if not sections:
        return []
    lines = ["## Answer language", "", HOW_TO_READ, ""]
    header = ["language", "variant", *(NAMES[c] for c in lid.CATEGORIES), "other languages", "outputs",
              "most frequent answer not in the prompt's language"]  # fmt: skip
    for section in sections:
        lines += [f"### {section.bench}", ""]
        if section.plot:
            lines += [f"![{section.bench} answer language]({section.plot})", "", f"{section.bench}: {COLORS}.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for lang, variant, cell in rows(section):
            cells = [lang, variant, *(_pct(cell, c, lang) for c in lid.CATEGORIES), _others(cell), str(cell.n)]
            example = f"`{_md(_short(cell.example))}`" if cell.example else ""
            lines.append("| " + " | ".join([*map(_md, cells), example]) + " |")
        lines.append("")
    return lines


def csv_rows(sections: list[LanguageSection]) -> list[dict[str, Any]]:
    """`answer_language.csv`: one row per benchmark x variant x language; shares as fractions, empty where
    the detector is unreliable (`reliable` false)."""
    out = []
    for section in sections:
        for lang, variant, cell in rows(section):
            row: dict[str, Any] = {"bench": section.bench, "lang": lang, "variant": variant, "runs": cell.runs,
                                   "outputs": cell.n, "reliable": cell.reliable}  # fmt: skip
            for c in lid.CATEGORIES:
                value = cell.share(c)
                row[c.replace("/", "_")] = None if value is None else round(value, 4)
            row["other_langs"] = ";".join(f"{code}:{count}" for code, count in cell.others.most_common())
            row["example"] = cell.example
            out.append(row)
    return out

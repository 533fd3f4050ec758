"""The report's "Alignment with English" section on synthetic run stores holding `analysis/alignment.json`
files with known values: the figures, the tables, `alignment.csv`, both pages, and no section without them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.evaluation.alignment import FORMAT, alignment_path
from harness.plumbing.io import atomic_write_json
from harness.reports.alignment import LANGUAGE_GROUPS, READING, group_of
from harness.reports.write import write_report
from tests.reports.test_report import write_run

LAYERS = [0, 1, 2, 3]


def curve(values: list[float]) -> dict[str, list[float]]:
    """Raw retrieval `values`, centered retrieval twice as high (at most 1), cosine gap half of `values`."""
    return {"parallel": [0.5 + v / 2 for v in values], "nonparallel": [0.5] * len(values),
            "retrieval": values, "centered_parallel": values, "centered_nonparallel": [0.0] * len(values),
            "centered_retrieval": [min(1.0, 2 * v) for v in values]}  # fmt: skip


def write_alignment(
    run: Path, retrieval: dict[str, list[float]], views: bool = False, sentences: int = 10
) -> None:
    languages = {}
    for lang, values in retrieval.items():
        entry = {"rst": curve(values), "mean": curve([v / 2 for v in values]), "seconds": 1.0}
        if views:
            entry |= {"ffn": curve(values[1:]), "ffn+W_T": curve([1.0] * 3)}
        languages[lang] = entry
    layers = {"rst": LAYERS, "mean": LAYERS} | ({"ffn": LAYERS[1:], "ffn+W_T": LAYERS[1:]} if views else {})
    atomic_write_json(alignment_path(run), {"format": FORMAT, "key": {"sentences": sentences},
                                            "ids": list(range(sentences)), "layers": layers,
                                            "descriptions": {}, "languages": languages})  # fmt: skip


def test_every_language_is_in_one_group():
    from harness.data.base import LANGUAGES

    grouped = [lang for langs in LANGUAGE_GROUPS.values() for lang in langs]
    assert sorted(grouped) == sorted(set(LANGUAGES) - {"en"}) and group_of("xx") == "other"


def test_alignment_section_figures_tables_and_csv(tmp_path: Path):
    store, out = tmp_path / "runs", tmp_path / "report"
    none = write_run(store, "none")
    vanilla = [write_run(store, "vanilla", seed) for seed in (0, 1)]
    cc = write_run(store, "cc")
    write_run(store, "vanilla", 2, options=None, accuracy={"*": 0.4}, command="no analysis")  # a third seed
    write_alignment(none, {"sw": [0.0, 0.1, 0.2, 0.1], "zh": [0.0, 0.2, 0.2, 0.2]})
    write_alignment(vanilla[0], {"sw": [0.0, 0.4, 0.6, 0.2], "zh": [0.0, 0.4, 0.8, 0.4]})
    write_alignment(vanilla[1], {"sw": [0.0, 0.2, 0.4, 0.2], "zh": [0.0, 0.4, 0.6, 0.4]})
    write_alignment(cc, {"sw": [0.0, 0.3, 0.3, 0.9], "zh": [0.0, 0.3, 0.3, 0.9]}, views=True)
    report, written = write_report([str(store)], out, iters=50)
    section = report.alignment
    assert section is not None and out / "alignment.csv" in written
    assert [Path(f.path).name for f in section.figures] == ["alignment_rst.png", "alignment_mean.png",
                                                            "alignment_views.png"]  # fmt: skip
    assert all((out / f.path).stat().st_size > 10_000 for f in section.figures)
    header, rows = section.table
    assert header == ["layer", "none · rst", "none · mean", "vanilla · rst", "vanilla · mean", "cc · rst",
                      "cc · mean", "cc · ffn", "cc · ffn+W_T"]  # fmt: skip
    # vanilla at layer 2: seeds averaged (sw .6 and .4, zh .8 and .6) -> 60 %; centered (1, .8, 1, 1): 95 %
    assert rows[2][:4] == ["2", "20 / 40", "10 / 20", "60 / 95"] and rows[3][5] == "90 / 100"
    assert rows[0][7] == "– / –"  # the feed-forward views start at layer 1
    best_header, best_rows = section.best
    assert best_header[0] == "language"
    assert best_rows[0][:4] == ["sw", "L2: 20 · L2: 40", "L2: 10 · L2: 20", "L2: 50 · L2: 90"]
    csv = pd.read_csv(out / "alignment.csv")
    assert len(csv) == 4 * 2 * 2 * 4 + 2 * 2 * 3  # 4 runs x rst/mean x 2 languages x 4 layers, cc's views
    row = csv[
        (csv.run == vanilla[0].name) & (csv.lang == "zh") & (csv.representation == "rst") & (csv.layer == 2)
    ]
    assert row.retrieval.item() == 0.8 and row.gap.item() == 0.4 and row.group.item() == "CJK, Thai"
    assert row.centered_retrieval.item() == 1.0
    assert any("1 run(s) without an analysis" in n for n in section.notes)
    md = (out / "index.md").read_text(encoding="utf-8")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "## Alignment with English" in md and READING in md and "alignment_views.png" in md
    assert 'id="alignment"' in page and 'href="#alignment"' in page and "<td>60 / 95</td>" in page


def test_no_section_without_analyses(tmp_path: Path):
    store, out = tmp_path / "runs", tmp_path / "report"
    write_run(store, "vanilla")
    report, written = write_report([str(store)], out, iters=50)
    assert report.alignment is None and not (out / "alignment.csv").exists()
    assert "Alignment with English" not in (out / "index.md").read_text(encoding="utf-8")

"""The language of each generated answer: one output classified (label/number, a language, unknown), the
shares of a cell computed from a hand-made run store, the unreliable-language rule, and the section in
answer_language.csv, index.html (model output escaped) and index.md. Uses the real detector (lingua)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.core.config import RunConfig
from harness.evaluation import answer_language as lid
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl, atomic_write_yaml
from harness.reports.answer_language import build_answer_language, csv_rows, html_section, markdown_section
from harness.reports.runs import load_runs
from harness.reports.write import write_report
from harness.training.settings import PROFILES

SWAHILI = "Wanasayansi wamegundua kifaa kipya cha utambuzi ambacho kinaweza kupanga seli kwa aina."
ENGLISH = "The scientists announced a new diagnostic tool that can sort cells by type."
EVIL = "<script>document.body.dataset.pwned='1'</script> This answer is written in plain English words."


def write_run(root: Path, method: str, outputs: dict[str, list[str]], benchmark: str = "sib200",
              seed: int = 0) -> None:  # fmt: skip
    """A complete run in the store's format with one `gen` task per language and the given outputs."""
    cfg = RunConfig(method=method, model="tiny", seed=seed, train=PROFILES["cpu"].to_dict(), train_langs=["en"],
                    train_limit=8)  # fmt: skip
    run = root / cfg.run_id
    atomic_write_yaml(run / "config.yaml", {"run_id": cfg.run_id, "command": "harness run", **cfg.to_dict()})
    tasks = []
    for lang, texts in outputs.items():
        task = f"{benchmark}_gen_{lang}"
        tasks.append(task)
        rows = [{"id": i, "prompt": f"item {i}", "output": text, "extracted": "", "gold": "1", "acc": 0.0}
                for i, text in enumerate(texts)]  # fmt: skip
        atomic_write_jsonl(run / "samples" / f"{task}.jsonl", rows)
        atomic_write_json(run / "results" / f"{task}.json", {
            "task": task, "benchmark": benchmark, "protocol": "gen", "lang": lang, "metrics": {"acc": 0.0},
            "primary_metric": "acc", "n": len(rows), "key": {"limit": None}})  # fmt: skip
    atomic_write_json(run / "status.json", {"phase": "complete", "tasks": tasks, "eval": {"limit": None}})


# -- one output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "output", "expected"), [
    ("sib200", SWAHILI, "sw"),
    ("sib200", ENGLISH, "en"),
    ("sib200", "Science/Technology", lid.LABEL),  # an English label word is not English
    ("sib200", " sports.", lid.LABEL),
    ("sib200", "The topic of the sentence is travel.", "en"),
    ("xnli", "2", lid.LABEL),
    ("xnli", "(3)", lid.LABEL),
    ("mmmlu", "B)", lid.LABEL),
    ("mmmlu", "b", lid.LABEL),
    ("mgsm", "1,234.5", lid.LABEL),
    ("mgsm", "٣", lid.LABEL),  # an Arabic-Indic digit
    ("mgsm", "", lid.UNKNOWN),
    ("mgsm", "  ...  ", lid.UNKNOWN),
    ("xquad", "Paris", lid.UNKNOWN),  # one name: below the confidence threshold
    ("xnli", "(2) Kuegemea upande wowote", "sw"),  # the label with the option's text in Swahili
    ("xlsum", "答案是第二个选项，因为它更合理。", "zh"),
])  # fmt: skip
def test_one_output(task: str, output: str, expected: str) -> None:
    assert lid.classify_outputs(task, [output]) == [expected]


def test_labels_are_taken_out_before_detection() -> None:
    assert lid.strip_labels("sib200", "Science/Technology, 12") == (",", True)
    assert lid.strip_labels("mmmlu", "Bob") == ("Bob", False)  # not option B
    assert lid.strip_labels("xnli", "") == ("", False)


def test_category_of_an_output_in_a_cell() -> None:
    assert [lid.category(c, "sw") for c in ("sw", "en", "fr", lid.LABEL, lid.UNKNOWN)] == list(lid.CATEGORIES)
    assert lid.category("en", "en") == "prompt"  # English in an English cell is the prompt's language


# -- a cell -------------------------------------------------------------------------------------------


def test_exact_shares_pooled_over_seeds(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "vanilla", {"sw": [SWAHILI, ENGLISH, "travel", "3", ""]}, seed=1)
    write_run(tmp_path / "runs", "vanilla", {"sw": [SWAHILI, SWAHILI, "Health", "Habari za leo ni nzuri sana kwa wote.",
                                                    ""]}, seed=2)  # fmt: skip
    runs, _ = load_runs([str(tmp_path / "runs")])
    sections, notes = build_answer_language(runs, tmp_path / "out")
    assert notes == []
    (section,) = sections
    assert section.bench == "sib200_gen" and section.langs == ["sw"]
    cell = section.cells[("vanilla", "sw")]
    assert (cell.n, cell.runs) == (10, 2)
    assert {c: cell.share(c) for c in lid.CATEGORIES} == {"prompt": 0.4, "en": 0.1, "other": 0.0, lid.LABEL: 0.3,
                                                         lid.UNKNOWN: 0.2}  # fmt: skip
    assert cell.example == ENGLISH
    assert (tmp_path / "out" / section.plot).is_file()
    (row,) = csv_rows(sections)
    assert (row["prompt"], row["en"], row["label_number"], row["unknown"], row["reliable"]) == (0.4, 0.1, 0.3, 0.2, True)


def test_an_unreliable_language_shows_no_language_shares(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "none", {"sw": [SWAHILI, ENGLISH, "3", ""], "en": [ENGLISH, "2"]})
    runs, _ = load_runs([str(tmp_path / "runs")])
    sections, notes = build_answer_language(runs, tmp_path / "out", unreliable=frozenset({"sw", "yo"}))
    assert notes and "unreliable in sw" in notes[0] and "yo" not in notes[0]  # only the languages shown
    cells = sections[0].cells
    assert [cells[("none", "sw")].share(c) for c in lid.CATEGORIES] == [None, None, None, 0.25, None]
    assert cells[("none", "en")].share("prompt") == 0.5  # English stays measured
    rows = {r["lang"]: r for r in csv_rows(sections)}
    assert rows["sw"]["reliable"] is False and rows["sw"]["prompt"] is None and rows["sw"]["label_number"] == 0.25
    page, md = html_section(sections), "\n".join(markdown_section(sections))
    assert page.count("<td>unreliable</td>") == 4 and md.count("| unreliable") == 4


def test_no_detector_is_a_note_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "runs", "none", {"sw": [SWAHILI]})
    runs, _ = load_runs([str(tmp_path / "runs")])
    monkeypatch.setattr(lid, "lingua", None)
    lid.default_identifier.cache_clear()
    try:
        sections, notes = build_answer_language(runs, tmp_path / "out")
    finally:
        lid.default_identifier.cache_clear()
    assert sections == [] and "pip install lingua-language-detector" in notes[0]


# -- the report ---------------------------------------------------------------------------------------


def test_report_has_the_section_in_every_format(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "vanilla", {"sw": [SWAHILI, EVIL, "travel"], "en": [ENGLISH, "sports"]})
    write_run(tmp_path / "runs", "none", {"sw": ["Science/Technology"] * 3, "en": ["Science/Technology"] * 2})
    _, written = write_report([str(tmp_path / "runs")], tmp_path / "report", iters=50)
    out = tmp_path / "report"
    assert out / "answer_language.csv" in written
    with (out / "answer_language.csv").open(encoding="utf-8") as f:
        rows = {(r["variant"], r["lang"]): r for r in csv.DictReader(f)}
    assert rows[("vanilla", "sw")]["prompt"] == "0.3333" and rows[("none", "sw")]["label_number"] == "1.0"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<h2 id="answer-language">Answer language</h2>' in page and 'href="#answer-language"' in page
    assert "Each bar is one variant in one language" in page
    assert "<script>document" not in page and "&lt;script&gt;document" in page  # the output, escaped
    assert 'src="plots/answer_language_sib200_gen.png"' in page
    md = (out / "index.md").read_text(encoding="utf-8")
    assert "## Answer language" in md and "![sib200_gen answer language](plots/answer_language_sib200_gen.png)" in md
    assert "| sw | vanilla | 33 % | 33 % | 0 % | 33 % | 0 % |" in md

"""Baselines, answer diagnostics and the flags that keep degenerate cells from looking like evidence.

The fixture store reproduces what the README's main job once printed: two fine-tuned models that answer
one topic for every non-English item (vanilla `travel`, CC `science/technology`), so that CC "beats"
vanilla by the gold share of its label. Every output (console table, CSV, Markdown, HTML) must flag both
cells collapsed and refuse to mark that delta significant."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from harness.core.config import RunConfig
from harness.data.prompts import SIB_TOPICS
from harness.evaluation.diagnostics import answer_stats, baselines, cell_diagnostics, majority_label
from harness.evaluation.evaluate import TaskRef, split_results
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl, atomic_write_yaml
from harness.reports import console
from harness.reports.report import build_report
from harness.reports.write import write_report
from harness.training.settings import PROFILES

EVAL_KEY = {"limit": None, "apply_chat_template": True}
TRAVEL, SCITECH, SPORTS = "travel", "science/technology", "sports"


def gold_labels(n: int) -> list[str]:
    """A fixed gold sequence: science/technology 10 of 20, travel 3 of 20, the rest spread."""
    pattern = [SCITECH, TRAVEL, SCITECH, "politics", SCITECH, "health", SCITECH, SPORTS, SCITECH, "geography",
               SCITECH, TRAVEL, SCITECH, "entertainment", SCITECH, TRAVEL, SCITECH, "politics", SCITECH, SPORTS]  # fmt: skip
    return [pattern[i % len(pattern)] for i in range(n)]


def write_run(root: Path, method: str, outputs: dict[str, list[str]], golds: list[str], seed: int = 0) -> Path:
    """A complete run with `sib200_gen_<lang>` results whose per-item outputs are given."""
    cfg = RunConfig(method=method, model="tiny", seed=seed, train=PROFILES["cpu"].to_dict())
    run = root / cfg.run_id
    atomic_write_yaml(run / "config.yaml", {"run_id": cfg.run_id, "command": "t", **cfg.to_dict()})
    tasks = []
    for lang, outs in outputs.items():
        task = f"sib200_gen_{lang}"
        tasks.append(task)
        from harness.tasks.utils import extract_topic

        rows = [{"id": i, "prompt": "p", "output": o, "extracted": extract_topic(o), "gold": g,
                 "acc": float(extract_topic(o) == g)} for i, (o, g) in enumerate(zip(outs, golds, strict=True))]  # fmt: skip
        atomic_write_jsonl(run / "samples" / f"{task}.jsonl", rows)
        result = {"task": task, "benchmark": "sib200", "protocol": "gen", "lang": lang,
                  "metrics": {"acc": sum(r["acc"] for r in rows) / len(rows)}, "primary_metric": "acc",
                  "n": len(rows), "key": EVAL_KEY, "diagnostics": cell_diagnostics("sib200", rows)}  # fmt: skip
        atomic_write_json(run / "results" / f"{task}.json", result)
    atomic_write_json(run / "status.json", {"phase": "complete", "tasks": tasks, "eval": EVAL_KEY})
    return run


N = 40


def good_outputs(golds: list[str], wrong_every: int) -> list[str]:
    """Right except every `wrong_every`-th item (answered `sports`, or `travel` when the gold is sports)."""
    return [(TRAVEL if g == SPORTS else SPORTS) if i % wrong_every == 0 else f"Topic: {g}." for i, g in enumerate(golds)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collapse")
    golds = gold_labels(N)
    # English: both models read the input (vanilla 75 %, cc 80 % right); Hindi and Swahili: constant answers.
    write_run(root, "vanilla", {"en": good_outputs(golds, 4), "hi": [TRAVEL] * N, "sw": [TRAVEL] * N}, golds)
    write_run(root, "cc", {"en": good_outputs(golds, 5), "hi": [SCITECH] * N, "sw": [SCITECH] * N}, golds)
    # zero-shot: rambles; in Hindi no topic can be read from 30 of 40 outputs
    ramble = ["I think this sentence is about something." if i % 4 else f"{g}" for i, g in enumerate(golds)]
    write_run(root, "none", {"en": good_outputs(golds, 2), "hi": ramble, "sw": good_outputs(golds, 3)}, golds)
    return root


# -- the numbers ---------------------------------------------------------------------------------------


def test_baselines_come_from_exactly_the_evaluated_items() -> None:
    golds = gold_labels(N)
    base = baselines("sib200", golds)
    assert base is not None
    assert base.chance == pytest.approx(1 / 7)
    assert base.majority_label == SCITECH and base.majority == pytest.approx(20 / 40)
    # the first 4 items only (as with --limit 4): science/technology 2 of 4
    assert baselines("sib200", golds[:4]).majority == pytest.approx(0.5)
    # a tie goes to the label listed first (SIB_TOPICS order), not to the item order
    assert majority_label([TRAVEL, SCITECH], SIB_TOPICS) == (SCITECH, 1)
    assert majority_label(["3", "2", "2", "3"], ("1", "2", "3")) == ("2", 2)
    assert baselines("xnli", ["1", "1", "3"]).chance == pytest.approx(1 / 3)
    assert baselines("xquad", ["span"]) is None and baselines("sib200", []) is None


def test_answer_statistics_and_flags() -> None:
    constant = answer_stats("sib200", [TRAVEL] * 10)
    assert (constant.top_answer, constant.top_share, constant.entropy, constant.no_answer) == (TRAVEL, 1.0, 0.0, 0.0)
    assert constant.collapsed and not constant.unreadable
    even = answer_stats("sib200", list(SIB_TOPICS) * 2)
    assert even.entropy == pytest.approx(1.0) and even.top_share == pytest.approx(2 / 14) and not even.collapsed
    # 8 of 10 one answer: collapsed at exactly the threshold; 7 of 10 is not
    assert answer_stats("sib200", [TRAVEL] * 8 + [SPORTS] * 2).collapsed
    assert not answer_stats("sib200", [TRAVEL] * 7 + [SPORTS] * 3).collapsed
    two = answer_stats("xnli", ["1"] * 5 + ["2"] * 5)
    assert two.entropy == pytest.approx(math.log(2) / math.log(3))
    # extraction failures ("") are not an answer: they count in no_answer, not in the top share
    failing = answer_stats("sib200", ["", "", "", TRAVEL, SPORTS])
    assert failing.no_answer == pytest.approx(0.6) and failing.top_share == pytest.approx(0.2)
    assert failing.unreadable and not failing.collapsed and failing.answers == {SPORTS: 1, TRAVEL: 1}
    assert answer_stats("xlsum", ["a summary"]) is None


def test_an_output_with_no_readable_answer_is_an_extraction_failure() -> None:
    """Through the same path as an evaluation: lm-eval's samples -> per-item rows -> stored diagnostics."""
    ref = TaskRef("sib200_gen_sw", "sib200", "gen", "sw")
    outputs = ["Sports.", "I am not sure what this is.", "The topic is travel", "¯\\_(ツ)_/¯"]
    golds = [SPORTS, TRAVEL, TRAVEL, "health"]
    samples = [{"doc_id": i, "doc": {"id": i, "answer": g, "prompt": "p"}, "arguments": [["p", {"until": []}]],
                "filtered_resps": [o], "acc": 0.0} for i, (o, g) in enumerate(zip(outputs, golds, strict=True))]  # fmt: skip
    output = {"results": {ref.name: {"acc,none": 0.5}}, "samples": {ref.name: samples}}
    result, rows = split_results(output, ref)
    assert [r["extracted"] for r in rows] == [SPORTS, "", TRAVEL, ""]
    answers = result["diagnostics"]["answers"]
    assert answers["no_answer"] == pytest.approx(0.5) and answers["unreadable"]
    assert answers["answers"] == {SPORTS: 1, TRAVEL: 1}
    base = result["diagnostics"]["baselines"]
    assert base == {"chance": pytest.approx(1 / 7), "majority": 0.5, "majority_label": TRAVEL}


# -- what the reader sees --------------------------------------------------------------------------------


def test_two_constant_predictors_are_flagged_and_their_delta_is_not_significant(store: Path) -> None:
    report = build_report([str(store)], store.parent / "plots_unused", iters=1000)
    (bench,) = report.benches
    for variant in ("vanilla", "cc"):
        for lang in ("hi", "sw"):
            assert bench.answers[(variant, lang)].collapsed
            assert "C" in bench.flags(variant, lang) and "B" in bench.flags(variant, lang)
        assert "C" not in bench.flags(variant, "en")
    assert bench.scores.loc["cc", "hi"] == pytest.approx(50.0) and bench.scores.loc["vanilla", "hi"] == pytest.approx(15.0)
    d = bench.deltas["vanilla"]["cc"]["hi"]
    assert d.excludes_zero and d.delta == pytest.approx(35.0)  # the interval alone would call it a gain
    assert not d.significant and d.caveat == "cc collapsed in hi; vanilla collapsed in hi"
    avg = bench.deltas["vanilla"]["cc"]["avg non-en"]
    assert not avg.significant and avg.caveat == "cc collapsed in hi, sw; vanilla collapsed in hi, sw"
    # English: both read the input; 80 % vs majority 50 %: above baseline, no flag
    assert bench.flags("cc", "en") == "" and bench.deltas["majority"]["cc"]["en"].significant
    # the zero-shot model: no answer readable from 30 of 40 Hindi outputs
    assert bench.answers[("none", "hi")].no_answer == pytest.approx(0.75) and "N" in bench.flags("none", "hi")
    assert bench.baselines.loc["majority", "hi"] == pytest.approx(50.0)
    assert bench.baselines.loc["chance", "en"] == pytest.approx(100 / 7)


def test_console_table_shows_baselines_flags_and_caveats(store: Path) -> None:
    report = build_report([str(store)], store.parent / "plots_unused2", iters=1000)
    text = console.render(report.benches)
    lines = text.splitlines()
    majority = next(line for line in lines if line.startswith("majority "))
    assert majority.split()[1:4] == ["50.0", "50.0", "50.0"]
    vanilla = next(line for line in lines if line.startswith("vanilla ") and "%" not in line)
    assert "15.0 CB" in vanilla
    assert "† not significant whatever the interval: cc collapsed in hi; vanilla collapsed in hi" in text
    assert "travel 100%" in text and "science/technology 25% ∅75%" in text and "flags: C collapsed" in text
    assert "▲" not in next(line for line in lines if line.startswith("cc ") and "[" in line).split()[1]


def test_csv_markdown_and_html_carry_the_flags(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report([str(store)], out, iters=1000)
    scores = list(csv.DictReader((out / "scores.csv").open()))
    cell = next(r for r in scores if r["variant"] == "vanilla" and r["column"] == "hi")
    assert (cell["flags"], cell["collapsed"], cell["not_above_majority"], cell["top_share"]) == ("CB", "True", "True", "1.0")
    majority = next(r for r in scores if r["variant"] == "majority" and r["column"] == "sw")
    assert float(majority["score"]) == pytest.approx(50.0)
    deltas = list(csv.DictReader((out / "deltas.csv").open()))
    hi = next(r for r in deltas if r["reference"] == "vanilla" and r["variant"] == "cc" and r["column"] == "hi")
    assert (hi["significant"], hi["excludes_zero"], hi["caveat"]) == ("False", "True", "cc collapsed in hi; vanilla collapsed in hi")
    results = list(csv.DictReader((out / "results.csv").open()))
    row = next(r for r in results if r["method"] == "cc" and r["lang"] == "sw")
    assert (row["collapsed"], row["top_answer"], float(row["majority"])) == ("True", SCITECH, pytest.approx(50.0))

    per_run = (out / "results.md").read_text()
    vanilla = next(line for line in per_run.splitlines() if "| vanilla " in line)
    assert "| 75.0 " in vanilla and "| 15.0 C " in vanilla and "| _majority_ |" in per_run

    md = (out / "index.md").read_text()
    assert "| _majority_ |" in md and "| _chance_ |" in md and "15.0 CB" in md
    assert "not significant whatever the interval: cc, hi: cc collapsed in hi; vanilla collapsed in hi" in md
    assert "**C** collapsed: one answer for >= 80% of the items" in md

    html = (out / "index.html").read_text()
    assert '<tr class="baseline"><td class="name">majority</td>' in html
    assert 'class="flag flag-C"' in html and 'class="degenerate"' in html
    assert "not significant: cc collapsed in hi; vanilla collapsed in hi" in html
    assert (out / "plots" / "answers_sib200_gen.png").read_bytes()[:4] == b"\x89PNG"
    assert 'src="plots/answers_sib200_gen.png"' in html

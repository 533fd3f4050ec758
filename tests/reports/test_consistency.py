"""Consistency with English on parallel items (`harness.reports.consistency`) on hand-made run stores: every
number asserted on constructed answers, items matched by id, benchmarks and languages left out with their
note, the bootstrap on known cases, the collapsed-cell rule, and the HTML / Markdown / CSV output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core.config import RunConfig
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl, atomic_write_yaml
from harness.reports.benches import AVG_NON_EN
from harness.reports.consistency import ConsistencyBench, ratio_bootstrap, same_answer
from harness.reports.report import build_report
from harness.reports.stats import paired_bootstrap
from harness.reports.write import write_report
from harness.tasks.extraction import same_number
from harness.training.settings import PROFILES

EVIL = "<script>document.body.dataset.pwned='1'</script>"


def rows(answers: list[str], golds: list[str], benchmark: str = "xnli", ids: list[int] | None = None,
         correct: list[bool] | None = None) -> list[dict]:  # fmt: skip
    """Sample rows: item i answered `answers[i]` (the extracted answer), scored against `golds[i]` as the
    task's metric does (or `correct[i]` where given: spans)."""
    out = []
    for k, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
        if correct is not None:
            ok = correct[k]
        elif benchmark == "mgsm":
            ok = same_number(answer, gold)
        else:
            ok = answer == gold
        out.append({"id": k if ids is None else ids[k], "prompt": f"item {k}", "output": f"answer: {answer}",
                    "extracted": answer, "gold": gold, "acc": float(ok)})  # fmt: skip
    return out


def write_run(root: Path, method: str, tasks: dict[str, list[dict]], seed: int = 0,
              options: dict | None = None) -> Path:  # fmt: skip
    """A complete run folder in the store's format with the given samples (`<bench>_<protocol>_<lang>`)."""
    cfg = RunConfig(method=method, model="tiny", method_options=options or {}, seed=seed,
                    train=PROFILES["cpu"].to_dict(), train_langs=["en", "sw"], train_limit=30)  # fmt: skip
    run = root / cfg.run_id
    atomic_write_yaml(run / "config.yaml", {"run_id": cfg.run_id, "command": "harness run", **cfg.to_dict()})
    for task, samples in tasks.items():
        benchmark, protocol, lang = task.rsplit("_", 2)
        metric = "rougeL" if benchmark == "xlsum" else "acc"
        atomic_write_jsonl(run / "samples" / f"{task}.jsonl", samples)
        value = float(np.mean([s[metric] for s in samples]))
        atomic_write_json(run / "results" / f"{task}.json", {
            "task": task, "benchmark": benchmark, "protocol": protocol, "lang": lang, "metrics": {metric: value},
            "primary_metric": metric, "n": len(samples), "key": {"limit": None}})  # fmt: skip
    atomic_write_json(run / "status.json", {"phase": "complete", "updated": "2026-01-01T00:00:00",
                                            "tasks": list(tasks), "eval": {"limit": None}})  # fmt: skip
    return run


GOLD = ["1"] * 10
EN = ["1", "1", "1", "1", "1", "1", "2", "3", "2", ""]  # right on items 0-5, wrong on 6-9
SW = ["1", "1", "1", "1", "2", "3", "2", "1", "", ""]  # 0-3 kept, 4-5 lost, 6 same mistake, 7 fixed


def xnli(order: list[int] | None = None) -> dict[str, list[dict]]:
    """en, sw (in the order `order`, plus an item English lacks) and th (the English answers)."""
    sw = rows([*SW, "1"], [*GOLD, "1"])
    if order:
        sw = [sw[i] for i in order] + [sw[10]]
    return {"xnli_gen_en": rows(EN, GOLD), "xnli_gen_sw": sw, "xnli_gen_th": rows(EN, GOLD)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    mgsm_gold = ["12", "3", "7", "40"]
    xquad_right = [True, True, False, False]
    for method in ("vanilla", "cc"):  # cc answers exactly as vanilla: every delta is 0
        write_run(root, method, {
            **xnli(order=list(range(9, -1, -1))),  # sw stored in reverse order: matched by id
            "mgsm_gen_en": rows(["12", "3.0", "8", "40"], mgsm_gold, "mgsm"),
            "mgsm_gen_sw": rows(["12.00", "3", "8", ""], mgsm_gold, "mgsm"),
            "xquad_gen_en": rows(["a", "b", "", ""], ["a", "b", "c", "d"], "xquad", correct=xquad_right),
            "xquad_gen_sw": rows(["", "β", "γ", ""], ["α", "β", "γ", "δ"], "xquad",
                                 correct=[False, True, True, False]),
            "xlsum_gen_en": [{"id": 0, "extracted": "s", "gold": "s", "rougeL": 1.0}],
            "xlsum_gen_sw": [{"id": 0, "extracted": "s", "gold": "t", "rougeL": 0.0}],
            "xstorycloze_gen_sw": rows(["1", "2"], ["1", "2"]),  # no English task in the run
        }, options={"tag": EVIL} if method == "cc" else None)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def found(store: Path, tmp_path_factory) -> dict[str, ConsistencyBench]:
    report = build_report([str(store)], tmp_path_factory.mktemp("out"), iters=300)
    return {cb.bench: cb for cb in report.consistency}


def test_values_on_constructed_items(found) -> None:
    cb = found["xnli_gen"]
    assert cb.compare == "label" and cb.columns == ["sw", "th", AVG_NON_EN] and not cb.excluded
    sw = cb.cells[("vanilla", "sw")]
    assert sw.values["agreement"] == pytest.approx(50.0)  # items 0-3 and 6; "" agrees with nothing
    assert sw.values["acc_en_right"] == pytest.approx(400 / 6)  # 4 of the 6 right in English
    assert sw.values["acc_en_wrong"] == pytest.approx(25.0)  # 1 of the 4 wrong in English
    assert sw.values["lost"] == pytest.approx(20.0)
    assert (sw.items, sw.en_right, sw.en_wrong, sw.lost, sw.runs) == (10, 6, 4, 2, 1)  # the item English lacks: out
    th = cb.cells[("vanilla", "th")]
    assert [th.values[s] for s in ("agreement", "acc_en_right", "acc_en_wrong", "lost")] == [90.0, 100.0, 0.0, 0.0]
    avg = cb.cells[("vanilla", AVG_NON_EN)]
    assert avg.values["agreement"] == pytest.approx(70.0) and avg.values["lost"] == pytest.approx(10.0)
    assert (avg.items, avg.lost) == (20, 2)


def test_numbers_by_value_and_spans_not_compared(found) -> None:
    mgsm = found["mgsm_gen"].cells[("vanilla", "sw")]
    assert found["mgsm_gen"].compare == "number"
    assert mgsm.values["agreement"] == pytest.approx(75.0)  # 12 = 12.00, 3.0 = 3, 8 = 8; "" agrees with nothing
    assert mgsm.values["lost"] == pytest.approx(25.0) and mgsm.lost == 1  # 40 right in English, no answer in sw
    assert same_answer("number", "1234", "1234.0") and not same_answer("number", "", "")
    xquad = found["xquad_gen"]
    assert xquad.compare == "" and "agreement" not in xquad.stats
    cell = xquad.cells[("vanilla", "sw")]
    assert cell.values["agreement"] is None
    assert (cell.values["acc_en_right"], cell.values["acc_en_wrong"], cell.values["lost"]) == (50.0, 50.0, 25.0)
    assert "agreement" not in xquad.deltas["vanilla"][next(iter(xquad.deltas["vanilla"]))]["sw"]


def test_left_out_with_a_note(found) -> None:
    xlsum = found["xlsum_gen"]
    assert xlsum.excluded and not xlsum.cells and "not parallel" in xlsum.notes[0]
    story = found["xstorycloze_gen"]
    assert story.excluded and not story.cells
    assert any("no English result in the same run" in n and "(sw)" in n for n in story.notes)


def test_identical_variants_delta_zero(found) -> None:
    """cc answers exactly as vanilla: every delta is 0 with the interval [0, 0], not significant."""
    cb = found["xnli_gen"]
    (variant, columns), = cb.deltas["vanilla"].items()
    assert variant.startswith("cc (tag=")
    for column in cb.columns:
        for stat, d in columns[column].items():
            assert (d.delta, d.lo, d.hi) == (0.0, 0.0, 0.0) and not d.significant, (column, stat)
    assert columns["sw"]["agreement"].n_items == 10 and columns[AVG_NON_EN]["lost"].n_items == 20


def test_ratio_bootstrap_matches_paired_bootstrap_and_known_cases() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 40)) * 100, rng.random((1, 40)) * 100
    ones_a, ones_b = np.ones_like(a), np.ones_like(b)
    ratio, linear = ratio_bootstrap([(a, ones_a, b, ones_b)], iters=500, seed=3), paired_bootstrap([(a, b)], iters=500, seed=3)
    assert (ratio.delta, ratio.lo, ratio.hi) == pytest.approx((linear.delta, linear.lo, linear.hi), rel=1e-12)
    assert (ratio.n_items, ratio.seeds_a, ratio.seeds_b) == (40, 2, 1)  # the same draws of seeds and items
    # accuracy given English right: 3 of 4 against 1 of 2, on the same 6 items
    num_a, den_a = np.array([100, 100, 100, 0, 0, 0.0]), np.array([1, 1, 1, 1, 0, 0.0])
    num_b, den_b = np.array([100, 0, 0, 0, 0, 0.0]), np.array([1, 1, 0, 0, 0, 0.0])
    d = ratio_bootstrap([(num_a, den_a, num_b, den_b)], iters=500)
    assert d.delta == pytest.approx(25.0) and d.lo <= d.delta <= d.hi and d.n_items == 6
    assert ratio_bootstrap([(num_a, den_a, num_b, np.zeros(6))]) is None  # nothing right in English: undefined


def test_collapsed_side_is_never_significant(tmp_path: Path) -> None:
    """The zero-shot model answers "1" everywhere (collapsed in sw and en): it agrees with English on every
    item, far above vanilla, with an interval that excludes zero, and is still not significant."""
    gold = ["1", "2"] * 10
    wrong = {"1": "2", "2": "1"}
    write_run(tmp_path, "vanilla", {"xstorycloze_gen_en": rows(gold, gold),
                                    "xstorycloze_gen_sw": rows(gold[:15] + [wrong[g] for g in gold[15:]], gold)})
    write_run(tmp_path, "none", {"xstorycloze_gen_en": rows(["1"] * 20, gold),
                                 "xstorycloze_gen_sw": rows(["1"] * 20, gold)})  # fmt: skip
    cb = build_report([str(tmp_path)], tmp_path / "out", iters=500).consistency[0]
    assert cb.cells[("none", "sw")].caveat == "collapsed in sw, en" and not cb.cells[("vanilla", "sw")].caveat
    d = cb.deltas["vanilla"]["none"]["sw"]["agreement"]
    assert d.delta == pytest.approx(25.0) and d.excludes_zero and not d.significant
    assert d.caveat == "none collapsed in sw, en"
    assert cb.deltas["none"]["vanilla"]["sw"]["lost"].caveat == "none collapsed in sw, en"


def test_items_whose_gold_differs_are_left_out(tmp_path: Path) -> None:
    gold_en, gold_sw = ["A", "B", "C"], ["A", "D", "C"]  # item 1 is not the same question
    write_run(tmp_path, "vanilla", {"mmmlu_mc_en": rows(["A", "B", "C"], gold_en, "mmmlu"),
                                    "mmmlu_mc_sw": rows(["A", "D", "B"], gold_sw, "mmmlu")})  # fmt: skip
    cb = build_report([str(tmp_path)], tmp_path / "out", iters=100).consistency[0]
    cell = cb.cells[("vanilla", "sw")]
    assert cell.items == 2 and cell.values["agreement"] == 50.0 and cell.values["lost"] == 50.0
    assert any("sw: 1 item(s) whose gold differs" in n for n in cb.notes)


def test_seeds_pool_and_counts_per_run(tmp_path: Path) -> None:
    gold = ["1", "1", "1", "1"]
    write_run(tmp_path, "vanilla", {"xnli_mc_en": rows(["1"] * 4, gold), "xnli_mc_sw": rows(["1", "2", "2", "2"], gold)})
    write_run(tmp_path, "vanilla", {"xnli_mc_en": rows(["1", "1", "2", "2"], gold),
                                    "xnli_mc_sw": rows(["1", "1", "2", "3"], gold)}, seed=1)  # fmt: skip
    cell = build_report([str(tmp_path)], tmp_path / "out", iters=100).consistency[0].cells[("vanilla", "sw")]
    # pooled: 8 pairs, 6 right in English, 3 of them right in sw; agreement 1 + 3 of 8; lost 3 + 0 of 8
    assert cell.runs == 2 and cell.items == 4 and cell.en_right == 3 and cell.lost == 1.5
    assert cell.values["acc_en_right"] == 50.0 and cell.values["agreement"] == 50.0
    assert cell.values["acc_en_wrong"] == 0.0 and cell.values["lost"] == 37.5


def test_report_files_show_the_section(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report([str(store)], out, iters=200)
    page = (out / "index.html").read_text()
    assert 'id="consistency"' in page and 'id="consistency-xnli_gen"' in page and "How to read it" in page
    assert "xlsum_gen: not parallel" in page and "consistency_xnli_gen.png" in page
    assert (out / "plots" / "consistency_xnli_gen.png").is_file()
    assert EVIL not in page and "cc (tag=&lt;script&gt;" in page  # names from the run store are escaped
    md = (out / "index.md").read_text()
    assert "## Consistency with English on parallel items" in md and "### xnli_gen: consistency with English" in md
    assert "| sw | vanilla | 1 | 10 | 50.0 | 66.7 (of 6) | 25.0 (of 4) | 20.0 (2 items) |" in md
    csv = pd.read_csv(out / "consistency.csv")
    row = csv[(csv.bench == "xnli_gen") & (csv.column == "sw") & (csv.variant == "vanilla")
              & csv.reference.isna() & (csv.statistic == "lost")]  # fmt: skip
    assert row.value.tolist() == [20.0] and row.count_per_run.tolist() == [2.0]
    assert csv[csv.bench == "xlsum_gen"].note.str.contains("not parallel").all()
    deltas = csv[csv.reference == "vanilla"]
    assert len(deltas) and (deltas.value == 0).all() and not deltas.significant.any()

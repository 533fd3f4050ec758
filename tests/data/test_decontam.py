"""Test-set decontamination of training data (the real shared benchmarks, no network)."""

from __future__ import annotations

import json

from harness.data.base import Example
from harness.data.decontam import TestSetIndex, TextGroup, contamination_report, text_overlaps
from harness.data.recipes import RecipeOptions, load_recipe, mini_parallel_removed
from tests.data.recipe_helpers import benchmark_row

# --- decontamination -------------------------------------------------------------------------------


def test_decontam_detects_a_planted_test_item():
    context = benchmark_row("xquad", "de", 0)["prompt"].split("\n")[2]  # "Kontext: <paragraph>"
    passage = " ".join(context.split()[5:25])
    clean = Example(
        "t/1",
        "de",
        "Fasse den folgenden Text zusammen: Der Hund schläft im Garten.",
        "Ein Hund.",
        "Summarise.",
    )
    planted = Example(
        "t/2", "de", f"Fasse den folgenden Text zusammen: {passage} Danke.", "Ok.", "Summarise."
    )
    assert contamination_report([clean, planted]) == {"de": 1}
    # in the English instruction only
    english = benchmark_row("mmmlu", "sw", 3)["prompt_en"].split("\n")[2]
    sneaky = Example("t/3", "sw", "Jibu swali hili.", "Sawa.", f"Answer this question: {english.upper()}!!")
    assert contamination_report([sneaky]) == {"sw": 1}


def test_decontam_by_script_and_length():
    zh = benchmark_row("mgsm", "zh", 3)["prompt"]
    assert text_overlaps(f"Please translate into English: {zh}", "zh")  # a Chinese item in English text
    th = benchmark_row("xquad", "th", 3)["prompt"].split("\n")[2][20:120]
    assert text_overlaps(f"แปลเป็นภาษาอังกฤษ: {th}", "th")
    assert not text_overlaps("ผมชอบกินข้าวผัดกับเพื่อนที่ร้านใกล้บ้านทุกวันเสาร์", "th")
    # too short for an 8-gram: equal to a whole test sentence ("...in 2011.I was recovering from a stroke.When...")
    assert text_overlaps("I was recovering from a stroke.", "en")
    assert not text_overlaps("I was recovering from a cold.", "en")
    # prompt templates are not test content
    assert not text_overlaps("If you have to choose one of these options, your answer would be:", "en")
    assert not text_overlaps("Please answer these questions only based on the given context.", "en")


def test_index_from_own_groups_drops_boilerplate():
    template = "Read the story below and then choose the best ending for it please."
    stories = [
        f"{template}\nA {w} walked to the market number {i} on a sunny morning. It sold {i} red apples."
        for i, w in enumerate(["cat", "dog"] * 15)
    ]
    index = TestSetIndex("en", [TextGroup("stories", tuple(stories))])
    assert index.boilerplate > 0
    assert not index.overlaps(f"Hello. {template}")  # in all 30 items: template, not content
    assert index.overlaps("Yesterday a dog walked to the market number 7 on a sunny morning.")
    assert index.overlaps("It sold 7 red apples!")  # too short for an 8-gram: a whole test sentence
    assert not index.overlaps("It sold 7 green apples.")


def test_mini_parallel_drops_a_contaminated_candidate(tmp_path, monkeypatch):
    """A fake data folder whose SIB train split repeats a benchmark sentence: the recipe drops it."""
    item = "The old lighthouse keeper counted eleven ships passing the northern cape that winter."

    def write(rel: str, rows: list[dict]) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    write(
        "benchmarks/xnli/en.jsonl",
        [{"id": 0, "prompt": f"Premise: {item}\nHypothesis: x", "prompt_en": "", "answer": "1"}],
    )
    write(
        "benchmarks/xnli/sw.jsonl",
        [{"id": 0, "prompt": "Nguzo: mlinzi.", "prompt_en": f"Premise: {item}", "answer": "1"}],
    )
    sib = [
        {
            "id": 1,
            "split": "train",
            "topic": "travel",
            "text": "Safari ya treni ilichukua siku tatu.",
            "text_en": "The train trip took three days.",
        },
        {
            "id": 2,
            "split": "train",
            "topic": "geography",
            "text": "Mlinzi alihesabu meli kumi na moja.",
            "text_en": item,
        },
        {"id": 3, "split": "test", "topic": "sports", "text": "Timu ilishinda.", "text_en": "The team won."},
    ]
    write("parallel/flores_sib/sw.jsonl", sib)
    write(
        "parallel/ntrex/sw.jsonl", [{"id": 0, "text": "Habari za asubuhi.", "text_en": "Good morning news."}]
    )
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    examples = load_recipe("mini-parallel", RecipeOptions(langs=("sw",)))
    assert sorted(ex.id for ex in examples) == ["mini-parallel/sw/ntrex/0", "mini-parallel/sw/sib/1"]
    assert mini_parallel_removed(["sw"]) == {"sw": {"sib": 1, "ntrex": 0}}

"""The recipe registry and options, and the mini-parallel recipe (the real shared data, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.data.base import LANGUAGES, Example, data_dir, read_jsonl
from harness.data.decontam import contamination_report
from harness.data.prompts import SIB_PROMPT, SIB_TOPICS, TRANSLATE_TO_EN_PROMPT
from harness.data.recipes import RECIPES, RecipeOptions, describe_recipes, load_recipe, mini_parallel_removed
from harness.plumbing.errors import HarnessError
from tests.data.recipe_helpers import VALID_LANGS

SIB_HEAD, SIB_TAIL = SIB_PROMPT.split("{text}")
NTREX_HEAD = TRANSLATE_TO_EN_PROMPT.split("{text}")[0]


def source_sentence(example: Example) -> str:
    """The sentence a mini-parallel instruction wraps."""
    if example.id.split("/")[2] == "sib":
        return example.instruction[len(SIB_HEAD) : -len(SIB_TAIL)]
    return example.instruction[len(NTREX_HEAD) :]



@pytest.fixture(scope="module")
def everything() -> list[Example]:
    """mini-parallel, all 22 languages, all examples (built once: indexes every benchmark)."""
    return load_recipe("mini-parallel", RecipeOptions())


# --- registry and options --------------------------------------------------------------------------


def test_registry_and_descriptions():
    assert RECIPES.names() == ["aya", "jsonl", "llamafactory", "mini-parallel"]
    described = describe_recipes()
    assert set(described) == {"aya", "jsonl", "llamafactory", "mini-parallel"}
    assert all(text and "\n" not in text for text in described.values())
    with pytest.raises(HarnessError) as e:
        load_recipe("mini-paralel", RecipeOptions())
    assert (
        str(e.value)
        == "unknown recipe 'mini-paralel' (did you mean 'mini-parallel'?); valid: aya, jsonl, llamafactory, mini-parallel"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            RecipeOptions(per_lang=0),
            "--train-limit (per_lang) must be a positive integer, or unset for all examples; got 0",
        ),
        (
            RecipeOptions(langs=()),
            "--train-langs (langs) must list at least one language, or be unset for all; got ()",
        ),
        (RecipeOptions(langs=("sw", "zz")), f"unknown language 'zz' in --train-langs; valid: {VALID_LANGS}"),
        (
            RecipeOptions(path="x.jsonl"),
            "recipe 'mini-parallel' takes no --recipe-path (got 'x.jsonl'); it reads <data>/parallel, "
            "set HARNESS_DATA to use another data folder",
        ),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(HarnessError) as e:
        load_recipe("mini-parallel", options)
    assert str(e.value) == message


# --- mini-parallel ---------------------------------------------------------------------------------


def test_mini_parallel_counts_per_language():
    examples = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "en")))
    counts = Counter((ex.lang, ex.id.split("/")[2]) for ex in examples)
    removed = mini_parallel_removed(["sw", "en"])
    # SIB train split: 701 per language; NTREX: 1997; English has no NTREX part (a copy task)
    assert counts[("sw", "sib")] + removed["sw"]["sib"] == 701
    assert counts[("sw", "ntrex")] + removed["sw"]["ntrex"] == 1997
    assert counts[("en", "sib")] + removed["en"]["sib"] == 701
    assert counts[("en", "ntrex")] == removed["en"]["ntrex"] == 0
    # decontamination removes a handful (near-duplicates of SIB dev/test sentences, XL-Sum quotes)
    assert 0 < removed["sw"]["sib"] + removed["sw"]["ntrex"] <= 10
    assert len({ex.id for ex in examples}) == len(examples)


def test_per_lang_and_the_two_thirds_mix():
    examples = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "zh", "en"), per_lang=30))
    counts = Counter((ex.lang, ex.id.split("/")[2]) for ex in examples)
    assert counts == {
        ("sw", "sib"): 20,
        ("sw", "ntrex"): 10,
        ("zh", "sib"): 20,
        ("zh", "ntrex"): 10,
        ("en", "sib"): 30,
    }
    # more than a language has: all of it (SIB short, NTREX fills; English: all its SIB)
    big = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "en"), per_lang=1200))
    counts = Counter((ex.lang, ex.id.split("/")[2]) for ex in big)
    sib_sw = 701 - mini_parallel_removed(["sw"])["sw"]["sib"]
    assert counts[("sw", "sib")] == sib_sw and counts[("sw", "ntrex")] == 1200 - sib_sw
    assert counts[("en", "sib")] == 701 - mini_parallel_removed(["en"])["en"]["sib"]


def test_deterministic_and_seeded():
    options = RecipeOptions(langs=("sw", "ja", "en"), per_lang=50, seed=3)
    first = load_recipe("mini-parallel", options)
    assert load_recipe("mini-parallel", options) == first
    other = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "ja", "en"), per_lang=50, seed=4))
    assert [ex.id for ex in other] != [ex.id for ex in first]
    # all examples: another seed is the same set in another order
    everything_a = load_recipe("mini-parallel", RecipeOptions(langs=("ja",), seed=0))
    everything_b = load_recipe("mini-parallel", RecipeOptions(langs=("ja",), seed=1))
    assert [ex.id for ex in everything_a] != [ex.id for ex in everything_b]
    assert sorted(ex.id for ex in everything_a) == sorted(ex.id for ex in everything_b)


def test_same_list_in_another_process():
    """The order depends on the options only: not on the process (string hashing is randomised)."""
    code = (
        "from harness.data.recipes import load_recipe, RecipeOptions\n"
        "print(','.join(e.id for e in load_recipe('mini-parallel', RecipeOptions(langs=('yo',), per_lang=20, seed=7))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    here = load_recipe("mini-parallel", RecipeOptions(langs=("yo",), per_lang=20, seed=7))
    assert out.stdout.strip() == ",".join(ex.id for ex in here)


def test_languages_are_interleaved():
    langs = ("ar", "de", "hi", "sw", "zh")
    examples = load_recipe("mini-parallel", RecipeOptions(langs=langs, per_lang=12, seed=5))
    assert len(examples) == 60
    # each consecutive block of 5 holds every language once, in a seeded order
    blocks = [[ex.lang for ex in examples[i : i + 5]] for i in range(0, 60, 5)]
    assert all(sorted(block) == sorted(langs) for block in blocks)
    assert len({tuple(block) for block in blocks}) > 1
    # unequal counts (English has no NTREX): English is spread over the whole list, not bunched
    mixed = load_recipe("mini-parallel", RecipeOptions(langs=("en", "sw"), seed=5))
    positions = [i for i, ex in enumerate(mixed) if ex.lang == "en"]
    tenth = len(mixed) // 10
    assert all(any(k * tenth <= p < (k + 1) * tenth for p in positions) for k in range(10))


def test_every_example_is_parallel(everything):
    assert {ex.lang for ex in everything} == set(LANGUAGES)
    for ex in everything:
        source = ex.id.split("/")[2]
        assert ex.instruction_en, ex.id
        if ex.lang == "en":
            assert ex.instruction_en == ex.instruction
        if source == "sib":
            assert ex.output in SIB_TOPICS and ex.instruction_en.startswith(SIB_HEAD)
        else:
            assert source == "ntrex" and ex.lang != "en"
            assert ex.instruction_en == TRANSLATE_TO_EN_PROMPT.format(text=ex.output)


def test_sib_dev_and_test_never_appear(everything):
    for lang in LANGUAGES:
        rows = read_jsonl(data_dir() / "parallel" / "flores_sib" / f"{lang}.jsonl")
        split = {str(row["id"]): row["split"] for row in rows}
        held_out = {row["text"] for row in rows if row["split"] != "train"}
        for ex in everything:
            if ex.lang != lang:
                continue
            if ex.id.split("/")[2] == "sib":
                assert split[ex.id.split("/")[3]] == "train", ex.id
            assert source_sentence(ex) not in held_out, ex.id


def test_zero_overlap_with_every_benchmark_item(everything):
    """All 22 languages, all examples, whole instructions (template included), outputs and English
    instructions against every benchmark prompt / prompt_en / answer and the SIB dev/test sentences."""
    assert len(everything) > 50_000
    assert contamination_report(everything) == dict.fromkeys(LANGUAGES, 0)

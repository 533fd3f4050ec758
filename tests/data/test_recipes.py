"""Training-data recipes and test-set decontamination (fast; the real shared data, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.data.base import LANGUAGES, Example, data_dir, read_jsonl
from harness.data.decontam import TestSetIndex, TextGroup, contamination_report, text_overlaps
from harness.data.prompts import SIB_PROMPT, SIB_TOPICS, TRANSLATE_TO_EN_PROMPT
from harness.data.recipes import (
    AYA_DATASET,
    JSONL_ROW,
    RECIPES,
    RecipeOptions,
    describe_recipes,
    load_recipe,
    mini_parallel_removed,
)
from harness.plumbing.errors import HarnessError

VALID_LANGS = ", ".join(sorted(LANGUAGES))
SIB_HEAD, SIB_TAIL = SIB_PROMPT.split("{text}")
NTREX_HEAD = TRANSLATE_TO_EN_PROMPT.split("{text}")[0]


def source_sentence(example: Example) -> str:
    """The sentence a mini-parallel instruction wraps."""
    if example.id.split("/")[2] == "sib":
        return example.instruction[len(SIB_HEAD) : -len(SIB_TAIL)]
    return example.instruction[len(NTREX_HEAD) :]


def benchmark_row(task: str, lang: str, i: int) -> dict:
    return read_jsonl(data_dir() / "benchmarks" / task / f"{lang}.jsonl")[i]


@pytest.fixture(scope="module")
def everything() -> list[Example]:
    """mini-parallel, all 22 languages, all examples (built once: indexes every benchmark)."""
    return load_recipe("mini-parallel", RecipeOptions())


# --- registry and options --------------------------------------------------------------------------


def test_registry_and_descriptions():
    assert RECIPES.names() == ["aya", "jsonl", "mini-parallel"]
    described = describe_recipes()
    assert set(described) == {"aya", "jsonl", "mini-parallel"}
    assert all(text and "\n" not in text for text in described.values())
    with pytest.raises(HarnessError) as e:
        load_recipe("mini-paralel", RecipeOptions())
    assert (
        str(e.value)
        == "unknown recipe 'mini-paralel' (did you mean 'mini-parallel'?); valid: aya, jsonl, mini-parallel"
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


# --- jsonl -----------------------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[dict | str]) -> str:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return str(path)


def row(lang: str = "sw", **extra) -> dict:
    return {"lang": lang, "instruction": "Sema habari.", "output": "Habari!", **extra}


def test_jsonl_loads_a_file(tmp_path):
    lines = [
        row(),
        row("en", instruction="Say hello.", output="Hello!"),
        row(id="mine", instruction_en="Say hello."),
    ]
    lines += [row("zh", instruction=f"问题 {i}", output="答案") for i in range(6)]
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    examples = load_recipe("jsonl", RecipeOptions(path=path))
    by_id = {ex.id: ex for ex in examples}
    assert set(by_id) == {"train/1", "train/2", "mine"} | {f"train/{i}" for i in range(4, 10)}
    assert by_id["train/1"].instruction_en is None  # no English parallel given
    assert by_id["train/2"].instruction_en == "Say hello."  # English rows are their own parallel
    assert by_id["mine"].instruction_en == "Say hello."
    langs = [ex.lang for ex in examples]
    assert sum(a != b for a, b in zip(langs, langs[1:], strict=False)) >= 4  # interleaved, not grouped
    some = load_recipe("jsonl", RecipeOptions(path=path, langs=("zh", "en"), per_lang=2, seed=1))
    assert Counter(ex.lang for ex in some) == {"zh": 2, "en": 1}
    assert some == load_recipe("jsonl", RecipeOptions(path=path, langs=("zh", "en"), per_lang=2, seed=1))
    with pytest.raises(HarnessError) as e:
        load_recipe("jsonl", RecipeOptions(path=path, langs=("sw", "yo")))
    assert str(e.value) == f"{path} has no examples in yo; languages there: en, sw, zh"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([row(), {"lang": "sw", "instruction": "Sema."}], "{path}:2: missing field 'output'; " + JSONL_ROW),
        (
            [row(lang="sww")],
            f"unknown language 'sww' in {{path}}:1 (did you mean 'sw'?); valid: {VALID_LANGS}",
        ),
        (
            [row(), '{"lang": "sw" "instruction": "x"}'],
            "{path}:2: malformed JSON: Expecting ',' delimiter (column 15)",
        ),
        (
            [row(id="a"), row(id="b"), row(id="a")],
            "{path}:3: duplicate id 'a' (first used on line 1); ids must be unique",
        ),
        ([row(output=3)], "{path}:1: field 'output' must be a string, got int; " + JSONL_ROW),
        ([row(instruction="  ")], "{path}:1: field 'instruction' is empty; " + JSONL_ROW),
        (
            [row(instruction_en="")],
            "{path}:1: field 'instruction_en' must be a non-empty string or absent, got ''",
        ),
        ([row(id=["x"])], "{path}:1: field 'id' must be a non-empty string or an integer, got ['x']"),
        (["", "  "], "{path}: empty file, expected one JSON object per line"),
        (["[1, 2]"], "{path}:1: expected a JSON object, got list"),
    ],
)
def test_jsonl_errors(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(HarnessError) as e:
        load_recipe("jsonl", RecipeOptions(path=path))
    assert str(e.value) == message.format(path=path)


def test_jsonl_needs_a_path(tmp_path):
    with pytest.raises(HarnessError) as e:
        load_recipe("jsonl", RecipeOptions())
    assert str(e.value) == (
        "recipe 'jsonl' needs --recipe-path: a local JSONL file with one "
        '{"lang", "instruction", "output", "instruction_en"} object per line'
    )
    with pytest.raises(HarnessError) as e:
        load_recipe("jsonl", RecipeOptions(path=str(tmp_path / "nope.jsonl")))
    assert str(e.value) == f"{tmp_path / 'nope.jsonl'}: file not found"


# --- aya -------------------------------------------------------------------------------------------


def aya_row(inputs: str, targets: str, code: str, language: str = "") -> dict:
    return {
        "inputs": inputs,
        "targets": targets,
        "language": language or code,
        "language_code": code,
        "annotation_type": "original-annotations",
        "user_id": "u1",
    }


AYA_ROWS = [
    aya_row("Habari gani?", "Nzuri sana, asante.", "swh", "Swahili"),
    aya_row("What is the capital of Kenya?", "Nairobi.", "eng", "English"),
    aya_row("Mji mkuu wa Tanzania ni upi?", "Dodoma.", "swh", "Swahili"),
    aya_row("शुभ प्रभात का अर्थ क्या है?", "इसका अर्थ है सुप्रभात।", "hin", "Hindi"),
    aya_row("Aap kaise hain? Mujhe batao.", "Main theek hoon, shukriya.", "hin", "Hindi"),  # romanised
    aya_row("شنو سميتك؟", "سميتي علي.", "ary", "Moroccan Arabic"),  # a dialect: not ours
    aya_row("வணக்கம்", "வணக்கம்!", "tam", "Tamil"),  # not one of the 22
    aya_row("", "Empty question.", "eng", "English"),
]


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """`datasets.load_dataset` that refuses anything but local files, with its cache in tmp_path."""
    import datasets

    real = datasets.load_dataset
    calls: list[tuple] = []

    def local_only(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        assert path in ("json", "parquet"), f"tried to reach the Hub for {path!r}"
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", local_only)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return calls


def test_aya_from_a_local_file(tmp_path, offline_datasets):
    planted = " ".join(benchmark_row("xnli", "sw", 0)["prompt"].split("\n")[0].split()[:12])
    rows = [*AYA_ROWS, aya_row(f"Eleza sentensi hii: {planted}", "Ni sentensi.", "swh", "Swahili")]
    path = write_jsonl(tmp_path / "aya.jsonl", rows)
    examples = load_recipe("aya", RecipeOptions(path=path))
    assert offline_datasets[0][0] == "json" and offline_datasets[0][2]["data_files"] == path
    by_id = {ex.id: ex for ex in examples}
    assert set(by_id) == {"aya/sw/0", "aya/en/1", "aya/sw/2", "aya/hi/3"}  # planted row 8 dropped
    assert by_id["aya/en/1"].instruction_en == "What is the capital of Kenya?"
    assert by_id["aya/sw/0"].instruction_en is None and by_id["aya/hi/3"].instruction_en is None
    assert by_id["aya/sw/0"].output == "Nzuri sana, asante."
    some = load_recipe("aya", RecipeOptions(path=path, langs=("sw",), per_lang=1, seed=2))
    assert len(some) == 1 and some[0].lang == "sw"
    with pytest.raises(HarnessError) as e:
        load_recipe("aya", RecipeOptions(path=path, langs=("yo",)))
    assert str(e.value) == f"the Aya data at '{path}' has no usable examples"


def test_aya_default_is_the_hub_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_hub(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return datasets.Dataset.from_list(AYA_ROWS[:2])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    examples = load_recipe("aya", RecipeOptions())
    assert calls == [(AYA_DATASET, (), {"split": "train"})]
    assert sorted(ex.id for ex in examples) == ["aya/en/1", "aya/sw/0"]


def test_aya_errors(tmp_path, monkeypatch, offline_datasets):
    path = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "x", "completion": "y"}])
    with pytest.raises(HarnessError) as e:
        load_recipe("aya", RecipeOptions(path=path))
    assert str(e.value) == (
        f"{path}: not in the Aya format, missing column(s) inputs, targets, language_code; "
        "expected inputs, targets, language_code (found: prompt, completion)"
    )
    with pytest.raises(HarnessError) as e:
        load_recipe("aya", RecipeOptions(path=str(tmp_path / "missing.parquet")))
    assert (
        str(e.value)
        == f"{tmp_path / 'missing.parquet'}: no such file or folder (expected a local copy of {AYA_DATASET})"
    )
    import datasets

    def offline(path, *args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HarnessError) as e:
        load_recipe("aya", RecipeOptions())
    assert str(e.value).startswith(
        f"could not load the Aya dataset from '{AYA_DATASET}' (ConnectionError: Couldn't reach the Hub); without network"
    )

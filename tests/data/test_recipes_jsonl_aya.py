"""The jsonl and aya recipes: local JSONL files and the Aya dataset, with their errors (no network)."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.data.recipes import AYA_DATASET, JSONL_ROW, RecipeOptions, load_recipe
from harness.plumbing.errors import HarnessError
from tests.data.recipe_helpers import VALID_LANGS, benchmark_row, write_jsonl

# --- jsonl -----------------------------------------------------------------------------------------


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

"""The llamafactory recipe: LLaMA-Factory data as the CC-Tuning authors trained from (dataset_info.json +
alpaca JSON files; the fixture's README says which of their files it follows), read back exactly, planned
and trained by every method, and its errors (one line each, no network)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.config import RunConfig
from harness.core.store import Run
from harness.data.base import Example
from harness.data.recipes import RecipeOptions, describe_recipes, load_recipe
from harness.methods import METHODS
from harness.orchestration.pipeline import train_run
from harness.plumbing.errors import HarnessError
from harness.training.settings import PROFILES

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "llamafactory"
PARALLEL = {"prompt": "instruction", "response": "output", "aux": "instruction_en"}  # the authors' columns


def load(spec: str | Path, **options) -> list[Example]:
    return load_recipe("llamafactory", RecipeOptions(path=str(spec), **options))


def folder(tmp_path: Path, info: dict, files: dict[str, list | str]) -> Path:
    """A dataset folder: dataset_info.json and its files (a list: a JSON array; text: as it is)."""
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_fixture_reads_back_exactly() -> None:
    examples = load(FIXTURE)
    expected = []
    for name, lang in (("cc_demo_sw", "sw"), ("cc_demo_zh", "zh")):
        rows = json.loads((FIXTURE / f"{name}.json").read_text(encoding="utf-8"))
        expected += [Example(f"{name}/{n}", lang, r["instruction"], r["output"], r["instruction_en"])
                     for n, r in enumerate(rows, 1)]  # fmt: skip
    assert sorted(examples, key=lambda ex: ex.id) == sorted(expected, key=lambda ex: ex.id)
    assert [ex.lang for ex in examples] != [ex.lang for ex in expected]  # interleaved by language, seeded
    assert Example("cc_demo_sw/2", "sw", 'Andika neno moja linalomaanisha "furaha".', "Shangwe",
                   'Write one word that means "happiness".') in examples  # fmt: skip
    assert load(FIXTURE) == examples and load(FIXTURE, seed=1) != examples
    assert "llamafactory" in describe_recipes()


def test_selection_languages_and_limits() -> None:
    assert {ex.lang for ex in load(f"{FIXTURE}#cc_demo_zh")} == {"zh"}
    assert {ex.lang for ex in load(f"{FIXTURE}/dataset_info.json#cc_demo_zh=yo, cc_demo_sw")} == {"yo", "sw"}
    assert Counter(ex.lang for ex in load(FIXTURE, per_lang=2)) == {"sw": 2, "zh": 2}
    assert Counter(ex.lang for ex in load(FIXTURE, langs=("sw",))) == {"sw": 3}
    with pytest.raises(HarnessError, match=r"has no examples in yo; languages there: sw, zh"):
        load(FIXTURE, langs=("yo",))


def test_columns_query_and_row_languages_as_llamafactory_reads_them(tmp_path: Path) -> None:
    info = {
        "plain_en": {"file_name": "plain.json"},  # no columns: instruction, input, output
        "mapped": {"file_name": "mapped.jsonl", "columns": {"prompt": "q", "query": "ctx", "response": "a",
                                                            "aux": "q_en", "lang": "language_code"}},
        "no_query_sw": {"file_name": "noq.json", "columns": PARALLEL},  # columns without query: input unread
    }  # fmt: skip
    mapped = [{"q": "Fupisha:", "ctx": "Habari ndefu.", "a": "Fupi.", "q_en": "Summarise:", "language_code": "swh"},
              {"q": "Summarise:", "ctx": "", "a": "Short.", "language_code": "en"},
              {"q": "", "ctx": "只有输入", "a": "好", "q_en": "Only the input", "language_code": "ZH"}]  # fmt: skip
    files = {
        "plain.json": [
            {"instruction": "Add:", "input": "2 + 3", "output": "5"},
            {"instruction": "Hi", "output": "Hello"},
        ],
        "mapped.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mapped),
        "noq.json": [
            {"instruction": "Sema", "input": "ignored", "output": "Habari", "instruction_en": "Say"}
        ],
    }
    by_id = {ex.id: ex for ex in load(folder(tmp_path, info, files))}
    assert by_id["plain_en/1"] == Example("plain_en/1", "en", "Add:\n2 + 3", "5", "Add:\n2 + 3")
    assert by_id["plain_en/2"] == Example("plain_en/2", "en", "Hi", "Hello", "Hi")
    # the authors' aligner does not append the query to the English instruction
    assert by_id["mapped/1"] == Example("mapped/1", "sw", "Fupisha:\nHabari ndefu.", "Fupi.", "Summarise:")
    assert by_id["mapped/2"] == Example("mapped/2", "en", "Summarise:", "Short.", "Summarise:")
    assert by_id["mapped/3"] == Example("mapped/3", "zh", "只有输入", "好", "Only the input")
    assert by_id["no_query_sw/1"] == Example("no_query_sw/1", "sw", "Sema", "Habari", "Say")


def test_a_folder_entry_and_rows_without_english(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    info = {"aya_mini_sw": {"file_name": "parts", "columns": {"prompt": "instruction", "response": "output"}}}
    files = {"parts/a.json": [{"instruction": "Sema", "output": "Habari"}],
             "parts/b.jsonl": json.dumps({"instruction": "Imba", "output": "La la"}) + "\n"}  # fmt: skip
    examples = load(folder(tmp_path, info, files))
    assert sorted(examples, key=lambda ex: ex.id) == [Example("aya_mini_sw/a/1", "sw", "Sema", "Habari"),
                                                      Example("aya_mini_sw/b/1", "sw", "Imba", "La la")]  # fmt: skip
    with pytest.raises(HarnessError, match="instruction_en"):
        METHODS.get("cc")().check_examples(examples)  # no English parallel: CC-Tuning refuses


BAD_CASES = [
    ("info", "{not json", None, "dataset_info.json:1: malformed JSON: Expecting property name enclosed in double quotes (column 2)"),
    ("info", "[]", None, "dataset_info.json: expected a JSON object of dataset entries"),
    ("file", "[{\"instruction\": \"Sema\", \"output\": \"Hi\", \"instruction_en\": \"Say\"},\n{bad", None,
     "d_sw.json:2: malformed JSON: Expecting property name enclosed in double quotes (column 2)"),
    ("file", "[]", None, "d_sw.json: empty file, expected a JSON array of alpaca rows"),
    ("file", "", None, "d_sw.json: empty file, expected one JSON object per line"),
    ("file", '["text"]', None, "d_sw.json: row 1: expected a JSON object, got str"),
    ("row", {"instruction": "Sema", "instruction_en": "Say"}, None,
     "d_sw.json: row 1: missing field 'output' (the response column); fields there: instruction, instruction_en"),
    ("row", {"instruction": "Sema", "output": "Habari"}, None,
     "d_sw.json: row 1: missing field 'instruction_en' (the aux (English instruction) column)"),
    ("row", {"instruction": "Sema", "output": 3, "instruction_en": "Say"}, None,
     "d_sw.json: row 1: field 'output' (the response column) must be a string, got int"),
    ("row", {"instruction": "", "output": "Habari", "instruction_en": "Say"}, None,
     "d_sw.json: row 1: empty instruction (fields 'instruction' and None)"),
    ("row", {"instruction": "Sema", "output": "Habari", "instruction_en": "Say", "history": [["a", "b"]]},
     {"history": "history"}, "d_sw.json: row 1: field 'history' holds earlier turns; multi-turn rows are not supported"),
    ("row", {"instruction": "Sema", "output": "Habari", "instruction_en": "Say", "system": "Be brief."},
     {"system": "system"}, "d_sw.json: row 1: field 'system' holds a system prompt"),
    ("row", {"instruction": "Sema", "output": "Habari", "instruction_en": "Say", "lang": "xx"}, {"lang": "lang"},
     "unknown language 'xx' in {folder}/d_sw.json: row 1"),
    ("entry", {"images": "images"}, None, "dataset 'd_sw': column 'images' is not supported"),
    ("entry", {"promt": "instruction"}, None, "unknown column 'promt' in {folder}/dataset_info.json: dataset 'd_sw' (did you mean 'prompt'?)"),
    ("entry", {"response": None}, None, "dataset 'd_sw': columns must name a prompt (or query) and a response field"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "content", "extra", "message"), BAD_CASES)
def test_bad_data_is_one_line_naming_the_file(
    tmp_path: Path, kind: str, content, extra, message: str
) -> None:
    columns = {**PARALLEL, **(extra or {})}
    info: dict | str = {"d_sw": {"file_name": "d_sw.json", "columns": columns}}
    rows: list | str = [{"instruction": "Sema", "output": "Habari", "instruction_en": "Say"}]
    if kind == "info":
        info = content
    elif kind == "file":
        rows = content
    elif kind == "row":
        rows = [content]
    else:
        info = {"d_sw": {"file_name": "d_sw.json", "columns": {**PARALLEL, **content}}}
    folder(tmp_path, {}, {"d_sw.json": rows})
    (tmp_path / "dataset_info.json").write_text(info if isinstance(info, str) else json.dumps(info), "utf-8")
    with pytest.raises(HarnessError) as e:
        load(tmp_path)
    assert message.format(folder=tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_entries_that_cannot_be_read_are_refused_by_name(tmp_path: Path) -> None:
    info = {
        "hub": {"hf_hub_url": "org/data"},
        "script": {"script_url": "my_script"},
        "chat_sw": {"file_name": "chat.json", "formatting": "sharegpt"},
        "pairs_sw": {"file_name": "d_sw.json", "ranking": True},
        "sampled_sw": {"file_name": "d_sw.json", "num_samples": 2},
        "table_sw": {"file_name": "d.csv"},
        "nolang": {"file_name": "d_sw.json"},
        "absent_sw": {"file_name": "absent.json"},
    }
    base = folder(tmp_path, info, {"d_sw.json": [{"instruction": "Sema", "output": "Habari"}], "chat.json": "[]",
                                   "d.csv": "instruction,output\n"})  # fmt: skip
    expected = {
        "hub": "dataset 'hub' is on the Hugging Face Hub (hf_hub_url: org/data); the llamafactory recipe reads "
               "local files only (no network)",
        "script": "dataset 'script' is behind a loading script (script_url: my_script)",
        "chat_sw": "dataset 'chat_sw': formatting 'sharegpt' is not read",
        "pairs_sw": "dataset 'pairs_sw': ranking (preference) data is not read",
        "sampled_sw": "dataset 'sampled_sw': num_samples is not supported; take a sample with --train-limit",
        "table_sw": "only JSON and JSONL files are read (LLaMA-Factory also reads arrow, csv, parquet, txt)",
        "nolang": "dataset 'nolang': no language: name a row field with \"lang\" in its columns, add it to the "
                  "recipe path (DIR#nolang=sw), or put one language code in the dataset's name (e.g. nolang_sw)",
        "absent_sw": f"dataset 'absent_sw': file {base / 'absent.json'} not found",
    }  # fmt: skip
    for name, message in expected.items():
        with pytest.raises(HarnessError) as e:
            load(f"{base}#{name}")
        assert message in str(e.value) and str(e.value).startswith(str(base / "dataset_info.json")), str(
            e.value
        )
    assert {ex.lang for ex in load(f"{base}#nolang=yo")} == {"yo"}
    with pytest.raises(HarnessError, match=r"unknown language 'xx' in --recipe-path .*#nolang=xx"):
        load(f"{base}#nolang=xx")


def test_the_default_selection_skips_what_is_not_local(tmp_path: Path) -> None:
    info = {"hub": {"hf_hub_url": "org/data"}, "absent_sw": {"file_name": "absent.json"},
            "chat": {"file_name": "c.json", "formatting": "sharegpt"}}  # fmt: skip
    with pytest.raises(HarnessError) as e:
        load(folder(tmp_path, info, {}))
    assert str(e.value) == (f"{tmp_path / 'dataset_info.json'}: no local alpaca-format dataset to read: "
                            "hub (hf_hub_url); absent_sw (file absent); chat (formatting sharegpt)")  # fmt: skip
    with pytest.raises(
        HarnessError, match=r"recipe 'llamafactory' needs --recipe-path DIR or DIR#name1,name2"
    ):
        load_recipe("llamafactory", RecipeOptions())
    with pytest.raises(HarnessError, match=r"--recipe-path .*/nowhere: no dataset_info.json there"):
        load(tmp_path / "nowhere")


def test_a_dry_run_plans_every_method_from_it(tmp_path: Path, capsys) -> None:
    code = main(["run", "--method", "vanilla,aug_en,aug_mt,sdrrl,cc", "--recipe", "llamafactory", "--recipe-path",
                 str(FIXTURE), "--tasks", "sib200_mc_sw", "--output", str(tmp_path / "runs"), "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert (
        code == 0
        and "training data: recipe llamafactory, 5 examples in 2 languages (seed 0): sw 3, zh 2" in out
    )
    assert not (tmp_path / "runs").exists()


TRAINING_METHODS = [name for name in METHODS if METHODS.get(name).trains]
OPTIONS = {"aug_mt": {"mt_ratio": 0.5}, "sdrrl": {"max_new_tokens": 3}}


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_every_method_trains_from_it(method: str, tiny_dir: Path, tmp_path: Path) -> None:
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 1, "per_device_batch_size": 2, "batch_size": 2,
             "bf16": False, "max_length": 256}  # fmt: skip
    cfg = RunConfig(method=method, model=str(tiny_dir), method_options=OPTIONS.get(method, {}), recipe="llamafactory",
                    recipe_path=str(FIXTURE), train=train)  # fmt: skip
    examples = cfg.training_examples()
    assert all(ex.instruction_en for ex in examples)  # what CC-Tuning fuses
    run = Run(tmp_path, cfg)
    run.init("test")
    train_run(run, METHODS.get(method)(**cfg.method_options), str(tiny_dir))
    assert run.is_trained() and run.status()["phase"] == "trained"

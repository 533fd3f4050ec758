"""The data-level baselines (aug_en, aug_mt, sdrrl): the data each produces (counts, pairing, no test-set
leakage, determinism, the run's stored copy), sdrrl's answer cache, and one tiny end-to-end run each.

Fast: the `mini-parallel` recipe with a few examples per language, and for sdrrl and the end-to-end runs
the tiny random Llama of `tests/tiny.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from harness.core.config import EvalConfig, RunConfig
from harness.data.base import Example, data_dir, read_jsonl
from harness.data.decontam import contamination_report
from harness.data.recipes import RecipeOptions, load_recipe
from harness.data.translate import text_sha
from harness.evaluation.evaluate import resolve_tasks
from harness.methods import METHODS
from harness.methods.aug_en import AUGMENTATION, TRAIN_DATA, is_copy_task
from harness.methods.aug_mt import parallel_key
from harness.methods.sdrrl import ANSWERS, code_switch_text, words
from harness.orchestration.pipeline import execute
from harness.plumbing.errors import HarnessError
from harness.training.settings import PROFILES, TrainContext, TrainSettings
from tests.tiny import tiny_llama, tiny_tokenizer

LANGS = ("en", "sw", "hi")



@pytest.fixture(scope="module")
def examples() -> list[Example]:
    """9 per language: English all SIB, Swahili and Hindi 6 SIB + 3 NTREX."""
    return load_recipe("mini-parallel", RecipeOptions(langs=LANGS, per_lang=9, seed=0))


@pytest.fixture(scope="module")
def pool() -> dict[tuple[str, str], Example]:
    """(parallel key, language) -> the full recipe's example (the parallel versions)."""
    full = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "hi", "yo")))
    return {(parallel_key(ex), ex.lang): ex for ex in full}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    model = tiny_llama(tok, max_positions=1024)
    blank = [i for i in range(len(tok)) if not tok.decode([i]).strip()]  # special and whitespace tokens
    with torch.no_grad():  # none of them wins the argmax: generated answers are not empty
        model.model.embed_tokens.weight[blank] = 0
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def _ctx(run_dir: Path, examples: list[Example], seed: int = 0, model: str = "unused") -> TrainContext:
    return TrainContext(base_model=model, examples=examples, settings=TrainSettings(), seed=seed, run_dir=run_dir,
                        output_dir=run_dir / "model")  # fmt: skip


def _prepare(
    method: str, examples: list[Example], run_dir: Path, seed: int = 0, model: str = "unused", **options
):
    return METHODS.get(method)(**options).prepare_examples(examples, _ctx(run_dir, examples, seed, model))


def _stored(run_dir: Path, produced: list[Example]) -> dict:
    """Checks the run's copy of the data against `produced`; returns augmentation.json."""
    rows = read_jsonl(run_dir / TRAIN_DATA)
    assert [Example(**{k: v for k, v in r.items() if k != "source"}) for r in rows] == produced
    summary = json.loads((run_dir / AUGMENTATION).read_text())
    assert sum(r["source"] != "original" for r in rows) == summary["added_total"]
    return summary


def _translation_rows(pairs: list[tuple[str, str, str, str]]) -> str:
    """JSONL of `harness translate` rows from (text, src, tgt, translation)."""
    return "".join(
        json.dumps({"key": f"m\t{s}\t{t}\t{text_sha(x)}", "model": "m", "src": s, "tgt": t, "sha": text_sha(x),
                    "text": x, "translation": y}) + "\n"
        for x, s, t, y in pairs
    )  # fmt: skip


# --- aug_en ---------------------------------------------------------------------------------------


def test_aug_en_pairs_each_english_instruction_with_the_same_response(tmp_path, examples) -> None:
    out = _prepare("aug_en", examples, tmp_path)
    assert out[: len(examples)] == examples
    added = out[len(examples) :]
    by_id = {ex.id: ex for ex in examples}
    seen = {(ex.lang, ex.instruction, ex.output) for ex in examples}
    expected, copies = [], 0
    for ex in examples:
        if ex.lang == "en":
            continue
        if "/ntrex/" in ex.id:  # English side of "translate into English": a copy task
            copies += 1
        elif ("en", ex.instruction_en, ex.output) not in seen:
            seen.add(("en", ex.instruction_en, ex.output))
            expected.append(f"{ex.id}+en")
    assert [ex.id for ex in added] == expected and (len(added), copies) == (12, 6)
    for ex in added:
        original = by_id[ex.id.removesuffix("+en")]
        assert (ex.lang, ex.instruction, ex.output, ex.instruction_en) == (
            "en",
            original.instruction_en,
            original.output,
            original.instruction_en,
        )
    summary = _stored(tmp_path, out)
    assert summary["added"] == {"en": len(added)} and summary["skipped"] == {"copy_task": copies}
    assert summary["sources"] == {"instruction_en": len(added)}
    assert set(contamination_report(out).values()) == {0}
    assert _prepare("aug_en", examples, tmp_path / "again") == out


def test_copy_tasks_are_whole_lines_of_the_instruction() -> None:
    options = "What is the topic?\n\nThe match ended.\n\nChoose one of: travel, sports.\nTopic:"
    assert not is_copy_task(Example("1", "en", options, "sports"))  # an option, not a copy
    assert is_copy_task(Example("2", "en", "Translate into English.\n\nThe match ended.", "The match ended."))
    assert is_copy_task(Example("3", "en", "Repeat:\n\nOne.\nTwo.\n\nThanks", "One.\nTwo."))  # a paragraph
    assert not is_copy_task(
        Example("4", "sw", "Translate into English.\n\nMechi iliisha.", "The match ended.")
    )


def test_aug_en_uses_translations_where_the_recipe_has_no_english(tmp_path) -> None:
    data = [Example("f/1", "sw", "Swali?\n\nHabari ya leo", "1"), Example("f/2", "yo", "Ibeere kan", "2"),
            Example("f/3", "en", "A question", "3", "A question")]  # fmt: skip
    path = tmp_path / "tr.jsonl"
    path.write_text(
        _translation_rows(
            [("Swali?", "sw", "en", "Question?"), ("Habari ya leo", "sw", "en", "News of today")]
        )
    )
    out = _prepare("aug_en", data, tmp_path / "run", translations=str(path))
    assert out[3:] == [
        Example("f/1+en", "en", "Question?\n\nNews of today", "1", "Question?\n\nNews of today")
    ]
    assert json.loads((tmp_path / "run" / AUGMENTATION).read_text())["skipped"] == {
        "no_english_instruction": 1
    }
    with pytest.raises(HarnessError, match="none of the 2 non-English examples has an English instruction"):
        _prepare("aug_en", data, tmp_path / "run2")


# --- aug_mt ---------------------------------------------------------------------------------------


def test_aug_mt_adds_parallel_copies_with_the_same_response(tmp_path, examples, pool) -> None:
    out = _prepare("aug_mt", examples, tmp_path)  # mt_ratio 1, targets: the non-English training languages
    assert out[: len(examples)] == examples
    added = out[len(examples) :]
    assert len(added) == len(examples)  # every example has a parallel in sw or hi here
    by_id = {ex.id: ex for ex in examples}
    for ex in added:
        original_id, lang = ex.id.split("+mt:")
        original = by_id[original_id]
        assert lang == ex.lang != original.lang and ex.lang in ("sw", "hi")
        parallel = pool[(parallel_key(original), ex.lang)]
        assert (ex.instruction, ex.output, ex.instruction_en) == (
            parallel.instruction,
            original.output,
            original.instruction_en,
        )
        assert ex.instruction_en == parallel.instruction_en  # the same sentence
    assert len({ex.id.split("+mt:")[0] for ex in added}) == len(added)  # one copy per example
    assert not {(ex.lang, ex.instruction) for ex in added} & {(ex.lang, ex.instruction) for ex in examples}
    summary = _stored(tmp_path, out)
    assert summary["sources"] == {"parallel": len(added)} and summary["mt_langs"] == ["hi", "sw"]
    assert set(contamination_report(out).values()) == {0}


def test_aug_mt_ratio_languages_and_seeds(tmp_path, examples) -> None:
    half = _prepare("aug_mt", examples, tmp_path / "a", mt_ratio=0.5, mt_langs="hi,sw,yo")
    assert len(half) - len(examples) == round(0.5 * len(examples))
    assert _prepare("aug_mt", examples, tmp_path / "b", mt_ratio=0.5, mt_langs="hi,sw,yo") == half
    other = _prepare("aug_mt", examples, tmp_path / "c", seed=1, mt_ratio=0.5, mt_langs="hi,sw,yo")
    assert other[len(examples) :] != half[len(examples) :] and len(other) == len(half)

    double = _prepare("aug_mt", examples, tmp_path / "d", mt_ratio=2.0, mt_langs="hi,sw,yo")[len(examples) :]
    assert len(double) == 2 * len(examples)
    per_example: dict[str, list[str]] = {}
    for ex in double:
        original_id, lang = ex.id.split("+mt:")
        per_example.setdefault(original_id, []).append(lang)
    assert all(len(langs) == 2 and len(set(langs)) == 2 for langs in per_example.values())
    assert {lang for langs in per_example.values() for lang in langs} == {"hi", "sw", "yo"}

    with pytest.raises(HarnessError, match="unknown language 'xx' in --method-opt mt_langs"):
        _prepare("aug_mt", examples, tmp_path / "e", mt_langs="sw,xx")
    with pytest.raises(HarnessError, match="mt_ratio=0.0 .* must be above 0"):
        _prepare("aug_mt", examples, tmp_path / "f", mt_ratio=0.0)


def test_aug_mt_uses_translations_without_parallels_and_drops_test_items(tmp_path) -> None:
    leaked = read_jsonl(data_dir() / "benchmarks" / "mmmlu" / "yo.jsonl")[0]["prompt"]
    data = [Example("f/1", "sw", "Swali moja", "1", "Question one"), Example("f/2", "sw", "Swali mbili", "2"),
            Example("f/3", "en", "Question three", "3", "Question three")]  # fmt: skip
    path = tmp_path / "tr.jsonl"
    path.write_text(_translation_rows([
        ("Question one", "en", "yo", "Ibeere kan"),  # f/1: through its English instruction
        ("Swali mbili", "sw", "yo", "Ibeere meji"),  # f/2: its own instruction
        ("Question three", "en", "yo", leaked),  # f/3: a benchmark test item: must be dropped
    ]))  # fmt: skip
    out = _prepare("aug_mt", data, tmp_path / "run", mt_langs="yo", translations=str(path))
    assert out[3:] == [Example("f/1+mt:yo", "yo", "Ibeere kan", "1", "Question one"),
                       Example("f/2+mt:yo", "yo", "Ibeere meji", "2", None)]  # fmt: skip
    summary = json.loads((tmp_path / "run" / AUGMENTATION).read_text())
    assert summary["skipped"] == {"contaminated": 1} and summary["target_copies"] == 3
    assert summary["sources"] == {"mt": 2}
    assert set(contamination_report(out).values()) == {0}


# --- sdrrl ----------------------------------------------------------------------------------------


class GenerateCalls:
    """Counts `LlamaForCausalLM.generate` calls (the tiny model's); can fail on call N like a kill."""

    def __init__(self, monkeypatch, fail_on: int | None = None) -> None:
        self.count = 0
        original = LlamaForCausalLM.generate

        def generate(model, *args, **kwargs):
            self.count += 1
            if fail_on is not None and self.count == fail_on:
                raise KeyboardInterrupt("killed")
            return original(model, *args, **kwargs)

        monkeypatch.setattr(LlamaForCausalLM, "generate", generate)


@pytest.fixture(scope="module")
def small(examples) -> list[Example]:
    """3 per language; 6 non-English examples, each with its own English instruction."""
    return load_recipe("mini-parallel", RecipeOptions(langs=LANGS, per_lang=3, seed=0))


def test_sdrrl_pairs_each_non_english_instruction_with_the_models_english_answer(
    tmp_path, small, tiny_dir, monkeypatch
) -> None:
    calls = GenerateCalls(monkeypatch)
    opts = {"max_new_tokens": 4, "gen_batch_size": 4}
    out = _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), **opts)
    foreign = [ex for ex in small if ex.lang != "en"]
    cache = read_jsonl(tmp_path / ANSWERS)
    assert len(cache) == len({ex.instruction_en for ex in foreign}) == 6 and calls.count == 2  # 4 + 2
    answers = {row["instruction_en"]: row["answer"] for row in cache}
    assert all(row["settings"]["max_new_tokens"] == 4 and not row["settings"]["do_sample"] for row in cache)
    assert out[: len(small)] == small
    expected = [Example(f"{ex.id}+sdrrl", ex.lang, ex.instruction, answers[ex.instruction_en], ex.instruction_en)
                for ex in foreign if answers[ex.instruction_en]]  # fmt: skip
    assert out[len(small) :] == expected and len(expected) >= 4
    summary = _stored(tmp_path, out)
    assert summary["generation"]["model"] == str(tiny_dir) and summary["sources"] == {"answer": len(expected)}
    assert set(contamination_report(out).values()) == {0}

    again = _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), **opts)
    assert again == out and calls.count == 2  # every answer from the cache
    longer = _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), **{**opts, "max_new_tokens": 6})
    assert calls.count == 4 and len(read_jsonl(tmp_path / ANSWERS)) == 12  # other settings: other answers
    assert len(longer) >= len(small)

    only = _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), keep_original=False, **opts)
    assert only == expected and calls.count == 4
    fresh = _prepare("sdrrl", small, tmp_path / "other_run", model=str(tiny_dir), **opts)
    assert fresh == out  # greedy: the same data from a fresh cache


def test_sdrrl_resumes_generation_after_a_kill(tmp_path, small, tiny_dir, monkeypatch) -> None:
    opts = {"max_new_tokens": 3, "gen_batch_size": 2}
    GenerateCalls(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), **opts)
    assert len(read_jsonl(tmp_path / ANSWERS)) == 2
    monkeypatch.undo()
    calls = GenerateCalls(monkeypatch)
    _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), **opts)
    assert calls.count == 2 and len(read_jsonl(tmp_path / ANSWERS)) == 6  # the 4 missing, 2 per batch


def test_sdrrl_code_switch_variant(tmp_path, small, tiny_dir, monkeypatch) -> None:
    out = _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), max_new_tokens=4, code_switch=True)
    by_id = {ex.id: ex for ex in out}
    switched = [ex for ex in out if ex.id.endswith("+sdrrl-cs")]
    assert len(switched) == len([ex for ex in out if ex.id.endswith("+sdrrl")]) >= 4
    for ex in switched:
        base = by_id[ex.id.removesuffix("-cs")]
        original = by_id[ex.id.removesuffix("+sdrrl-cs")]
        assert ex.output == base.output and ex.lang == original.lang
        assert ex.instruction not in (original.instruction, original.instruction_en)
        assert ex.instruction.startswith(original.instruction.split("\n\n")[0] + "\n\n")  # the template stays
    assert _prepare("sdrrl", small, tmp_path, model=str(tiny_dir), max_new_tokens=4, code_switch=True) == out


def test_code_switch_text_replaces_one_proportional_stretch() -> None:
    template = "What is the topic?\n\n{}\n\n(1) sports\n(2) travel"
    content = "Mnamo Jumatatu wanasayansi walitangaza uvumbuzi mpya wa kifaa."
    native = template.format(content)
    english = template.format("On Monday scientists announced a new diagnostic tool.")
    assert "".join(words(native)) == native and len(words("中文 text, 中文")) == 5
    # 8 native content words, 8 English: native words 2-5 become English words 2-5.
    result = code_switch_text(native, english, 0.5, random.Random(3))
    assert result == template.format("Mnamo Monday scientists announced a mpya wa kifaa.")
    assert code_switch_text(native, english, 0.5, random.Random(3)) == result  # same seed, same text
    native_words = content.split()
    for seed in range(20):  # always one stretch of round(0.5 x 8) = 4 words, the template untouched
        text = code_switch_text(native, english, 0.5, random.Random(seed))
        assert text.startswith("What is the topic?\n\n") and text.endswith("\n\n(1) sports\n(2) travel")
        switched = text.split("\n\n")[1].split()
        kept = next(
            i for i, (a, b) in enumerate(zip(native_words + [""], switched + [""], strict=False)) if a != b
        )
        kept += next(i for i, (a, b) in enumerate(zip(native_words[::-1] + [""], switched[::-1] + [""], strict=False))
                     if a != b)  # fmt: skip
        assert kept == 4
    chinese = template.format("星期一，斯坦福大学的科学家宣布。")  # 16 characters: 5 of them switched
    text = code_switch_text(chinese, english, 0.3, random.Random(0))
    assert len([c for c in text if "\u4e00" <= c <= "\u9fff" or c in "，。"]) == 16 - 5
    assert code_switch_text(english, english, 0.5, random.Random(0)) is None  # nothing to switch


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "options"),
    [("aug_en", {}), ("aug_mt", {"mt_ratio": 0.5}), ("sdrrl", {"max_new_tokens": 3, "code_switch": True})],
)
def test_method_runs_end_to_end(tmp_path, tiny_dir, method, options) -> None:
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 1, "per_device_batch_size": 4, "batch_size": 4,
             "bf16": False, "max_length": 1024}  # fmt: skip
    cfg = RunConfig(method=method, model=str(tiny_dir), method_options=options, recipe="mini-parallel",
                    train_langs=["en", "sw"], train_limit=2, train=train)  # fmt: skip
    refs = resolve_tasks(["sib200_mc"], ["sw"])
    run = execute(
        cfg, refs, EvalConfig(tasks=[r.name for r in refs], limit=1, batch_size=2), tmp_path, "test"
    )
    status = run.status()
    assert status["phase"] == "complete" and (run.model_dir / "model.safetensors").is_file()
    rows = read_jsonl(run.dir / TRAIN_DATA)
    assert sum(r["source"] == "original" for r in rows) == 4 and len(rows) > 4
    assert status["data_stats"]["examples"] == len(rows)
    assert json.loads((run.results_dir / "sib200_mc_sw.json").read_text())["n"] == 1
    assert (run.dir / ANSWERS).is_file() == (method == "sdrrl")


def test_the_worked_example_of_the_docs_registers_and_runs(tmp_path, monkeypatch) -> None:
    """docs/adding-a-method.md: its `upsample` module registers a method that produces the data it says."""
    import importlib.util
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "adding-a-method.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    module = next(b for b in blocks if '@register_method("upsample")' in b)
    path = tmp_path / "upsample_doc.py"
    path.write_text(module, encoding="utf-8")
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the registration ends with the test
    spec = importlib.util.spec_from_file_location("upsample_doc", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert "upsample" in METHODS and METHODS.get("upsample").defaults == {"copies": 2}

    snippet = next(b for b in blocks if "def test_upsample" in b)
    scope = {
        "Example": Example,
        "TrainContext": TrainContext,
        "TrainSettings": TrainSettings,
        "METHODS": METHODS,
    }
    exec(snippet, scope)
    scope["test_upsample_repeats_each_non_english_example"](tmp_path)
    assert len(read_jsonl(tmp_path / TRAIN_DATA)) == 4
    with pytest.raises(HarnessError, match="unknown option for method 'upsample' 'copy'.*copies"):
        METHODS.get("upsample")(copy=2)

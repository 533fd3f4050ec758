"""The task catalog, the generated YAMLs as lm-eval loads them, and one tiny end-to-end evaluation."""

from __future__ import annotations

import json
import logging

import pytest

from harness.data.base import data_dir
from harness.plumbing.errors import HarnessError
from harness.tasks import catalog, generate, utils
from harness.tasks.catalog import BENCHMARKS, TASKS_DIR

# Items per language, from the data README.
README_COUNTS = {
    "xnli": 1000, "xstorycloze": 1511, "mmmlu": 1000, "xquad": 1190,
    "mkqa": 1000, "xlsum": 100, "mgsm": 250, "sib200": 204,
}  # fmt: skip

ALL_TASKS = [(b.name, p, lang) for b in BENCHMARKS.values() for p in b.protocols for lang in b.languages]


def test_catalog_shape() -> None:
    assert set(BENCHMARKS) == set(README_COUNTS)
    assert all(b.protocols[0] == "gen" for b in BENCHMARKS.values())
    assert {n for n, b in BENCHMARKS.items() if "mc" in b.protocols} == {
        "xnli",
        "xstorycloze",
        "mmmlu",
        "sib200",
    }
    assert BENCHMARKS["xlsum"].metrics == {"gen": "rougeL"}
    assert BENCHMARKS["xnli"].metrics == {"gen": "acc", "mc": "acc"}
    assert len(BENCHMARKS["sib200"].languages) == 22
    assert len(BENCHMARKS["mgsm"].languages) == 11
    assert BENCHMARKS["xnli"].task_name("gen", "sw") == "xnli_gen_sw"
    assert BENCHMARKS["xnli"].group_name("mc") == "xnli_mc"
    assert len(ALL_TASKS) == 145


def test_parse_task_name() -> None:
    assert catalog.parse_task_name("xnli_gen_sw") == ("xnli", "gen", "sw")
    assert catalog.parse_task_name("sib200_mc_yo") == ("sib200", "mc", "yo")
    for name in (
        "xnli_gen",
        "xnli_sw",
        "xquad_mc_en",
        "xlsum_gen_zh",
        "mgsm_direct_sw",
        "hellaswag",
        "a_b_c_d",
    ):
        assert catalog.parse_task_name(name) is None
    assert all(
        catalog.parse_task_name(BENCHMARKS[b].task_name(p, lang)) == (b, p, lang) for b, p, lang in ALL_TASKS
    )


def test_data_files_exist_for_every_language() -> None:
    for bench in BENCHMARKS.values():
        folder = "parallel/flores_sib" if bench.name == "sib200" else f"benchmarks/{bench.name}"
        assert {p.stem for p in (data_dir() / folder).glob("*.jsonl")} == set(bench.languages), bench.name


def test_item_count_matches_readme() -> None:
    for name, expected in README_COUNTS.items():
        for lang in BENCHMARKS[name].languages[:2]:
            assert catalog.item_count(name, lang) == expected


def test_unknown_names_are_harness_errors() -> None:
    with pytest.raises(HarnessError, match="did you mean 'xnli'"):
        catalog.item_count("xnl", "sw")
    with pytest.raises(HarnessError, match="unknown language for xlsum 'zh'"):
        catalog.item_count("xlsum", "zh")


def test_loader_reads_harness_data(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "benchmarks" / "mkqa"
    folder.mkdir(parents=True)
    rows = [
        {"id": i, "prompt": f"q{i}", "prompt_en": f"q{i}", "answer": ["a", "b"][: i + 1]} for i in range(2)
    ]
    (folder / "ja.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    test = utils.load_test_set(benchmark="mkqa", lang="ja", version=1.0, config_source="x")["test"]
    assert test["answer"] == [["a"], ["a", "b"]]
    assert test[0]["benchmark"] == "mkqa" and test[0]["lang"] == "ja"
    with pytest.raises(HarnessError, match="de.jsonl: file not found"):
        catalog.item_count("mkqa", "de")


def test_sib200_items_use_the_shared_template() -> None:
    items = catalog.load_items("sib200", "sw")
    assert items[0]["prompt"].startswith("What is the topic of the following sentence?\n\n")
    assert items[0]["prompt"].endswith("Topic:")
    assert {item["answer"] for item in items} == set(utils.SIB_TOPICS)


def test_generated_files_are_up_to_date() -> None:
    assert generate.stale() == [], "run `python -m tasks.generate`"


@pytest.fixture(scope="module")
def loaded() -> dict:
    """Every group of ours, loaded through lm-eval's TaskManager (builds all 145 tasks)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    groups = [b.group_name(p) for b in BENCHMARKS.values() for p in b.protocols]
    return manager.load(groups)


def test_every_task_and_group_loads(loaded: dict) -> None:
    expected = {BENCHMARKS[b].task_name(p, lang) for b, p, lang in ALL_TASKS}
    assert set(loaded["tasks"]) == expected
    assert set(loaded["groups"]) == {b.group_name(p) for b in BENCHMARKS.values() for p in b.protocols}
    for name, members in loaded["group_map"].items():
        bench, protocol = name.split("_")
        assert sorted(members) == sorted(
            BENCHMARKS[bench].task_name(protocol, lang) for lang in BENCHMARKS[bench].languages
        )


def test_lm_eval_item_counts(loaded: dict) -> None:
    for name, task in loaded["tasks"].items():
        bench, protocol, lang = catalog.parse_task_name(name)
        assert task.config.metadata["benchmark"] == bench and task.config.metadata["lang"] == lang
        assert len(task.eval_docs) == README_COUNTS[bench], name
    assert len(loaded["tasks"]["xquad_gen_th"].eval_docs) == catalog.item_count("xquad", "th")


def test_task_configs(loaded: dict) -> None:
    gen, mc = loaded["tasks"]["mkqa_gen_ja"], loaded["tasks"]["sib200_mc_yo"]
    assert gen.config.output_type == "generate_until"
    assert gen.config.generation_kwargs == {
        "until": [],
        "do_sample": False,
        "temperature": 0.0,
        "max_gen_toks": 40,
    }
    assert isinstance(gen.eval_docs[0]["answer"], list)
    doc = mc.eval_docs[0]
    assert mc.doc_to_choice(doc) == list(utils.SIB_TOPICS)
    assert mc.doc_to_choice(doc)[mc.doc_to_target(doc)] == doc["answer"]
    assert loaded["tasks"]["xlsum_gen_vi"].config.metric_list[0]["metric"] == "rougeL"
    xnli = loaded["tasks"]["xnli_mc_sw"]
    assert xnli.doc_to_text(xnli.eval_docs[0]) == xnli.eval_docs[0]["prompt"]


E2E_TASKS = ["xnli_mc_sw", "xnli_gen_sw", "xlsum_gen_hi"]


def test_tiny_model_end_to_end(caplog) -> None:
    """A random 2-layer Llama through `simple_evaluate` with the chat template, next to lm-eval's own
    tasks (no name of ours may shadow one of theirs)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tests.tiny import tiny_llama, tiny_tokenizer

    with caplog.at_level(logging.WARNING, logger="lm_eval.tasks._index"):
        manager = TaskManager(include_path=str(TASKS_DIR))
    assert "overrides existing task" not in caplog.text

    tok = tiny_tokenizer()
    model = HFLM(pretrained=tiny_llama(tok), tokenizer=tok, device="cpu", dtype="float32", batch_size=4)
    out = lm_eval.simple_evaluate(
        model=model,
        tasks=E2E_TASKS,
        limit=3,
        apply_chat_template=True,
        task_manager=manager,
        log_samples=True,
    )
    results = out["results"]
    for task, metrics in [
        ("xnli_mc_sw", ("acc", "acc_norm")),
        ("xnli_gen_sw", ("acc",)),
        ("xlsum_gen_hi", ("rougeL",)),
    ]:
        assert results[task]["sample_len"] == 3
        for metric in metrics:
            assert 0.0 <= results[task][f"{metric},none"] <= 1.0

    # mc under the chat template: the continuation is the bare label right after the assistant header
    context, continuation = out["samples"]["xnli_mc_sw"][0]["arguments"][0]
    assert context.endswith("<|im_start|>assistant\n") and continuation == "1"
    # gen: each logged metric is what `score` gives for the generated text
    for task, metric in [("xnli_gen_sw", "acc"), ("xlsum_gen_hi", "rougeL")]:
        for sample in out["samples"][task]:
            doc = sample["doc"]
            assert sample[metric] == utils.score(doc["benchmark"], doc, sample["filtered_resps"][0])

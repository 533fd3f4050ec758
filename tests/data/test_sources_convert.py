"""The converters of `harness data fetch`, on tiny inline inputs and on the fixture slices of the four
sources (tests/fixtures/sources): exact bytes, and one-line errors for malformed source files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.data.base import LANGUAGES
from harness.data.sources import convert
from harness.data.sources.manifest import load
from harness.data.sources.plan import DATASET_LANGUAGES, SOURCES, every_output, select
from harness.plumbing.errors import HarnessError
from harness.tasks.catalog import BENCHMARKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"


def build(rel: str) -> str:
    """Convert the fixture source files of one output."""
    output = every_output()[rel]
    return output.build([(p, (FIXTURES / output.source.name / p).read_bytes()) for p in output.inputs])


def test_cc_tuning_rows_pair_item_i_of_every_file() -> None:
    prompts = '{"instruction": "Swali la kwanza\\nJibu:"}\n{"instruction": "Ζ\u2028 ya pili"}\n'.encode()
    english = b'{"instruction": "First question\\nAnswer:"}\n{"instruction": "Second"}\n'
    answers = '"1"\n["Nairobi", "東京"]\n'.encode()
    out = convert.cc_tuning([("p", prompts), ("e", english), ("a", answers)])
    assert out == (
        '{"id": 0, "prompt": "Swali la kwanza\\nJibu:", "prompt_en": "First question\\nAnswer:", "answer": "1"}\n'
        '{"id": 1, "prompt": "Ζ\u2028 ya pili", "prompt_en": "Second", "answer": ["Nairobi", "東京"]}\n'
    )


def test_mgsm_rows_and_exemplars() -> None:
    out = convert.mgsm([("sw", b"Swali moja?\t18\nSwali mbili?\t3\n"), ("en", b"One?\t18\nTwo?\t3\n")])
    assert out == (
        '{"id": 0, "prompt": "Swali moja?", "prompt_en": "One?", "answer": "18"}\n'
        '{"id": 1, "prompt": "Swali mbili?", "prompt_en": "Two?", "answer": "3"}\n'
    )
    source = 'X = [1]\nMGSM_EXEMPLARS = {\n  "sw": {"1": {"q": "Swali: "\n "\\u00e9?", "a": "Jibu",},},\n}\n'
    assert convert.mgsm_exemplars([("ex.py", source.encode())]) == (
        '{\n "sw": {\n  "1": {\n   "q": "Swali: é?",\n   "a": "Jibu"\n  }\n }\n}'
    )


def test_flores_sib_sorts_by_index_and_takes_english_by_id() -> None:
    head = b"index_id\tcategory\ttext\n"
    sw = [head + b"7\thealth\tAfya\n2\tsports\tMichezo\n", head + b"5\ttravel\tSafari\n", head]
    en = [head + b"2\tsports\tSports\n", head + b"7\thealth\tHealth\n", head + b"5\ttravel\tTravel\n"]
    out = convert.flores_sib([(f"f{i}", b) for i, b in enumerate(sw + en)])
    assert out == (
        '{"id": 2, "split": "train", "topic": "sports", "text": "Michezo", "text_en": "Sports"}\n'
        '{"id": 5, "split": "dev", "topic": "travel", "text": "Safari", "text_en": "Travel"}\n'
        '{"id": 7, "split": "train", "topic": "health", "text": "Afya", "text_en": "Health"}\n'
    )


def test_ntrex_reads_crlf_lines() -> None:
    out = convert.ntrex([("sw", b"Habari\r\nNdiyo \r\n"), ("en", b"News\r\nYes\r\n")])
    assert (
        out
        == '{"id": 0, "text": "Habari", "text_en": "News"}\n{"id": 1, "text": "Ndiyo ", "text_en": "Yes"}\n'
    )


def test_fixture_ntrex_swahili_exact_bytes() -> None:
    assert build("parallel/ntrex/sw.jsonl") == (
        '{"id": 0, "text": "Wajumbe wa Baraza la Wales wana wasiwasi kuhusu \'kuonekana kama vikaragosi\'", '
        '"text_en": "Welsh AMs worried about \'looking like muppets\'"}\n'
        '{"id": 1, "text": "Kuna wasiwasi miongoni mwa baadhi ya wajumbe baada ya pendekezo kuwa cheo chao '
        'kinapaswa kubadilishwa kuwa MWP (Mjumbe wa Bunge la Wales).", "text_en": "There is consternation among '
        'some AMs at a suggestion their title should change to MWPs (Member of the Welsh Parliament)."}\n'
        '{"id": 2, "text": "Hii imetokana na mpango wa kubadilisha jina la baraza kuwa Bunge la Wales.", '
        '"text_en": "It has arisen because of plans to change the name of the assembly to the Welsh Parliament."}\n'
    )


def test_fixture_outputs_as_the_real_ones_are_made() -> None:
    """The fields, ids and pairing of each format on the fixture slices (the full sources give the shared
    data byte for byte: checked by hand with `harness data fetch --from`, see docs/data.md)."""
    xnli = [json.loads(line) for line in build("benchmarks/xnli/sw.jsonl").splitlines()]
    assert [list(r) for r in xnli] == [["id", "prompt", "prompt_en", "answer"]] * 3
    assert [r["id"] for r in xnli] == [0, 1, 2] and xnli[0]["prompt_en"].startswith("Premise:")
    assert xnli[0]["prompt"].startswith("Nguzo:") and xnli[0]["answer"] == "1"
    xlsum = [json.loads(line) for line in build("benchmarks/xlsum/sw.jsonl").splitlines()]
    assert xlsum[0]["prompt_en"].startswith("Please summarize")
    mkqa = json.loads(build("benchmarks/mkqa/zh.jsonl").splitlines()[0])
    assert isinstance(mkqa["answer"], list) and mkqa["prompt_en"].startswith(
        "Please answer the following question."
    )
    sib = [json.loads(line) for line in build("parallel/flores_sib/sw.jsonl").splitlines()]
    assert [r["id"] for r in sib] == sorted(r["id"] for r in sib) and len(sib) == 9
    assert {r["split"] for r in sib} == {"train", "dev", "test"} and sib[0]["text_en"] != sib[0]["text"]
    exemplars = json.loads(build("benchmarks/mgsm/exemplars.json"))
    assert list(exemplars) == ["en", "sw", "zh"] and exemplars["zh"]["1"]["q"].startswith("问题：")
    assert not build("benchmarks/mgsm/exemplars.json").endswith("\n")


def test_fixture_outputs_match_the_fixture_manifest() -> None:
    manifest = load(FIXTURES / "manifest.json")
    for rel, entry in manifest.files.items():
        data = build(rel).encode("utf-8")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"]), rel


@pytest.mark.parametrize(
    "fn,inputs,message",
    [
        (convert.cc_tuning, [("p.json", b'{"instruction": "a"}\n{"instruction": "b"}\n'),
                             ("e.json", b'{"instruction": "a"}\n'), ("a.json", b'"1"\n"2"\n')],
         "source files differ in length (p.json: 2, e.json: 1, a.json: 2); they must hold the same items in order"),
        (convert.cc_tuning, [("p.json", b'{"instruction": "a"}\n{"oops"\n'), ("e.json", b""), ("a.json", b"")],
         "p.json:2: malformed JSON: Expecting ':' delimiter (column 8)"),
        (convert.cc_tuning, [("p.json", b'{"text": "a"}\n'), ("e.json", b""), ("a.json", b"")],
         'p.json:1: expected an object with a string "instruction"'),
        (convert.mgsm, [("m.tsv", b"q\t1\nno tab\n"), ("e.tsv", b"q\t1\n")],
         "m.tsv:2: expected 2 tab-separated fields, got 1"),
        (convert.mgsm, [("m.tsv", b"q\xff\t1\n"), ("e.tsv", b"q\t1\n")],
         "m.tsv:1: not valid UTF-8 (byte 1); expected the source file as published"),
        (convert.mgsm_exemplars, [("ex.py", b"OTHER = {}\n")], "ex.py: no MGSM_EXEMPLARS assignment"),
        (convert.mgsm_exemplars, [("ex.py", b"MGSM_EXEMPLARS = make()\n")],
         "ex.py:1: MGSM_EXEMPLARS is not a plain literal"),
        (convert.flores_sib, [("t.tsv", b"id\ttopic\ttext\n")] + [("x", b"")] * 5,
         "t.tsv:1: expected the header index_id / category / text"),
    ],
)  # fmt: skip
def test_malformed_sources_give_one_line_errors(fn, inputs, message) -> None:
    with pytest.raises(HarnessError) as e:
        fn(inputs)
    assert str(e.value) == message


def test_datasets_are_the_catalog_benchmarks_plus_ntrex() -> None:
    expected = {name: b.languages for name, b in BENCHMARKS.items()} | {"ntrex": LANGUAGES}
    assert {k: tuple(v) for k, v in DATASET_LANGUAGES.items()} == {k: tuple(v) for k, v in expected.items()}


def test_the_shipped_manifest_lists_every_output_and_the_pinned_sources() -> None:
    manifest = load()
    assert sorted(manifest.files) == sorted(every_output()) and len(manifest.files) == 116
    assert {name: s["commit"] for name, s in manifest.sources.items()} == {
        n: s.commit for n, s in SOURCES.items()
    }
    assert all(len(s.commit) == 40 for s in SOURCES.values())


def test_select_subsets_and_names() -> None:
    paths = [o.path for o in select(["mgsm", "ntrex"], ["sw", "yo"])]
    assert paths == ["benchmarks/mgsm/exemplars.json", "benchmarks/mgsm/sw.jsonl", "parallel/ntrex/sw.jsonl",
                     "parallel/ntrex/yo.jsonl"]  # fmt: skip
    with pytest.raises(
        HarnessError, match=r"^unknown benchmark 'xnl' in --benchmarks \(did you mean 'xnli'\?\)"
    ):
        select(["xnl"])
    with pytest.raises(HarnessError, match=r"^unknown language 'zz' in --langs; valid: ar, bn"):
        select(None, ["zz"])
    with pytest.raises(HarnessError, match=r"^nothing to fetch: xnli has none of the languages yo; "):
        select(["xnli"], ["yo"])

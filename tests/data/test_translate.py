"""`harness translate`: language codes, batching, the resumable cache, line-by-line lookups, the CLI.

Fast: a tiny randomly initialised NLLB-style model (M2M100 architecture, hidden size 16) with an
`NllbTokenizer` built from a BPE trained on a few sentences, saved to a temporary folder: its output
is junk, the plumbing around it is what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

from harness.cli import main
from harness.data.base import LANGUAGES, Example
from harness.data.translate import (
    M2M100,
    MARIAN_MULTI,
    NLLB,
    NLLB_CODES,
    SINGLE_PAIR,
    ResumableJsonl,
    Translations,
    Translator,
    Unit,
    detect_convention,
    language_code,
    text_sha,
    translate_units,
    units_for,
)
from harness.plumbing.errors import HarnessError

CORPUS = [
    "What is the topic of the following sentence?",
    "Translate the following sentence into English.",
    "Mnamo Jumatatu, wanasayansi walitangaza uvumbuzi.",
    "On Monday, scientists announced the invention.",
]



@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory) -> Path:
    """A tiny random NLLB-style translation model and its tokenizer (the 202 FLORES-200 codes)."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    bpe.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(vocab_size=150, special_tokens=special,
                                                                show_progress=False))  # fmt: skip
    spec = json.loads(bpe.to_str())["model"]
    tokenizer = NllbTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])
    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config).eval()
    with torch.no_grad():  # no special or language token wins the argmax: decoded outputs are not empty
        model.model.shared.weight[len(spec["vocab"]) :] = 0
        model.model.shared.weight[:4] = 0
    folder = tmp_path_factory.mktemp("nllb")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Calls:
    """Wraps `translator.model.generate`: counts the calls and keeps their inputs; can fail on call N."""

    def __init__(self, translator: Translator, fail_on: int | None = None) -> None:
        self.inputs: list[dict] = []
        self.fail_on = fail_on
        original = translator.model.generate

        def generate(**kwargs):
            self.inputs.append(kwargs)
            if self.fail_on is not None and len(self.inputs) == self.fail_on:
                raise KeyboardInterrupt("killed")
            return original(**kwargs)

        translator.model.generate = generate

    def __len__(self) -> int:
        return len(self.inputs)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- language codes -------------------------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, vocab: list[str], supported: list[str] | None = None) -> None:
        self._vocab = {t: i for i, t in enumerate(vocab)}
        if supported is not None:
            self.supported_language_codes = supported

    def get_vocab(self) -> dict[str, int]:
        return self._vocab


def test_nllb_codes_cover_every_language_and_exist_in_nllb() -> None:
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    assert sorted(NLLB_CODES) == sorted(LANGUAGES)
    assert set(NLLB_CODES.values()) <= set(FAIRSEQ_LANGUAGE_CODES)
    assert (
        NLLB_CODES["sw"] == "swh_Latn" and NLLB_CODES["zh"] == "zho_Hans" and NLLB_CODES["ar"] == "arb_Arab"
    )


def test_conventions_and_codes_per_model_family(nllb_dir: Path) -> None:
    from transformers import AutoTokenizer

    nllb = AutoTokenizer.from_pretrained(nllb_dir)
    assert detect_convention(nllb) == NLLB
    assert language_code(NLLB, "sw", nllb) == "swh_Latn"

    m2m = FakeTokenizer(["<s>", "__en__", "__sw__", "__yo__"])
    assert detect_convention(m2m) == M2M100
    assert language_code(M2M100, "sw", m2m) == "sw"
    with pytest.raises(HarnessError, match="no code for 'eu'.*__eu__"):
        language_code(M2M100, "eu", m2m)  # M2M100 has no Basque

    marian = FakeTokenizer(
        ["<s>", ">>swh<<", ">>fra<<", ">>cmn_Hans<<"], [">>swh<<", ">>fra<<", ">>cmn_Hans<<"]
    )
    assert detect_convention(marian) == MARIAN_MULTI
    assert [language_code(MARIAN_MULTI, lang, marian) for lang in ("sw", "fr", "zh")] == [
        ">>swh<<",
        ">>fra<<",
        ">>cmn_Hans<<",
    ]
    with pytest.raises(HarnessError, match="no code for 'yo'"):
        language_code(MARIAN_MULTI, "yo", marian)

    assert detect_convention(FakeTokenizer(["<s>", "hello"])) == SINGLE_PAIR
    assert language_code(SINGLE_PAIR, "sw", None) == "sw"


class RecordingTokenizer(FakeTokenizer):
    """Records what it encodes; M2M100-like `get_lang_id` when `lang_ids` is given."""

    def __init__(
        self, vocab: list[str], supported: list[str] | None = None, lang_ids: dict | None = None
    ) -> None:
        super().__init__(vocab, supported)
        self.src_lang = None
        self.encoded: list[str] = []
        if lang_ids is not None:
            self.get_lang_id = lang_ids.__getitem__

    def __call__(self, texts, **kwargs):
        self.encoded = list(texts)
        return {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long)}


def _bare_translator(tokenizer, convention: str) -> Translator:
    translator = object.__new__(Translator)  # no model: only the input side is tested
    translator.tokenizer, translator.convention, translator.device = tokenizer, convention, "cpu"
    translator.max_input_tokens = 64
    return translator


def test_inputs_select_languages_the_way_each_model_family_expects() -> None:
    m2m = RecordingTokenizer(["<s>", "__en__", "__sw__"], lang_ids={"en": 128022, "sw": 128088})
    _, extra = _bare_translator(m2m, M2M100)._inputs(["Hello"], "en", "sw")
    assert m2m.src_lang == "en" and extra == {"forced_bos_token_id": 128088} and m2m.encoded == ["Hello"]

    marian = RecordingTokenizer([">>swh<<", ">>fra<<"], supported=[">>swh<<", ">>fra<<"])
    _, extra = _bare_translator(marian, MARIAN_MULTI)._inputs(["Hello", "Bye"], "en", "sw")
    assert extra == {} and marian.encoded == [">>swh<< Hello", ">>swh<< Bye"] and marian.src_lang is None

    pair = RecordingTokenizer(["hello"])
    _, extra = _bare_translator(pair, SINGLE_PAIR)._inputs(["Hello"], "en", "sw")
    assert extra == {} and pair.encoded == ["Hello"]


def test_a_one_pair_model_refuses_several_pairs(nllb_dir: Path) -> None:
    translator = Translator(str(nllb_dir), max_new_tokens=3)
    translator.convention = SINGLE_PAIR
    translator.check([("en", "sw"), ("en", "sw")])
    with pytest.raises(HarnessError, match="one fixed language pair.*en->sw, en->yo"):
        translator.check([("en", "sw"), ("en", "yo")])


# --- batching, caching, resuming ------------------------------------------------------------------


def test_batches_per_language_pair_with_the_right_codes_and_caches(tmp_path: Path, nllb_dir: Path) -> None:
    translator = Translator(str(nllb_dir), max_new_tokens=4)
    calls = Calls(translator)
    english = [f"sentence number {i}" for i in range(5)]
    units = [Unit(t, "en", "sw") for t in english] + [
        Unit("Mnamo Jumatatu", "sw", "en"),
        Unit("wanasayansi", "sw", "en"),
    ]
    out = tmp_path / "tr.jsonl"
    stats = translate_units(units + units[:2], translator, out, batch_size=2)  # duplicates are asked once
    assert stats.to_dict() == {
        "units": 7,
        "cached": 0,
        "translated": 7,
        "batches": 4,
    }  # 5 en->sw: 3, 2 sw->en: 1
    assert len(calls) == 4 and [len(c["input_ids"]) for c in calls.inputs] == [
        2,
        2,
        1,
        2,
    ]  # pairs sorted: en->sw first

    tok = translator.tokenizer
    eng, swh = tok.convert_tokens_to_ids("eng_Latn"), tok.convert_tokens_to_ids("swh_Latn")
    for call, (src, tgt) in zip(calls.inputs, [(eng, swh)] * 3 + [(swh, eng)], strict=True):
        assert call["forced_bos_token_id"] == tgt  # the first generated token names the target language
        assert call["input_ids"][:, 0].tolist() == [src] * len(call["input_ids"])  # the source code leads

    rows = _rows(out)
    assert len(rows) == 7 and len({r["key"] for r in rows}) == 7
    assert {(r["src"], r["tgt"]) for r in rows} == {("en", "sw"), ("sw", "en")}
    for row in rows:
        assert row["sha"] == text_sha(row["text"]) and row["model"] == str(nllb_dir)
        assert row["key"] == f"{nllb_dir}\t{row['src']}\t{row['tgt']}\t{row['sha']}"
        assert isinstance(row["translation"], str) and row["translation"]
    assert {r["text"] for r in rows if r["src"] == "en"} == set(english)

    again = translate_units(units, translator, out, batch_size=2)
    assert again.to_dict() == {"units": 7, "cached": 7, "translated": 0, "batches": 0} and len(calls) == 4
    more = translate_units([*units, Unit("sentence number 9", "en", "yo")], translator, out, batch_size=2)
    assert (more.cached, more.translated, len(calls)) == (7, 1, 5)
    assert calls.inputs[-1]["forced_bos_token_id"] == tok.convert_tokens_to_ids("yor_Latn")


def test_resumes_after_a_kill_and_ignores_a_torn_last_line(tmp_path: Path, nllb_dir: Path) -> None:
    units = [Unit(f"sentence number {i}", "en", "sw") for i in range(6)]
    out = tmp_path / "tr.jsonl"
    translator = Translator(str(nllb_dir), max_new_tokens=4)
    killed = Calls(translator, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        translate_units(units, translator, out, batch_size=2)
    assert len(killed) == 2 and len(_rows(out)) == 2  # the first batch was flushed
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"key": "half a row')  # a write cut short by the kill
    assert len(ResumableJsonl(out)) == 2

    translator = Translator(str(nllb_dir), max_new_tokens=4)
    calls = Calls(translator)
    stats = translate_units(units, translator, out, batch_size=2)
    assert (stats.cached, stats.translated, len(calls)) == (2, 4, 2)
    rows = _rows(out)  # every line is valid JSON again: the torn line was cut before appending
    assert len(rows) == 6 and {r["text"] for r in rows} == {u.text for u in units}

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1}\nnot json\n{"key": 2}\n', encoding="utf-8")
    with pytest.raises(HarnessError, match=r"bad.jsonl:2: malformed cache row"):
        ResumableJsonl(bad)


def test_an_unterminated_last_row_is_kept_and_ended(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}', encoding="utf-8")
    cache = ResumableJsonl(path)
    assert sorted(cache.rows) == ["a", "b"]
    cache.append([{"key": "c", "v": 3}])
    assert [r["key"] for r in _rows(path)] == ["a", "b", "c"]


# --- what is translated and how it is read back ---------------------------------------------------


def test_units_line_by_line_and_source_language_choice() -> None:
    examples = [
        Example("1", "sw", "Swali?\n\nMnamo Jumatatu", "3", "Question?\n\nOn Monday"),
        Example("2", "en", "Question?\n\nHello", "1", "Question?\n\nHello"),
        Example("3", "yo", "Ibeere?\n\nEkaaro", "2", None),
    ]
    auto = units_for(examples, ["sw", "en"])
    assert auto == [
        Unit("Swali?", "sw", "en"), Unit("Mnamo Jumatatu", "sw", "en"),
        Unit("Question?", "en", "sw"), Unit("Hello", "en", "sw"),
        Unit("Ibeere?", "yo", "sw"), Unit("Ekaaro", "yo", "sw"), Unit("Ibeere?", "yo", "en"), Unit("Ekaaro", "yo", "en"),
    ]  # fmt: skip
    english = units_for(examples, ["yo"], src_lang="en", by_line=False)
    assert english == [Unit("Question?\n\nOn Monday", "en", "yo"), Unit("Question?\n\nHello", "en", "yo")]
    assert units_for(examples, ["en"], src_lang="yo") == [
        Unit("Ibeere?", "yo", "en"),
        Unit("Ekaaro", "yo", "en"),
    ]


def test_translations_put_multi_line_texts_back_together() -> None:
    def row(text: str, translation: str, src: str = "en", tgt: str = "sw") -> dict:
        return {"key": text, "model": "m", "src": src, "tgt": tgt, "sha": text_sha(text), "text": text,
                "translation": translation}  # fmt: skip

    translations = Translations([row("Question?", "Swali?"), row("Hello", "Habari"), row("Bye", ""),
                                 row("Question?\n\nHello", "Whole text")])  # fmt: skip
    assert translations.get("Question?\n\nHello", "en", "sw") == "Whole text"  # a whole-text row comes first
    assert translations.get("Hello\n\n  Question?  \n", "en", "sw") == "Habari\n\nSwali?\n"
    assert translations.get("Question?\nBye", "en", "sw") is None  # an empty translation is missing
    assert (
        translations.get("Question?", "en", "yo") is None
        and translations.get("Question?", "sw", "en") is None
    )


# --- the command ----------------------------------------------------------------------------------


def test_cli_translates_a_recipe_then_reuses_the_file(
    tmp_path: Path, nllb_dir: Path, monkeypatch, capsys
) -> None:
    data = tmp_path / "train.jsonl"
    rows = [
        {"id": "a", "lang": "en", "instruction": "Question?\n\nHello", "output": "1"},
        {"id": "b", "lang": "sw", "instruction": "Swali?\n\nHabari", "output": "1", "instruction_en": "Question?\n\nHello"},
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "translations.jsonl"
    args = ["translate", "--model", str(nllb_dir), "--recipe", "jsonl", "--recipe-path", str(data),
            "--tgt-lang", "sw,yo", "--out", str(out), "--train-limit", "all", "--batch-size", "3",
            "--max-new-tokens", "3"]  # fmt: skip
    assert main(args) == 0
    assert (
        "6 texts: 0 cached, 6 translated in 3 batches" in capsys.readouterr().out
    )  # en->sw 2, en->yo 2, sw->yo 2
    translations = Translations.load(out)
    assert translations.get("Question?\n\nHello", "en", "yo") is not None
    assert translations.get("Swali?\n\nHabari", "sw", "yo") is not None
    assert translations.get("Swali?\n\nHabari", "sw", "en") is None  # en was not a target

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when everything is cached")

    monkeypatch.setattr("harness.data.translate.Translator", no_model)
    assert main(args) == 0
    assert "6 texts: 6 cached, 0 translated in 0 batches" in capsys.readouterr().out

    monkeypatch.undo()
    assert main([a if a != "sw,yo" else "xx" for a in args]) == 2
    assert "unknown language 'xx' in --tgt-lang" in capsys.readouterr().err
    assert main(["translate", "--model", str(tmp_path / "nope"), "--recipe", "jsonl", "--recipe-path", str(data),
                 "--tgt-lang", "yo", "--out", str(tmp_path / "o.jsonl")]) == 2  # fmt: skip
    assert "no such folder" in capsys.readouterr().err

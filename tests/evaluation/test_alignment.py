"""Representation alignment with English (`harness.evaluation.alignment`): the metrics on constructed vectors
whose answer is known, the model part on the tiny random model (shapes, batching, the sentence's tokens), the
run store (resumable per language, recomputed when the key changes), CC-Tuning's W_T view through the method
protocol, and the commands (`harness analyze`, `harness run --analyze`)."""

from __future__ import annotations

import json
import math
import shutil
import signal

import numpy as np
import pytest
import torch

from harness.core.config import RunConfig
from harness.evaluation import alignment
from harness.evaluation.alignment import (
    alignment_metrics,
    analyze_run,
    encode_sentence,
    hidden_representations,
    pair_metrics,
    parallel_sentences,
    read_alignment,
)
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json, atomic_write_yaml
from tests.tiny import tiny_llama, tiny_tokenizer

# -- the metrics on constructed vectors ------------------------------------------------------------


def orthonormal(n: int, d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, n)))
    return q.T  # (n, d), orthonormal rows


def test_identical_vectors_align_perfectly():
    e = orthonormal(6, 10)
    m = pair_metrics(e * 3.0, e)  # cosine ignores the scale
    assert m["parallel"] == pytest.approx(1.0)
    assert m["nonparallel"] == pytest.approx(0.0, abs=1e-12)  # orthogonal rows
    assert m["retrieval"] == 1.0


def test_a_derangement_retrieves_nothing():
    e = orthonormal(5, 8)
    x = e[[1, 2, 3, 4, 0]]  # each sentence is exactly another's English
    m = pair_metrics(x, e)
    assert m["parallel"] == pytest.approx(0.0, abs=1e-12)
    assert m["nonparallel"] == pytest.approx(1 / 4)  # one cosine of 1 among the 4 others of each row
    assert m["retrieval"] == 0.0


def test_known_angle_and_partial_retrieval():
    n, theta = 4, 0.3
    basis = orthonormal(2 * n, 12, seed=1)
    e, u = basis[:n], basis[n:]
    x = math.cos(theta) * e + math.sin(theta) * u  # cos(x_i, e_i) = cos(theta), cos(x_i, e_j) = 0
    m = pair_metrics(x, e)
    assert m["parallel"] == pytest.approx(math.cos(theta))
    assert m["nonparallel"] == pytest.approx(0.0, abs=1e-12)
    assert m["retrieval"] == 1.0
    x[:2] = e[[1, 0]]  # two sentences swapped: half retrieve their own English
    assert pair_metrics(x, e)["retrieval"] == 0.5


def test_centering_removes_a_language_offset():
    basis = orthonormal(5, 10, seed=2)
    e, offset = basis[:4], basis[4]
    x = e + 3.0 * offset  # the same sentences, shifted by what every sentence of the language shares
    m = alignment_metrics(x[:, None], e[:, None])
    assert m["parallel"][0] == pytest.approx(1 / math.sqrt(10))  # 1 / |e_i + 3c|
    assert m["centered_parallel"][0] == pytest.approx(1.0) and m["centered_retrieval"] == [1.0]
    assert m["centered_nonparallel"][0] == pytest.approx(-1 / 3)  # centered rows of 4 sum to zero


def test_metrics_per_layer_and_bad_shapes():
    e = orthonormal(4, 6)
    x = np.stack([e, e[[1, 2, 3, 0]], -e], axis=1)  # (4, 3 layers, 6)
    m = alignment_metrics(x, np.stack([e, e, e], axis=1))
    assert m["retrieval"] == [1.0, 0.0, 0.0]
    assert m["parallel"] == pytest.approx([1.0, 0.0, -1.0], abs=1e-12)
    with pytest.raises(ValueError):
        alignment_metrics(x, x[:3])
    assert math.isnan(pair_metrics(e[:1], e[:1])["nonparallel"])  # one sentence: no non-parallel pair


# -- the model part --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_the_sentence_tokens_and_the_rst(tok):
    sentence = "What is the topic of the following sentence? sports"
    enc = encode_sentence(tok, sentence)
    assert tok.decode(enc.ids[enc.first : enc.end]) == sentence
    assert enc.rst == len(enc.ids) - 1 and enc.end < enc.rst  # the template follows the sentence
    assert tok.decode(enc.ids[enc.rst :]) == "\n"  # "<|im_start|>assistant\n": its last token


def test_batches_bound_rows_and_padded_tokens():
    from harness.evaluation.alignment import batches

    assert batches([50, 40, 30, 20, 10], batch_size=2, max_tokens=1000) == [[0, 1], [2, 3], [4]]
    assert batches([600, 300, 100, 90, 80], batch_size=16, max_tokens=700) == [[0], [1, 2], [3, 4]]
    assert batches([900, 10], batch_size=4, max_tokens=500) == [[0], [1]]  # too long alone: still one batch


def test_hidden_representations_shapes_and_batching(tok):
    model = tiny_llama(tok)
    texts = [
        "Jibu lako litakuwa",
        "你的答案是：蕴涵 中立 矛盾。",
        "Please answer the following question please",
    ]
    one = hidden_representations(model, tok, texts, batch_size=1)
    batched = hidden_representations(model, tok, texts, batch_size=3)  # right padding must change nothing
    assert set(one) == {"rst", "mean"}
    for name in one:
        assert one[name].shape == (3, model.config.num_hidden_layers + 1, model.config.hidden_size)
        np.testing.assert_allclose(one[name], batched[name], atol=1e-5)
    enc = encode_sentence(tok, texts[1])
    with torch.no_grad():
        states = model.model(input_ids=torch.tensor([enc.ids]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(one["rst"][1, 2], states[2][0, -1].numpy(), atol=1e-5)
    np.testing.assert_allclose(
        one["mean"][1, 0], states[0][0, enc.first : enc.end].mean(0).numpy(), atol=1e-5
    )


# -- the run store ---------------------------------------------------------------------------------


def needs_data():
    try:
        parallel_sentences(["sw"], 2)
    except HarnessError as e:
        pytest.skip(str(e))


def make_run(root, tiny_dir, method: str = "vanilla", cc_transform: torch.Tensor | None = None):
    cfg = RunConfig(method=method, model=str(tiny_dir), method_options={})
    run = root / cfg.run_id
    run.mkdir(parents=True)
    atomic_write_yaml(run / "config.yaml", {"run_id": cfg.run_id, "command": "harness run", **cfg.to_dict()})
    atomic_write_json(run / "status.json", {"phase": "complete"})
    if method != "none":
        shutil.copytree(tiny_dir, run / "model")
    if cc_transform is not None:
        from harness.methods.cc.transform import CCWeights, save_cc

        save_cc(run / "model", CCWeights(torch.zeros(2, 32), cc_transform, options={"rst": "last"}))
    return run


@pytest.fixture
def counted(monkeypatch):
    """How many sentences go through the model per call of `hidden_representations`."""
    calls: list[int] = []
    real = alignment.hidden_representations

    def counting(model, tokenizer, sentences, *args, **kwargs):
        calls.append(len(sentences))
        return real(model, tokenizer, sentences, *args, **kwargs)

    monkeypatch.setattr(alignment, "hidden_representations", counting)
    return calls


def test_analyze_run_is_stored_and_resumes_per_language(tmp_path, tiny_dir, monkeypatch, counted):
    needs_data()
    run = make_run(tmp_path, tiny_dir)
    monkeypatch.setenv(faults.ENV, "interrupt@alignment_language#1")
    monkeypatch.setattr(faults, "_hits", faults.Counter())
    # Python's Ctrl-C handler, also where the suite was started with SIGINT ignored (`nohup`, `cmd &`)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # as a Ctrl-C right after the first language is stored
            analyze_run(run, sentences=4, langs=["sw", "yo", "zh"], batch_size=2, progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    partial = read_alignment(run)
    assert list(partial["languages"]) == ["sw"] and counted == [4, 4]  # English, then Swahili
    monkeypatch.delenv(faults.ENV)
    outcome = analyze_run(run, sentences=4, langs=["sw", "yo", "zh"], batch_size=2, progress=False)
    assert outcome.computed == ["yo", "zh"] and outcome.reused == ["sw"]
    assert counted == [4, 4, 4, 4, 4]  # English again, then only the two missing languages
    doc = json.loads((run / "analysis" / "alignment.json").read_text(encoding="utf-8"))
    assert doc["languages"]["sw"] == partial["languages"]["sw"]  # kept, not recomputed
    assert doc["layers"] == {"rst": [0, 1, 2], "mean": [0, 1, 2]} and len(doc["ids"]) == 4
    for entry in doc["languages"].values():
        assert all(
            len(entry[p][m]) == 3 for p in ("rst", "mean") for m in ("parallel", "nonparallel", "retrieval")
        )
    again = analyze_run(run, sentences=4, langs=["zh"], progress=False)  # nothing missing: no model is loaded
    assert again.computed == [] and len(counted) == 5
    other = analyze_run(run, sentences=3, langs=["zh"], progress=False)  # another N: another key, recomputed
    assert other.computed == ["zh"] and list(read_alignment(run)["languages"]) == ["zh"]


def test_analyze_refuses_a_run_without_its_model(tmp_path, tiny_dir):
    needs_data()
    run = make_run(tmp_path, tiny_dir)
    shutil.rmtree(run / "model")
    with pytest.raises(HarnessError, match="no trained model yet"):
        analyze_run(run, sentences=2, langs=["sw"], progress=False)
    with pytest.raises(HarnessError, match="at least 2"):
        parallel_sentences(["sw"], 1)
    with pytest.raises(HarnessError, match="303 held-out"):
        parallel_sentences(["sw"], 10_000)


def test_the_w_t_view_of_a_cc_checkpoint(tmp_path, tiny_dir, tok):
    needs_data()
    from harness.core.method import METHODS
    from harness.methods.cc.transform import collect_activations

    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    run = make_run(tmp_path, tiny_dir, method="cc", cc_transform=w)
    views = METHODS.get("cc")().alignment_views(str(run / "model"))
    model = tiny_llama(tok)
    texts = ["Jibu lako litakuwa", "Inajumuisha, Kupingana", "Jibu lako ni sahihi kabisa"]
    out = views(model, tok, texts, "sw", 2)  # two batches, by length
    ffn = collect_activations(model, tok, texts)
    torch.testing.assert_close(out["ffn"], ffn)
    torch.testing.assert_close(out["ffn+W_T"], ffn @ w)  # non-English: mapped by W_T
    torch.testing.assert_close(views(model, tok, texts, "en", 2)["ffn+W_T"], ffn)  # English: as it is
    assert METHODS.get("vanilla")().alignment_views(str(run / "model")) is None
    doc = analyze_run(run, sentences=3, langs=["sw"], progress=False).doc
    assert doc["layers"]["ffn"] == doc["layers"]["ffn+W_T"] == [1, 2]  # decoder layer l's output: index l + 1
    assert set(doc["languages"]["sw"]) == {"rst", "mean", "ffn", "ffn+W_T", "seconds"}
    assert "W_T" in doc["descriptions"]["ffn+W_T"]


# -- the commands ----------------------------------------------------------------------------------


def test_harness_analyze_command(tmp_path, tiny_dir, capsys):
    needs_data()
    from harness.cli import main

    make_run(tmp_path, tiny_dir)
    failed = make_run(tmp_path, tiny_dir, method="none")
    (failed / "config.yaml").write_text(
        (failed / "config.yaml").read_text().replace(str(tiny_dir), str(tmp_path / "gone"))
    )
    assert main(["analyze", str(tmp_path), "--sentences", "3", "--langs", "sw,yo", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 sentences x 2 languages (2 computed, 0 reused)" in out and "retrieval best at layer" in out
    assert main(["analyze", str(tmp_path), "--langs", "xx"]) == 2
    assert "xx" in capsys.readouterr().err


def test_harness_run_analyze_flag_analyzes_the_runs_without_changing_them(tmp_path, monkeypatch):
    from harness.cli import main, run
    from harness.orchestration.options import RunOptions, plan_runs

    class Done:
        def __init__(self, planned):
            self.id, self.dir = planned.config.run_id, tmp_path / planned.config.run_id

    seen: dict[str, list] = {}
    monkeypatch.setattr(run, "execute_all", lambda planned, output, command: [Done(p) for p in planned])
    monkeypatch.setattr(run, "run_table", lambda dirs, tasks: "")
    monkeypatch.setattr(run, "analyze_runs", lambda dirs, **kw: seen.setdefault("dirs", list(dirs)))
    argv = ["run", "--method", "none", "--tasks", "sib200_mc", "--langs", "sw", "--model", "x/y"]
    assert main([*argv, "--analyze"]) == 0
    ids = [p.config.run_id for p in plan_runs(RunOptions.parse({"method": "none", "model": "x/y"}))]
    assert seen["dirs"] == [str(tmp_path / i) for i in ids]  # the same run ids as without --analyze
    seen.clear()
    assert main(argv) == 0 and not seen

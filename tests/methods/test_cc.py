"""CC-Tuning: hooks, training step, transform matrix, CC inference with key/value reuse, the `cc` method.

Fast: tiny random models (hidden 32, 3 layers) of five architectures and the byte-level BPE tokenizer
with a ChatML template of `tests/tiny.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
)

from harness.data.base import Example
from harness.data.chat import encode_prompt, format_prompt
from harness.training.settings import TrainContext, TrainSettings
from harness.training.trainer import pad_collate
from methods.cc import CCTuning
from methods.cc.hooks import CCHooks, decoder_layers
from methods.cc.model import CCModel, CCOptions, decide, fuse_vector
from methods.cc.pairs import Pair, pairs_from_examples, sample_pairs
from methods.cc.transform import (
    CCWeights,
    collect_activations,
    fit_transform,
    fit_transform_matrix,
    load_cc,
    refit_checkpoint,
    save_cc,
    transform_mse,
)
from tests.tiny import tiny_tokenizer

EXAMPLES = [
    Example("1", "fr", "traduis le chat noir", "the black cat", "translate the black cat"),
    Example("2", "de", "übersetze den großen hund bitte", "the big dog", "translate the big dog please"),
    Example("3", "en", "name a colour", "blue", "name a colour"),
    Example("4", "fr", "dis bonjour au monde entier", "hello whole world", "say hello to the whole world"),
    Example("5", "de", "zähle bis drei", "one two three", "count to three"),
    Example("6", "fr", "quelle est la capitale", "paris", "what is the capital"),
]

ARCHS = ["llama", "qwen2", "gpt2", "gemma", "gemma3"]



@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def make_config(arch: str, vocab: int, layers: int = 3):
    ids = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 2}  # as in tests.tiny
    common = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers}
    common |= {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **ids}
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "gemma":
        return GemmaConfig(**common, head_dim=8)
    if arch == "gemma3":  # sliding-window attention (window 4 < prompt length) and post-FFN norms
        return Gemma3TextConfig(**common, head_dim=8, sliding_window=4, query_pre_attn_scalar=8)
    if arch == "gpt2":
        no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_positions=256, **ids, **no_dropout
        )
    raise ValueError(arch)


def make_model(arch: str, vocab: int = 400, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, vocab))
    # a random model's attention is near-uniform: sharpen the weights so that fusion visibly matters
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0) if p.dim() > 1 else None
    return model.eval()


def right_pad(seqs: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


def random_rows(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=g).tolist() for n in (9, 6, 12)]


# -- hooks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_finds_layers_and_feed_forward_blocks(arch):
    model = make_model(arch)
    hooks = CCHooks(model)
    assert hooks.num_layers == 3
    assert decoder_layers(model) is hooks.layers
    names = {type(m).__name__ for m in hooks.ffns}
    assert names == ({"Gemma3RMSNorm"} if arch == "gemma3" else {type(hooks.layers[0].mlp).__name__})


@pytest.mark.parametrize("arch", ARCHS)
def test_capture_at_rst_of_padded_batch_matches_each_row_alone(arch):
    model = make_model(arch)
    hooks = CCHooks(model)
    rows = random_rows()
    rst = torch.tensor([4, 5, 10])
    ids, mask = right_pad(rows)
    with torch.no_grad(), hooks.capture(rst) as batch:
        model(input_ids=ids, attention_mask=mask)
    assert batch.ffn.shape == (3, 3, 32)  # (batch, L, d)
    for i, row in enumerate(rows):
        with torch.no_grad(), hooks.capture(int(rst[i])) as alone:
            model(input_ids=torch.tensor([row]))
        torch.testing.assert_close(batch.ffn[i], alone.ffn[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.embedding[i], alone.embedding[0], atol=1e-6, rtol=1e-6)
    if arch == "llama":  # e is the hidden state entering layer 0: the token embedding here
        torch.testing.assert_close(batch.embedding, model.model.embed_tokens(ids[torch.arange(3), rst]))


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_fusion_leaves_logits_unchanged(arch):
    model = make_model(arch)
    hooks = CCHooks(model)
    ids, mask = right_pad(random_rows())
    rst = torch.tensor([4, 5, 10])
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        for layer in (0, 2):
            with hooks.fuse(layer, rst, lambda e: torch.zeros_like(e)):
                fused = model(input_ids=ids, attention_mask=mask).logits
            assert torch.equal(plain, fused)


@pytest.mark.parametrize("arch", ARCHS)
def test_fusion_changes_nothing_before_the_rst(arch):
    model = make_model(arch)
    hooks = CCHooks(model)
    ids, mask = right_pad(random_rows())
    rst = torch.tensor([4, 5, 10])
    vector = torch.randn(3, 32) * 10
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with hooks.fuse(0, rst, vector):
            fused = model(input_ids=ids, attention_mask=mask).logits
    for i, r in enumerate(rst.tolist()):
        assert torch.equal(plain[i, :r], fused[i, :r])
        assert (plain[i, r] - fused[i, r]).abs().max() > 1e-3


# -- training step ----------------------------------------------------------------------------


def cc_batch(tokenizer, examples=EXAMPLES[:4]):
    from methods.cc import CCDataset

    dataset = CCDataset(tokenizer, examples, max_length=64)
    return pad_collate(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


def test_batch_rst_is_last_prompt_token_of_every_row(tokenizer):
    batch = cc_batch(tokenizer)
    assert batch["input_ids"].shape[0] == 4
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # padded
    for i, ex in enumerate(EXAMPLES[:4]):
        prompt = encode_prompt(tokenizer, ex.instruction)
        english = encode_prompt(tokenizer, ex.instruction_en if ex.lang != "en" else ex.instruction)
        r, r_en = int(batch["rst"][i]), int(batch["en_rst"][i])
        assert r == len(prompt) - 1 and batch["input_ids"][i, : r + 1].tolist() == prompt
        assert (batch["labels"][i, : r + 1] == -100).all() and batch["labels"][i, r + 1] != -100
        assert r_en == len(english) - 1 and batch["en_input_ids"][i, : r_en + 1].tolist() == english
    # an English example is its own English prompt
    english, prompt = (
        batch["en_input_ids"][2, : batch["en_rst"][2] + 1],
        batch["input_ids"][2, : batch["rst"][2] + 1],
    )
    assert english.tolist() == prompt.tolist()


def test_examples_whose_english_prompt_is_too_long_are_dropped(tokenizer):
    from methods.cc import CCDataset

    long_english = Example("7", "fr", "court", "x", "a much much much much longer English instruction")
    short = Example("8", "fr", "court", "x", "short")
    assert len(CCDataset(tokenizer, [long_english, short], max_length=60)) == 2
    dataset = CCDataset(tokenizer, [long_english, short], max_length=30)  # the English prompt needs 43
    assert dataset.stats()["dropped_too_long"] == {"fr": 1} and len(dataset) == 1


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma"])
def test_training_step_on_padded_batch(arch, tokenizer):
    batch = cc_batch(tokenizer)
    torch.manual_seed(0)
    model = CCModel(make_model(arch).train())
    out = model(**batch, return_logits=True)
    assert torch.isfinite(out.loss) and out.layer_choice.shape == (4,) and out.dm_entropy.shape == (4,)
    # English activations of the padded batch are those of each English prompt alone
    for i in range(4):
        n = int(batch["en_rst"][i]) + 1
        with torch.no_grad(), model.hooks.capture(n - 1) as alone:
            model.lm(input_ids=batch["en_input_ids"][i : i + 1, :n])
        torch.testing.assert_close(out.english_activations[i].detach(), alone.ffn[0], atol=1e-5, rtol=1e-5)
    # the loss is the response-only cross-entropy of the fused pass
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_zero_english_activations_give_the_unmodified_model(tokenizer, monkeypatch):
    batch = cc_batch(tokenizer)
    model = CCModel(make_model("llama"))
    monkeypatch.setattr(model, "english_activations", lambda *a: torch.zeros(4, 3, 32))
    with torch.no_grad():
        out = model(**batch, return_logits=True)
        plain = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(out.logits, plain)


@pytest.mark.parametrize("detach", [False, True])
def test_gradients_reach_decision_maker_and_english_pass(detach, tokenizer):
    batch = cc_batch(tokenizer)
    torch.manual_seed(0)
    model = CCModel(make_model("llama").train(), CCOptions(detach_english=detach))
    out = model(**batch)
    if detach:
        assert not out.english_activations.requires_grad
    else:
        out.english_activations.retain_grad()
    out.loss.backward()
    assert model.decision_maker.weight.grad is not None and model.decision_maker.weight.grad.abs().sum() > 0
    if not detach:
        assert out.english_activations.grad.abs().sum() > 0


def test_fixed_source_layer_and_soft_gumbel(tokenizer):
    batch = cc_batch(tokenizer)
    model = CCModel(make_model("qwen2").train(), CCOptions(fixed_source_layer=2, fuse_after_layer=1))
    out = model(**batch)
    assert out.layer_choice.tolist() == [2, 2, 2, 2] and out.dm_entropy is None
    out.loss.backward()
    assert model.decision_maker.weight.grad is None
    a, e = torch.randn(5, 3, 32), torch.randn(5, 32)
    g, _ = decide(model.decision_maker, a, e, sample=True, hard=False, tau=0.5)
    assert ((g > 0) & (g < 1)).all() and torch.allclose(g.sum(-1), torch.ones(5))
    g, logits = decide(model.decision_maker, a, e, sample=False)
    assert torch.equal(g.argmax(-1), logits.argmax(-1)) and torch.equal(g.sum(-1), torch.ones(5))
    soft, _ = decide(model.decision_maker, a, e, sample=False, hard=False, tau=0.5)
    torch.testing.assert_close(soft, torch.softmax(logits / 0.5, -1))
    torch.testing.assert_close(fuse_vector(g, a), a[torch.arange(5), g.argmax(-1)])


# -- transform matrix -------------------------------------------------------------------------


def test_transform_matrix_recovers_a_linear_map():
    torch.manual_seed(0)
    x = torch.randn(40, 3, 16)  # (M, L, d)
    w = torch.randn(16, 16)
    w_t, mse = fit_transform_matrix(x, x @ w)
    torch.testing.assert_close(w_t, w, atol=1e-4, rtol=1e-4)
    assert mse < 1e-8
    y = x @ w + 0.1 * torch.randn(40, 3, 16)
    w_t, mse = fit_transform_matrix(x, y)
    direct = ((x.reshape(-1, 16).double() @ w_t.double() - y.reshape(-1, 16).double()) ** 2).mean()
    assert mse == pytest.approx(float(direct), rel=1e-6) and 0.005 < mse < 0.02


@pytest.mark.parametrize(
    ("m", "layers", "d", "scale"),
    [(40, 3, 16, 1.0), (4, 3, 32, 1.0), (60, 4, 24, 1e3)],
    ids=["full-rank", "rank-deficient", "badly-scaled"],
)
def test_transform_matrix_is_the_minimum_norm_least_squares_solution(m, layers, d, scale):
    """The normal-equations solver gives what LAPACK's SVD-based gelsd gives: the same residual, and the
    minimum-norm W_T when M*L < d; also with a few huge activation dimensions (as LLMs have)."""
    torch.manual_seed(0)
    x = torch.randn(m, layers, d)
    x[..., :2] *= scale
    y = x @ torch.randn(d, d) + 0.1 * torch.randn(m, layers, d)
    w_t, mse = fit_transform_matrix(x, y)
    x2, y2 = x.reshape(-1, d).double(), y.reshape(-1, d).double()
    reference = torch.linalg.lstsq(x2, y2, driver="gelsd").solution
    assert mse == pytest.approx(transform_mse(x, y, reference), rel=1e-6, abs=1e-9)
    torch.testing.assert_close(w_t.double(), reference, rtol=1e-4, atol=1e-4 / scale)


def gelsd_reference(x: torch.Tensor, y: torch.Tensor):
    """X stacked (float64, numpy) and `np.linalg.lstsq`'s minimum-norm W (gelsd, rcond=None)."""
    import numpy as np

    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d).double().numpy(), y.reshape(-1, d).double().numpy()
    return x2, np.linalg.lstsq(x2, y2, rcond=None)[0]


def row_space_difference(x2, w, reference) -> float:
    """||P (W - W_ref)||_F / ||P W_ref||_F, P the projection on X's row space (of gelsd's rank)."""
    import numpy as np

    _, s, vt = np.linalg.svd(x2, full_matrices=False)
    v = vt[: int((s > np.finfo(np.float64).eps * max(x2.shape) * s[0]).sum())]
    return float(np.linalg.norm(v @ (np.asarray(w, np.float64) - reference)) / np.linalg.norm(v @ reference))


def tiny_llama_activations(tokenizer, n: int):
    """RST activations (n, 2, 32) of the tiny random Llama of tests/tiny.py for n instruction pairs."""
    from tests.tiny import _CORPUS, tiny_llama

    words = " ".join(_CORPUS).split()
    texts = [" ".join(words[(7 * i) % len(words) :][: 3 + i % 9]) + f" {i}" for i in range(2 * n)]
    model = tiny_llama(tokenizer)
    return collect_activations(model, tokenizer, texts[:n]), collect_activations(model, tokenizer, texts[n:])


def test_transform_matrix_matches_gelsd_on_tiny_llama_activations_with_outliers(tokenizer):
    """Real (tiny random Llama) activations with a few outlier dimensions scaled up, as LLMs have them,
    M*L below and above d: W_T matches np.linalg.lstsq within FIT_RTOL on X's row space, whichever path
    the solver takes; with outliers up to 1e6, the Gram matrix is too ill-conditioned for the normal
    equations and the gelsd fallback runs."""
    from methods.cc.transform import FIT_RTOL, GRAM_CONDITION_MAX

    x_all, y_all = tiny_llama_activations(tokenizer, 40)
    for m in (10, 40):  # 20 and 80 rows, d = 32
        for scales in ([1.0], [1e2, 1e3], [1e3, 1e4, 1e5, 1e6]):
            x, y = x_all[:m].clone(), y_all[:m]
            x[..., [3, 11, 17, 29][: len(scales)]] *= torch.tensor(scales)
            info = {}
            w_t, mse = fit_transform_matrix(x, y, info)
            x2, reference = gelsd_reference(x, y)
            assert row_space_difference(x2, w_t, reference) < FIT_RTOL, (m, scales, info)
            assert mse == pytest.approx(transform_mse(x, y, torch.from_numpy(reference)), rel=1e-6, abs=1e-12)
            fast = info["gram_condition"] <= GRAM_CONDITION_MAX
            assert info["solver"] == ("normal equations" if fast else "gelsd")
            if scales[-1] == 1e6:
                assert info["solver"] == "gelsd"


def test_ill_conditioned_fit_falls_back_to_gelsd():
    """A column that is a linear combination of others up to 1e-7: cond(X) ~1e8, so G = X^T X cannot even
    see that direction (the normal equations alone drop it, far from gelsd), and the fit takes the gelsd
    path: the same W_T and MSE as np.linalg.lstsq to float32 precision."""
    from methods.cc.transform import GRAM_CONDITION_MAX, _normal_equations

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, 16, generator=g, dtype=torch.float64)
    x[..., 5] = x[..., :4] @ torch.randn(4, generator=g, dtype=torch.float64)
    x[..., 5] += 1e-7 * torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = x @ torch.randn(16, 16, generator=g, dtype=torch.float64) + 0.1 * torch.randn(30, 3, 16, generator=g)
    x2, reference = gelsd_reference(x, y)
    normal, condition = _normal_equations(x.reshape(-1, 16), y.reshape(-1, 16))
    assert condition > GRAM_CONDITION_MAX and row_space_difference(x2, normal, reference) > 1e-2
    info = {}
    w_t, mse = fit_transform_matrix(x, y, info)
    assert info["solver"] == "gelsd" and info["gram_condition"] == condition
    assert row_space_difference(x2, w_t, reference) < 1e-6  # W_T is float32
    assert mse == pytest.approx(transform_mse(x, y, torch.from_numpy(reference)), rel=1e-6)


def test_heldout_pairs_are_fixed_disjoint_and_samples_nested():
    from methods.cc.pairs import heldout_size, split_pairs

    sizes = [heldout_size(n) for n in (0, 1, 2, 9, 10, 999, 1000, 1004, 20_000)]
    assert sizes == [0, 0, 1, 1, 2, 199, 200, 200, 200]  # min(200, N // 5), >= 1 from 2 pairs on
    pairs = [Pair("xx", f"text {i}", f"english {i}") for i in range(60)]
    held = split_pairs(pairs, 5, seed=3)[1]
    largest = split_pairs(pairs, 1000, seed=3)[0]
    assert len(held) == 12 and len(largest) == 48 and set(largest) | set(held) == set(pairs)
    for m in (1, 5, 30, 48, 49, 1000):
        sample, heldout = split_pairs(pairs, m, seed=3)
        assert heldout == held and not set(sample) & set(held)  # the same held-out set for every M
        assert len(sample) == min(m, 48) and sample == largest[: len(sample)] == sample_pairs(pairs, m, 3)
    assert split_pairs(pairs, 5, seed=4)[1] != held
    assert split_pairs(pairs[:1], 5, 0) == (pairs[:1], [])  # one pair: fitted on, nothing held out
    sample, heldout = split_pairs(pairs[:2], 5, 0)
    assert len(sample) == len(heldout) == 1 and sample != heldout


def test_fit_transform_per_language_heldout_and_save_load(tokenizer, tmp_path):
    import math

    from methods.cc.pairs import split_pairs

    model = make_model("llama")
    pairs = pairs_from_examples(EXAMPLES)
    assert {p.lang for p in pairs} == {"fr", "de"}  # English examples are left out
    assert sample_pairs(pairs, 2, seed=1) == sample_pairs(pairs, 5, seed=1)[:2]  # nested samples
    fit = fit_transform(model, tokenizer, pairs, m=1000, seed=0, per_language=True)
    # 5 pairs: one (5 // 5) is held out, so M = 4 although 1000 were asked for
    assert len(pairs) == 5 and fit.m == 4 and fit.heldout == 1
    assert set(fit.per_language_matrices) == {"fr", "de"}
    sample, held = split_pairs(pairs, 1000, 0)
    both = [*sample, *held]  # one batched call per side, as fit_transform collects them
    x = collect_activations(model, tokenizer, [p.text for p in both])
    y = collect_activations(model, tokenizer, [p.text_en for p in both])
    assert fit.mse == pytest.approx(transform_mse(x[:4], y[:4], fit.transform_matrix), rel=1e-5)
    assert fit.mse_heldout == pytest.approx(transform_mse(x[4:], y[4:], fit.transform_matrix), rel=1e-5)
    # M*L = 12 <= d = 32: the fit is exact in-sample; only the held-out pair says how good W_T is
    scale = float((y.double() ** 2).mean())
    assert fit.mse < 1e-12 * scale and math.isfinite(fit.mse_heldout) and fit.mse_heldout > 1e-3 * scale
    held_lang = held[0].lang
    assert fit.per_language[held_lang]["mse_heldout_shared"] == pytest.approx(fit.mse_heldout)
    assert all("mse_heldout_shared" not in v for k, v in fit.per_language.items() if k != held_lang)
    assert sum(v["n"] for v in fit.per_language.values()) == 4
    summary = fit.summary()
    assert summary["heldout"] == 1 and summary["mse_heldout"] == fit.mse_heldout and summary["m"] == 4
    save_cc(
        tmp_path,
        CCWeights(
            torch.randn(3, 32),
            fit.transform_matrix,
            fit.per_language_matrices,
            {"dm_tau": 1.0},
            fit.summary(),
        ),
    )
    loaded = load_cc(tmp_path)
    assert torch.equal(loaded.transform_matrix, fit.transform_matrix)
    assert torch.equal(loaded.per_language["de"], fit.per_language_matrices["de"])
    assert loaded.transform["mse"] == fit.mse and loaded.options == {"dm_tau": 1.0}
    assert loaded.transform["mse_heldout"] == fit.mse_heldout and loaded.transform["heldout"] == 1


def test_pairs_from_the_parallel_corpus():
    from harness.data.base import data_dir
    from harness.plumbing.errors import HarnessError
    from methods.cc.pairs import pairs_from_parallel

    try:
        data_dir()
    except HarnessError as e:
        pytest.skip(str(e))
    pairs = pairs_from_parallel(["en", "sw"])  # English needs no W_T: only Swahili pairs
    assert {p.lang for p in pairs} == {"sw"} and 2000 < len(pairs) <= 1997 + 701
    assert all(p.text and p.text_en and p.text != p.text_en for p in pairs[:50])


# -- CC inference with key/value reuse --------------------------------------------------------


def reference_fuse(weights: CCWeights):
    """a_hat = a W_T, Decision Maker argmax, fused = a_hat of the chosen layer: written out plainly."""

    def fuse(a, e, prompts=None):
        a_hat = a.float() @ weights.transform_matrix if weights.transform_matrix is not None else a.float()
        layer = ((a_hat + e.float()[:, None]).mean(1) @ weights.decision_maker.T).argmax(-1)
        return a_hat[torch.arange(len(a)), layer], layer

    return fuse


def reference_logits(model, hooks, after_layer, fuse, tokens, rst):
    """Two full forward passes: the prompt [0..RST], then the whole sequence with the fusion at the RST."""
    with torch.no_grad():
        with hooks.capture(rst) as record:
            model(input_ids=torch.tensor([tokens[: rst + 1]]))
        fused, _ = fuse(record.ffn, record.embedding)
        with hooks.fuse(after_layer, torch.tensor([rst]), fused):
            return model(input_ids=torch.tensor([tokens])).logits[0]


def random_weights(seed: int = 0, scale: float = 1.0) -> CCWeights:
    g = torch.Generator().manual_seed(seed)
    return CCWeights(
        torch.randn(3, 32, generator=g), torch.eye(32) + scale * torch.randn(32, 32, generator=g) / 8
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_reusing_inference_equals_two_full_passes(arch):
    from methods.cc.lm import Row, cc_logits

    model = make_model(arch)
    hooks = CCHooks(model)
    fuse = reference_fuse(random_weights())
    a, b, c = random_rows(1)
    rows = [
        Row(a, rst=5, start=4),  # one scored position before the RST (lm-eval's moved "\n")
        Row(a[:7] + [11, 12], rst=5, start=6),  # same prompt, other continuation: one shared pass 1
        Row(b, rst=2, start=3),
        Row(c, rst=8, start=0),  # every position, before and after the RST
        Row(b[:4], rst=4, start=2),  # the RST is the final token: nothing scored depends on fusion
    ]
    for after_layer in (0, 2):
        logits, choices = cc_logits(model, hooks, after_layer, fuse, rows, pad_id=0)
        for row, got, choice in zip(rows, logits, choices, strict=True):
            rst = min(row.rst, len(row.tokens) - 1)
            want = reference_logits(model, hooks, after_layer, fuse, row.tokens, rst)[row.start :]
            if row.rst >= len(row.tokens):
                want = model(input_ids=torch.tensor([row.tokens])).logits[0, row.start :].detach()
                assert choice is None
            else:
                assert choice[0] == tuple(row.tokens[: row.rst + 1])
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def make_lm(model, tokenizer, weights: CCWeights, **kwargs):
    from methods.cc.lm import CCLM

    weights.options = weights.options or {"fuse_after_layer": 0}
    return CCLM(
        pretrained=model, tokenizer=tokenizer, cc=weights, batch_size=kwargs.pop("batch_size", 3), **kwargs
    )


def instances(kind: str, args: list[tuple], task: str = "xnli_fr"):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i, (task, i, 1)) for i, a in enumerate(args)]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_cc_lm_loglikelihood_matches_two_full_passes(arch, tokenizer):
    model = make_model(arch)
    weights = random_weights(2)
    lm = make_lm(model, tokenizer, weights)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:3]]
    requests = [(p, option) for p in prompts for option in ("the black cat", "blue", " paris")]
    got = lm.loglikelihood(instances("loglikelihood", requests))
    hooks, fuse = CCHooks(model), reference_fuse(weights)
    for (context, continuation), (logprob, greedy) in zip(requests, got, strict=True):
        prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        # lm-eval moves the "\n" that ends the prompt out of the context: the RST is still that "\n"
        assert whole[: len(prompt)] == prompt and context.endswith("\n")
        ctx_len = len(tokenizer(context.rstrip(), add_special_tokens=False)["input_ids"])
        logits = reference_logits(model, hooks, 0, fuse, whole[:-1], len(prompt) - 1)
        log_probs = torch.log_softmax(logits[ctx_len - 1 :], -1)
        target = torch.tensor(whole[ctx_len:])
        assert logprob == pytest.approx(float(log_probs.gather(1, target[:, None]).sum()), abs=1e-4)
        assert greedy == bool((log_probs.argmax(-1) == target).all())
    # W_T matters: the identity gives other scores
    plain = make_lm(model, tokenizer, weights, use_wt=False).loglikelihood(
        instances("loglikelihood", requests)
    )
    assert any(abs(x[0] - y[0]) > 1e-4 for x, y in zip(plain, got, strict=True))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_cc_lm_generate_matches_two_full_passes(arch, tokenizer):
    model = make_model(arch)
    model.generation_config.eos_token_id = None  # generate all tokens; the test compares them
    weights = random_weights(3)
    lm = make_lm(model, tokenizer, weights, batch_size=2)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:3]]
    hooks, fuse = CCHooks(model), reference_fuse(weights)
    got = lm.generate_until(
        instances("generate_until", [(p, {"until": ["@@@"], "max_gen_toks": 6}) for p in prompts])
    )
    for prompt, text in zip(prompts, got, strict=True):
        tokens = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        rst = len(tokens) - 1
        for _ in range(6):  # greedy decoding, each step two full passes
            tokens.append(int(reference_logits(model, hooks, 0, fuse, tokens, rst)[-1].argmax()))
        assert text == tokenizer.decode(tokens[rst + 1 :], skip_special_tokens=True)
    hist = lm.artifacts()
    assert hist["eval_prompts"] == 3 and sum(hist["eval_layer_hist"]) == 3
    assert list(hist["eval_layer_hist_per_language"]) == ["fr"] and hist["decision"] == "argmax"


def test_per_language_transform_matrix_is_used_for_its_language(tokenizer):
    model = make_model("llama")
    weights = random_weights(4)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:2]]
    requests = [(p, " blue") for p in prompts]
    identity = make_lm(model, tokenizer, weights, use_wt=False).loglikelihood(
        instances("loglikelihood", requests)
    )
    shared = make_lm(model, tokenizer, weights).loglikelihood(instances("loglikelihood", requests))
    weights.per_language = {"fr": torch.eye(32)}
    per_language = make_lm(model, tokenizer, weights, wt_per_language=True)
    assert per_language.loglikelihood(instances("loglikelihood", requests, "xnli_mc_fr")) == identity
    # German has no W_T of its own: the shared one
    assert per_language.loglikelihood(instances("loglikelihood", requests, "xnli_mc_de")) == shared
    assert set(per_language.artifacts()["eval_layer_hist_per_language"]) == {"fr", "de"}


def test_language_of_task_names():
    from methods.cc.lm import language_of

    assert language_of("xnli_sw") == "sw" and language_of("xstorycloze_te_gen") == "te"
    assert language_of("mmmlu_id_mc") == "id" and language_of("custom") is None


# -- the `cc` method end to end ---------------------------------------------------------------


def test_trainer_checkpoint_round_trip_with_tied_embeddings(tokenizer, tmp_path):
    from transformers import TrainingArguments

    from methods.cc.trainer import CCTrainer

    model = CCModel(make_model("llama"))
    assert model.lm.lm_head.weight is model.lm.model.embed_tokens.weight
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    trainer = CCTrainer(model=model, args=args, processing_class=tokenizer)
    trainer._save(str(tmp_path / "checkpoint-1"))
    other = CCModel(make_model("llama", seed=1))
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"), other)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert other.lm.lm_head.weight is other.lm.model.embed_tokens.weight


def test_english_examples_need_no_translation():
    from harness.plumbing.errors import HarnessError
    from methods.cc import CCTuning

    CCTuning().check_examples([Example("e", "en", "name a colour", "blue")])
    with pytest.raises(HarnessError, match="instruction_en"):
        CCTuning().check_examples([Example("f", "fr", "nomme une couleur", "bleu")])
    with pytest.raises(HarnessError, match="wt_source"):
        CCTuning(wt_source="aya")


def train_run(tmp_path: Path, tokenizer, name: str, seed: int = 0, **options):
    from methods.cc import CCTuning

    base = tmp_path / "base"
    if not base.exists():
        make_model("llama").save_pretrained(base)
        tokenizer.save_pretrained(base)
    settings = TrainSettings(
        epochs=1,
        learning_rate=1e-3,
        batch_size=2,
        per_device_batch_size=2,
        max_length=64,
        bf16=False,
        max_steps=3,
        logging_steps=1,
        save_steps=2,  # a mid-training checkpoint (CCTrainer._save with tied embeddings)
        warmup_ratio=0.0,
    )
    run_dir = tmp_path / name
    ctx = TrainContext(str(base), EXAMPLES, settings, seed, run_dir, run_dir / "model")
    method = CCTuning(**options)
    method.train(ctx)
    return method, ctx


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    tmp = tmp_path_factory.mktemp("cc_run")
    method, ctx = train_run(tmp, tokenizer, "run1", wt_samples=4)
    return tmp, tokenizer, method, ctx


def test_method_trains_saves_and_records_artifacts(trained):
    from harness.data.models import load_model, load_tokenizer

    _, tokenizer, method, ctx = trained
    folder = ctx.output_dir
    assert (folder / "model.safetensors").is_file() and (folder / "cc.safetensors").is_file()
    weights = load_cc(folder)
    assert weights.decision_maker.shape == (3, 32) and weights.transform_matrix.shape == (32, 32)
    assert weights.options["fuse_after_layer"] == 0 and weights.transform["m"] == 4
    assert weights.transform["heldout"] == 1  # 5 pairs: 4 fitted on, 1 held out
    artifacts = json.loads((ctx.run_dir / "cc_artifacts.json").read_text())
    assert [r["step"] for r in artifacts["train_layer_hist_per_step"]] == [1, 2, 3]
    assert sum(artifacts["train_layer_hist"]) == 6  # 3 steps x 2 examples
    assert artifacts["transform"]["m"] == 4 and set(artifacts["transform"]["per_language"]) <= {"fr", "de"}
    assert artifacts["transform"]["heldout"] == 1 and artifacts["transform"] == weights.transform
    log_rows = [json.loads(line) for line in ctx.log_path.read_text().splitlines()]
    assert any("cc_layer_entropy" in r for r in log_rows) and any("loss" in r for r in log_rows)
    # the logged MSEs are MSE(X W_T, Y) on the sampled and on the held-out pairs, recomputed here from the
    # checkpoint (one batched call per side, as the fit collects them)
    from methods.cc.pairs import split_pairs

    model, tok = load_model(str(folder)), load_tokenizer(str(folder))
    sample, held = split_pairs(pairs_from_examples(EXAMPLES), 4, ctx.seed)
    x = collect_activations(model, tok, [p.text for p in [*sample, *held]])
    y = collect_activations(model, tok, [p.text_en for p in [*sample, *held]])
    assert artifacts["transform"]["mse"] == pytest.approx(
        transform_mse(x[:4], y[:4], weights.transform_matrix), rel=1e-4
    )
    assert artifacts["transform"]["mse_heldout"] == pytest.approx(
        transform_mse(x[4:], y[4:], weights.transform_matrix), rel=1e-4
    )
    # refitting for another M without retraining
    pairs = [(p.text, p.text_en) for p in pairs_from_examples(EXAMPLES)]
    every = [Pair(p.lang, p.text, p.text_en) for p in pairs_from_examples(EXAMPLES)]
    copy = folder.parent / "refit"  # refitting rewrites the checkpoint's CC files: on a copy
    shutil.copytree(folder, copy)
    fit = refit_checkpoint(copy, every, {**CCTuning.defaults, "wt_samples": 4}, ctx.seed)
    torch.testing.assert_close(fit.transform_matrix, weights.transform_matrix, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(load_cc(copy).transform_matrix, fit.transform_matrix)  # rewritten in place
    assert refit_checkpoint(copy, pairs, {**CCTuning.defaults, "wt_samples": 2}, 0).transform_matrix.shape == (32, 32)


def evaluate(method, folder: Path):
    lm = method.make_lm(str(folder), device="cpu", batch_size=4)
    prompts = [format_prompt(lm.tokenizer, ex.instruction) for ex in EXAMPLES[:4]]
    scores = lm.loglikelihood(
        instances("loglikelihood", [(p, o) for p in prompts for o in ("blue", "the big dog")], "xnli_de")
    )
    return scores, lm.artifacts()


def test_same_seed_same_eval_numbers_twice(trained):
    tmp, tokenizer, method, ctx = trained
    first, artifacts = evaluate(method, ctx.output_dir)
    assert evaluate(method, ctx.output_dir)[0] == first  # argmax decisions: deterministic
    assert artifacts["eval_prompts"] == 4 and list(artifacts["eval_layer_hist_per_language"]) == ["de"]
    _, ctx2 = train_run(tmp, tokenizer, "run2", wt_samples=4)
    assert evaluate(method, ctx2.output_dir)[0] == first  # same seed, same training, same numbers


@pytest.mark.e2e
def test_default_model_with_zero_fusion_scores_and_generates_like_hflm():
    """On SmolLM2-135M-Instruct: with W_T = 0 the fused vector is zero, so the CC model (two passes,
    shared cache) must give HFLM's log-likelihoods and generations."""
    from lm_eval.models.huggingface import HFLM

    from harness.data.base import data_dir, read_jsonl
    from harness.data.models import resolve_model
    from harness.plumbing.errors import HarnessError
    from methods.cc.lm import CCLM

    try:
        ref = resolve_model("smollm2-135m-instruct")
        rows = read_jsonl(data_dir() / "benchmarks" / "xnli" / "en.jsonl")[:3]
    except HarnessError as e:
        pytest.skip(str(e))
    kwargs = {"device": "cpu", "dtype": "float32", "batch_size": 4}
    hflm = HFLM(pretrained=ref, **kwargs)
    config = hflm.model.config
    weights = CCWeights(
        torch.randn(config.num_hidden_layers, config.hidden_size),
        torch.zeros(config.hidden_size, config.hidden_size),
    )
    cc = CCLM(pretrained=ref, cc=weights, **kwargs)
    contexts = [format_prompt(hflm.tokenizer, row["prompt"]) for row in rows]
    requests = instances("loglikelihood", [(c, o) for c in contexts for o in ("1", "2", "3")], "xnli_mc_en")
    for (want, want_greedy), (got, got_greedy) in zip(
        hflm.loglikelihood(requests), cc.loglikelihood(requests), strict=True
    ):
        assert got == pytest.approx(want, abs=1e-3) and got_greedy == want_greedy
    generate = instances(
        "generate_until", [(c, {"until": ["<|im_end|>"], "max_gen_toks": 12}) for c in contexts]
    )
    assert cc.generate_until(generate) == hflm.generate_until(generate)
    assert cc.artifacts()["eval_prompts"] == 6  # 3 prompts scored + 3 generated (another task language)


def test_cc_run_through_the_pipeline(tmp_path):
    """`harness run --method cc` on a tiny model: training, cc.safetensors, lm-eval tasks (log-likelihood
    and generation) through the CC model, and both artifact files in the run."""
    from harness.core.config import EvalConfig, RunConfig
    from harness.evaluation.evaluate import resolve_tasks
    from harness.orchestration.pipeline import execute
    from harness.training.settings import PROFILES

    base = tmp_path / "base"
    model = make_model("qwen2")
    # 512 positions, not make_config's 256: a chat-templated SIB-200 prompt is up to ~320 tiny tokens,
    # and lm-eval left-truncates context + option to max_length + 1 tokens, so with 256 each multi-token
    # option ("science/technology", "travel", ...) would cut a different number of leading prompt tokens
    # and give that item one distinct (truncated) prompt per option length instead of one shared prompt.
    model.config.max_position_embeddings = 512
    model.save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ex.to_dict()) + "\n" for ex in EXAMPLES), encoding="utf-8")
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 2, "per_device_batch_size": 3, "batch_size": 3}
    train |= {"bf16": False, "logging_steps": 1, "max_length": 128}
    config = RunConfig(
        method="cc", model=str(base), recipe="jsonl", recipe_path=str(data), train_limit=None, train=train,
        method_options={"wt_samples": 3},
    )  # fmt: skip
    refs = resolve_tasks(["sib200_mc", "xnli_gen"], ["sw"])
    run = execute(
        config, refs, EvalConfig(tasks=[r.name for r in refs], limit=2, batch_size=2), tmp_path, "t"
    )
    assert run.status()["phase"] == "complete" and (run.model_dir / "cc.safetensors").is_file()
    train_artifacts = json.loads((run.dir / "cc_artifacts.json").read_text())
    assert sum(train_artifacts["train_layer_hist"]) == 6 and train_artifacts["transform"]["m"] == 3
    assert train_artifacts["transform"]["heldout"] == 1 and train_artifacts["transform"]["mse_heldout"] > 0
    eval_artifacts = json.loads((run.dir / "eval_artifacts.json").read_text())
    # one prompt per item (all options of an item share its RST and pass 1): 2 SIB-200 + 2 XNLI
    assert eval_artifacts["eval_prompts"] == 4 and list(eval_artifacts["eval_layer_hist_per_language"]) == [
        "sw"
    ]

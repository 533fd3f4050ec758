"""CC-Tuning Transform Matrix W_T: the least-squares fit against gelsd, held-out pairs, save and load."""

from __future__ import annotations

import pytest
import torch

from harness.methods.cc.pairs import Pair, pairs_from_examples, sample_pairs
from harness.methods.cc.transform import (
    CCWeights,
    collect_activations,
    fit_transform,
    fit_transform_matrix,
    load_cc,
    save_cc,
    transform_mse,
)
from tests.methods.cc_helpers import EXAMPLES, make_model

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
    from harness.methods.cc.transform import FIT_RTOL, GRAM_CONDITION_MAX

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
    from harness.methods.cc.transform import GRAM_CONDITION_MAX, _normal_equations

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
    from harness.methods.cc.pairs import heldout_size, split_pairs

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

    from harness.methods.cc.pairs import split_pairs

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
    from harness.methods.cc.pairs import pairs_from_parallel
    from harness.plumbing.errors import HarnessError

    try:
        data_dir()
    except HarnessError as e:
        pytest.skip(str(e))
    pairs = pairs_from_parallel(["en", "sw"])  # English needs no W_T: only Swahili pairs
    assert {p.lang for p in pairs} == {"sw"} and 2000 < len(pairs) <= 1997 + 701
    assert all(p.text and p.text_en and p.text != p.text_en for p in pairs[:50])

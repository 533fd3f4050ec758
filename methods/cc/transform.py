"""The Transform Matrix W_T of CC-Tuning (monolingual inference), and the `cc.safetensors` file.

W_T maps a prompt's own feed-forward activations at its RST onto those of its English translation
(METHOD.md, "Transform Matrix W_T"): sample M parallel pairs, run the tuned model on both templated
prompts, stack the L x d activations of all samples into X (non-English) and Y (English), both
(M*L, d), and solve min ||X W_T - Y||^2 for one d x d matrix by least squares.

`cc.safetensors` (next to the checkpoint) holds `decision_maker` (L, d), `transform_matrix` (d, d) and,
when fitted per language, `transform_matrix.<lang>`; `cc.json` beside it holds the options the model
was trained with and the fit's statistics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.chat import encode_prompt
from harness.data.models import load_model, load_tokenizer
from harness.methods.cc.hooks import CCHooks
from harness.methods.cc.pairs import Pair, as_pairs, split_pairs
from harness.methods.cc.rst import rst_offset
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json

log = logging.getLogger(__name__)

CC_WEIGHTS = "cc.safetensors"
CC_SIDECAR = "cc.json"


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    tokenizer,
    instructions: Sequence[str],
    batch_size: int = 16,
    hooks: CCHooks | None = None,
    rst: str = "last",
) -> torch.Tensor:
    """Feed-forward outputs at the RST (`harness.methods.cc.rst.rst_offset`) of each templated instruction:
    (n, L, d), float32, on the CPU."""
    hooks = hooks or CCHooks(model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    encoded = [encode_prompt(tokenizer, text) for text in instructions]
    offset = rst_offset(tokenizer, rst)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    out: list[torch.Tensor | None] = [None] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.tensor(
            [encoded[i] + [pad] * (width - len(encoded[i])) for i in rows], device=device
        )
        mask = torch.tensor(
            [[1] * len(encoded[i]) + [0] * (width - len(encoded[i])) for i in rows], device=device
        )
        # right padding: the RST is at length - offset
        positions = torch.tensor([len(encoded[i]) - offset for i in rows], device=device)
        with hooks.capture(positions) as record:
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        ffn = record.ffn.float().cpu()  # (rows, L, d)
        for j, i in enumerate(rows):
            out[i] = ffn[j]
    model.train(was_training)
    return torch.stack(out) if out else torch.empty(0)


# Rows of X (M*L of them) folded into the normal equations per step: bounds the float64 working set.
FIT_BLOCK_ROWS = 4096

# The normal equations square the condition number: an eigenvalue lambda_i of G = X^T X carries an absolute
# rounding error of about eps * lambda_max, so the component of W_T along it is off by up to a relative
# eps * lambda_max / lambda_i, and directions of X whose singular values are below
# sqrt(eps * max(n, d)) * s_max (~4e-7 s_max at d = 576) are lost in G's rounding although gelsd, whose
# cut-off is eps * max(n, d) * s_max on X itself, keeps them. So the fast path is trusted only when the
# condition number of G over the min(n, d) directions X can span (lambda_max / the min(n, d)-th largest
# eigenvalue, = cond(X)^2) is at most GRAM_CONDITION_MAX; above it, and when X spans fewer directions than
# its shape allows (duplicate rows, a column that is a combination of others), W_T is solved by gelsd
# itself (the same LAPACK driver and rcond as np.linalg.lstsq, so they differ only by gelsd's own rounding,
# ~eps x cond(X)). Either way W_T is within FIT_RTOL of np.linalg.lstsq's (relative Frobenius difference on
# X's row space). Measured (bench/bench_wt.py lstsq, bench/RESULTS.md: the default model's activations,
# M = 10..1000, and badly conditioned variants of them): the normal equations' difference from
# np.linalg.lstsq was at most 1.2e-17 x cond(G) over cond(G) = 5e5..4e11 (5e-12 at 5e5, 1.8e-8 at
# 1.8e10, 5e-6 at 4e11), so <= 1.2e-7 at the cut-off, ~100x below FIT_RTOL; where G cannot resolve X
# (cond(X) >~ 3e6: 4 columns scaled up to 1e6, a near-collinear column, near-duplicate rows) it was 0.3-1.
# The default model's real X has cond(G) 5e5..4e6 at M >= 50 (fast path; 4 columns x 1e3: 2e8..2e9, fast
# path too), 1e9 at M = 10 (fast path) and 1.8e10 at M = 20, where M*L ~ d: the fallback runs there.
GRAM_CONDITION_MAX = 1e10
FIT_RTOL = 1e-5


def _normal_equations(x2: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The minimum-norm least-squares W (float64) from G = X^T X and C = X^T Y, and cond(G) over the
    min(n, d) largest eigenvalues (inf when X spans fewer directions)."""
    n, d = x2.shape
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, y2.shape[1], dtype=torch.float64)
    for start in range(0, n, FIT_BLOCK_ROWS):
        xb = x2[start : start + FIT_BLOCK_ROWS].double().cpu()
        gram.addmm_(xb.T, xb)
        cross.addmm_(xb.T, y2[start : start + FIT_BLOCK_ROWS].double().cpu())
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    cutoff = evals.abs().max() * max(n, d) * torch.finfo(torch.float64).eps
    kept = evals > cutoff
    inverse = torch.where(kept, 1.0 / evals, torch.zeros_like(evals))
    solution = evecs @ (inverse[:, None] * (evecs.T @ cross))
    smallest = float(evals[-min(n, d)])
    condition = float(evals[-1]) / smallest if smallest > cutoff else float("inf")
    return solution, condition


def _gelsd(x2: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """LAPACK's SVD-based minimum-norm solution (rcond = eps * max(n, d), numpy's default), float64."""
    return torch.linalg.lstsq(x2.double().cpu(), y2.double().cpu(), driver="gelsd").solution


def fit_transform_matrix(
    x: torch.Tensor, y: torch.Tensor, info: dict[str, Any] | None = None
) -> tuple[torch.Tensor, float]:
    """Least squares over all layers stacked: X, Y (M*L, d) from x, y (M, L, d); returns W_T (d, d),
    float32, and MSE(X W_T, Y). `info`, when given, receives the solver used ("normal equations" or
    "gelsd") and the Gram condition number.

    The minimum-norm solution, as LAPACK's SVD-based `gelsd` gives it. The fast path computes it through
    the normal equations: G = X^T X and C = X^T Y are accumulated in float64 a block of rows at a time
    (matrix products: the fastest thing a CPU does), then W = G^+ C with the pseudo-inverse from the
    eigendecomposition of G, dropping eigenvalues at rounding level (the directions X does not span when
    M*L < d). Memory is O(d^2 + block x d) instead of the four float64 copies of X and Y that `gelsd`
    holds, and the time is a few GEMMs instead of an SVD of the (M*L, d) matrix: for an 8B model
    (d = 4096, L = 32, M = 1000) minutes and gigabytes become seconds and ~0.5 GB (bench/bench_wt.py).
    Squaring the condition number is harmless while cond(G) <= GRAM_CONDITION_MAX; above it (and when X
    spans fewer directions than min(M*L, d)) W_T is solved by `gelsd` on the stacked float64 rows (with
    gelsd's time and memory: 7x the fast path's time at the 8B shape, M = 250), so the result matches
    gelsd within FIT_RTOL either way (tests/methods/test_cc_transform.py, bench/bench_wt.py lstsq)."""
    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d), y.reshape(-1, d)
    transform_matrix, condition = _normal_equations(x2, y2)
    solver = "normal equations"
    if not condition <= GRAM_CONDITION_MAX:
        solver = "gelsd"
        log.info("W_T fit: Gram condition number %.3g > %.0e: gelsd", condition, GRAM_CONDITION_MAX)
        transform_matrix = _gelsd(x2, y2)
    if info is not None:
        info.update(solver=solver, gram_condition=condition)
    return transform_matrix.float(), transform_mse(x, y, transform_matrix)


def transform_mse(x: torch.Tensor, y: torch.Tensor, transform_matrix: torch.Tensor) -> float:
    """MSE(X W_T, Y) over all stacked layers: x, y (n, L, d), transform_matrix (d, d); float64, a block of
    rows at a time."""
    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d), y.reshape(-1, d)
    w = transform_matrix.double().cpu()
    total = 0.0
    for start in range(0, x2.shape[0], FIT_BLOCK_ROWS):
        pred = x2[start : start + FIT_BLOCK_ROWS].double().cpu() @ w
        total += float(((pred - y2[start : start + FIT_BLOCK_ROWS].double().cpu()) ** 2).sum())
    return total / max(1, x2.numel())


@dataclass
class TransformFit:
    """A fitted W_T and what the report needs about it."""

    transform_matrix: torch.Tensor  # (d, d), shared by every language
    mse: float  # in-sample: on the M pairs fitted on (exactly 0 whenever M*L <= d)
    m: int  # pairs used
    source: str
    # lang -> {"n", "mse_shared"[, "mse_heldout_shared"][, "mse_own"]}
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    per_language_matrices: dict[str, torch.Tensor] = field(default_factory=dict)  # lang -> (d, d)
    mse_heldout: float | None = None  # on the H held-out pairs (None when H = 0)
    heldout: int = 0  # H

    def summary(self) -> dict[str, Any]:
        return {"m": self.m, "mse": self.mse, "mse_heldout": self.mse_heldout, "heldout": self.heldout,
                "source": self.source, "per_language": self.per_language}  # fmt: skip


def fit_transform(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[Pair],
    m: int,
    seed: int,
    per_language: bool = False,
    source: str = "",
    batch_size: int = 16,
    rst: str = "last",
) -> TransformFit:
    """Sample M pairs (seeded), collect the tuned model's RST activations for both sides, fit W_T.

    The H held-out pairs of `split_pairs` (the same for every M) are never fitted on: their MSE under W_T is
    reported beside the in-sample one. Their activations come from the same batched calls as the fit
    pairs', so they cost H more pairs of forward passes. With `per_language`, each language also gets its
    own matrix, fitted on its share of the sample. Every language's MSE under the shared matrix is always
    reported (in-sample, and held-out where the language has held-out pairs).
    """
    sample, held = split_pairs(pairs, m, seed)
    if not sample:
        raise HarnessError(f"wt_samples={m}: no pair to fit the transform matrix on")
    hooks = CCHooks(model)
    both = [*sample, *held]
    # (M + H, L, d) each
    x_all = collect_activations(model, tokenizer, [p.text for p in both], batch_size, hooks, rst=rst)
    y_all = collect_activations(model, tokenizer, [p.text_en for p in both], batch_size, hooks, rst=rst)
    x, x_held = x_all[: len(sample)], x_all[len(sample) :]
    y, y_held = y_all[: len(sample)], y_all[len(sample) :]
    faults.point("wt_fit")
    info: dict[str, Any] = {}
    transform_matrix, mse = fit_transform_matrix(x, y, info)
    mse_heldout = transform_mse(x_held, y_held, transform_matrix) if held else None
    fit = TransformFit(transform_matrix, mse, len(sample), source, mse_heldout=mse_heldout, heldout=len(held))
    log.info(
        "transform matrix: M=%d pairs, in-sample MSE(X W_T, Y) = %.6g; %d held-out pairs, MSE = %s "
        "(solver: %s, Gram condition number %.3g)",
        len(sample), mse, len(held), "-" if mse_heldout is None else f"{mse_heldout:.6g}", info["solver"],
        info["gram_condition"],
    )  # fmt: skip
    for lang in sorted({p.lang for p in sample} - {""}):
        rows = [i for i, p in enumerate(sample) if p.lang == lang]
        stats: dict[str, float] = {
            "n": len(rows),
            "mse_shared": transform_mse(x[rows], y[rows], transform_matrix),
        }
        held_rows = [i for i, p in enumerate(held) if p.lang == lang]
        if held_rows:
            mse_held = transform_mse(x_held[held_rows], y_held[held_rows], transform_matrix)
            stats["mse_heldout_shared"] = mse_held
        if per_language:
            own, stats["mse_own"] = fit_transform_matrix(x[rows], y[rows])
            fit.per_language_matrices[lang] = own
        fit.per_language[lang] = stats
    return fit


@dataclass
class CCWeights:
    """What CC-Tuning adds to a checkpoint: W_DM, W_T (and per-language W_T), the options, the fit's stats."""

    decision_maker: torch.Tensor  # (L, d)
    transform_matrix: torch.Tensor | None = None  # (d, d)
    per_language: dict[str, torch.Tensor] = field(default_factory=dict)  # lang -> (d, d)
    options: dict[str, Any] = field(default_factory=dict)
    transform: dict[str, Any] = field(default_factory=dict)  # TransformFit.summary()

    @property
    def num_layers(self) -> int:
        return self.decision_maker.shape[0]


def save_cc(folder: Path, weights: CCWeights) -> None:
    """Write `cc.safetensors` and `cc.json` into a checkpoint folder."""
    from safetensors.torch import save_file

    tensors = {"decision_maker": weights.decision_maker.detach().float().cpu().contiguous()}
    if weights.transform_matrix is not None:
        tensors["transform_matrix"] = weights.transform_matrix.detach().float().cpu().contiguous()
    for lang, matrix in weights.per_language.items():
        tensors[f"transform_matrix.{lang}"] = matrix.detach().float().cpu().contiguous()
    folder = Path(folder)
    save_file(tensors, str(folder / CC_WEIGHTS), metadata={"format": "pt"})
    atomic_write_json(folder / CC_SIDECAR, {"options": weights.options, "transform": weights.transform})


def load_cc(folder: Path | str) -> CCWeights:
    """Read `cc.safetensors` (+ `cc.json`) from a checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / CC_WEIGHTS
    if not path.is_file():
        raise HarnessError(f"{path} not found: a CC-Tuning checkpoint needs it (train with --method cc)")
    tensors = load_file(str(path))
    sidecar = folder / CC_SIDECAR
    meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    prefix = "transform_matrix."
    return CCWeights(
        decision_maker=tensors["decision_maker"],
        transform_matrix=tensors.get("transform_matrix"),
        per_language={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
        options=meta.get("options", {}),
        transform=meta.get("transform", {}),
    )


def fit_and_save(
    folder: Path,
    model: nn.Module,
    tokenizer,
    pairs: Sequence[Pair],
    options: dict[str, Any],
    seed: int,
    batch_size: int,
    decision_maker: torch.Tensor,
    model_options: dict[str, Any],
) -> TransformFit:
    """The one W_T fit-and-save: fit W_T with the trained `model` as the method `options` ask
    (`wt_samples`, `wt_per_language`, `wt_source`), at the RST the model was trained with
    (`model_options["rst"]`), then write `cc.safetensors` (the Decision Maker and W_T) and `cc.json`
    (`model_options` and the fit's summary) into `folder`. Used after training, when a run shares another
    run's trained model with other fit options, and by `refit_checkpoint`."""
    fit = fit_transform(
        model,
        tokenizer,
        pairs,
        options["wt_samples"],
        seed,
        per_language=options["wt_per_language"],
        source=options["wt_source"],
        batch_size=batch_size,
        rst=model_options.get("rst", "last"),  # checkpoints written before the option: the last token
    )
    weights = CCWeights(
        decision_maker=decision_maker,
        transform_matrix=fit.transform_matrix,
        per_language=fit.per_language_matrices,
        options=model_options,
        transform=fit.summary(),
    )
    save_cc(folder, weights)
    return fit


def refit_checkpoint(
    folder: str | Path,
    pairs: Sequence[Pair | tuple[str, str] | tuple[str, str, str]],
    options: dict[str, Any],
    seed: int,
    batch_size: int = 16,
    trained_from: str | Path | None = None,
    trust_remote_code: bool = False,
) -> TransformFit:
    """Refit W_T with the trained checkpoint in `folder`, without retraining (the M sweep), and rewrite its
    `cc.safetensors` and `cc.json` (`fit_and_save`). The Decision Maker and the options the model was
    trained with come from the CC files of `trained_from` (default: `folder`'s own)."""
    trained = load_cc(trained_from if trained_from is not None else folder)
    tokenizer = load_tokenizer(str(folder), trust_remote_code)
    model = load_model(str(folder), trust_remote_code=trust_remote_code)
    return fit_and_save(
        Path(folder), model, tokenizer, as_pairs(pairs), options, seed, batch_size, trained.decision_maker,
        trained.options,
    )  # fmt: skip

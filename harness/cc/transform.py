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
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import faults
from harness.cc.hooks import CCHooks
from harness.chat import encode_prompt
from harness.data import Example, data_dir, read_jsonl
from harness.errors import HarnessError
from harness.io import atomic_write_json

log = logging.getLogger(__name__)

CC_WEIGHTS = "cc.safetensors"
CC_SIDECAR = "cc.json"


@dataclass(frozen=True)
class Pair:
    """A parallel pair of instructions: `text` in language `lang`, and its English translation."""

    lang: str
    text: str
    text_en: str


def as_pairs(items: Sequence[Pair | tuple[str, str] | tuple[str, str, str]]) -> list[Pair]:
    """Pairs from Pair objects, (text, text_en) or (lang, text, text_en) tuples."""
    out = []
    for item in items:
        if isinstance(item, Pair):
            out.append(item)
        elif len(item) == 2:
            out.append(Pair("", item[0], item[1]))
        else:
            out.append(Pair(*item))
    return out


def pairs_from_examples(examples: Sequence[Example]) -> list[Pair]:
    """The distinct non-English training instructions with their English translations (English
    examples are their own translation and would only pull W_T towards the identity)."""
    seen: dict[tuple[str, str], Pair] = {}
    for ex in examples:
        if ex.lang != "en" and ex.instruction_en:
            seen.setdefault(
                (ex.instruction, ex.instruction_en), Pair(ex.lang, ex.instruction, ex.instruction_en)
            )
    if not seen:
        raise HarnessError(
            "no non-English training example with instruction_en to fit the transform matrix on"
        )
    return list(seen.values())


def pairs_from_parallel(langs: Sequence[str], data: Path | None = None) -> list[Pair]:
    """Sentence pairs of `<data>/parallel` for the non-English languages in `langs`: all of NTREX and
    the train split of FLORES/SIB-200 (its dev/test sentences are the SIB-200 task's), minus any pair
    whose sentence overlaps a benchmark test item (`harness.decontam`). The raw sentence is the
    instruction."""
    from harness.decontam import texts_overlap

    data = data or data_dir()
    pairs: list[Pair] = []
    for lang in sorted(set(langs) - {"en"}):
        found: list[Pair] = []
        for corpus in ("ntrex", "flores_sib"):
            path = data / "parallel" / corpus / f"{lang}.jsonl"
            if path.is_file():
                rows = read_jsonl(path)
                found += [
                    Pair(lang, row["text"], row["text_en"])
                    for row in rows
                    if row.get("split", "train") == "train" and row.get("text") and row.get("text_en")
                ]
        native = texts_overlap([p.text for p in found], lang, data)
        english = texts_overlap([p.text_en for p in found], "en", data)
        pairs += [p for p, a, b in zip(found, native, english, strict=True) if not (a or b)]
    if not pairs:
        raise HarnessError(f"no parallel sentences for languages {sorted(langs)} under {data / 'parallel'}")
    return pairs


def sample_pairs(pairs: Sequence[Pair], m: int, seed: int) -> list[Pair]:
    """M pairs drawn without replacement (all when M >= len(pairs)); for one seed, smaller samples are
    prefixes of larger ones, so a sweep over M adds data rather than redrawing it."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [pairs[i] for i in order[: max(0, m)]]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    tokenizer,
    instructions: Sequence[str],
    batch_size: int = 16,
    hooks: CCHooks | None = None,
) -> torch.Tensor:
    """Feed-forward outputs at the RST of each templated instruction: (n, L, d), float32, on the CPU."""
    hooks = hooks or CCHooks(model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    encoded = [encode_prompt(tokenizer, text) for text in instructions]
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
        # right padding: the RST is at length - 1
        rst = torch.tensor([len(encoded[i]) - 1 for i in rows], device=device)
        with hooks.capture(rst) as record:
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        ffn = record.ffn.float().cpu()  # (rows, L, d)
        for j, i in enumerate(rows):
            out[i] = ffn[j]
    model.train(was_training)
    return torch.stack(out) if out else torch.empty(0)


# Rows of X (M*L of them) folded into the normal equations per step: bounds the float64 working set.
FIT_BLOCK_ROWS = 4096


def fit_transform_matrix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least squares over all layers stacked: X, Y (M*L, d) from x, y (M, L, d); returns W_T (d, d),
    float32, and MSE(X W_T, Y).

    The minimum-norm solution, as LAPACK's SVD-based `gelsd` gives it, computed through the normal
    equations instead: G = X^T X and C = X^T Y are accumulated in float64 a block of rows at a time
    (matrix products: the fastest thing a CPU does), then W = G^+ C with the pseudo-inverse from the
    eigendecomposition of G, dropping eigenvalues at rounding level (the directions X does not span when
    M*L < d). Memory is O(d^2 + block x d) instead of the four float64 copies of X and Y that `gelsd`
    holds, and the time is a few GEMMs instead of an SVD of the (M*L, d) matrix: for an 8B model
    (d = 4096, L = 32, M = 1000) minutes and gigabytes become seconds and ~0.5 GB (bench/bench_wt.py).
    Squaring the condition number costs nothing measurable here: float64 carries 16 digits and the MSE
    matches gelsd's on random, rank-deficient and badly scaled data (tests/test_cc.py) and on the default
    model's activations (bench/bench_wt.py)."""
    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d), y.reshape(-1, d)
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, x2.shape[0], FIT_BLOCK_ROWS):
        xb = x2[start : start + FIT_BLOCK_ROWS].double().cpu()
        gram.addmm_(xb.T, xb)
        cross.addmm_(xb.T, y2[start : start + FIT_BLOCK_ROWS].double().cpu())
    evals, evecs = torch.linalg.eigh(gram)
    cutoff = evals.abs().max() * max(x2.shape[0], d) * torch.finfo(torch.float64).eps
    inverse = torch.where(evals > cutoff, 1.0 / evals, torch.zeros_like(evals))
    transform_matrix = evecs @ (inverse[:, None] * (evecs.T @ cross))
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
    mse: float
    m: int  # pairs used
    source: str
    # lang -> {"n", "mse_shared"[, "mse_own"]}
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    per_language_matrices: dict[str, torch.Tensor] = field(default_factory=dict)  # lang -> (d, d)

    def summary(self) -> dict[str, Any]:
        return {"m": self.m, "mse": self.mse, "source": self.source, "per_language": self.per_language}


def fit_transform(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[Pair],
    m: int,
    seed: int,
    per_language: bool = False,
    source: str = "",
    batch_size: int = 16,
) -> TransformFit:
    """Sample M pairs (seeded), collect the tuned model's RST activations for both sides, fit W_T.

    With `per_language`, each language also gets its own matrix, fitted on its share of the sample.
    Every language's MSE under the shared matrix is always reported.
    """
    sample = sample_pairs(pairs, m, seed)
    if not sample:
        raise HarnessError(f"wt_samples={m}: no pair to fit the transform matrix on")
    hooks = CCHooks(model)
    x = collect_activations(model, tokenizer, [p.text for p in sample], batch_size, hooks)  # (M, L, d)
    y = collect_activations(model, tokenizer, [p.text_en for p in sample], batch_size, hooks)
    faults.point("wt_fit")
    transform_matrix, mse = fit_transform_matrix(x, y)
    fit = TransformFit(transform_matrix, mse, len(sample), source)
    log.info("transform matrix: M=%d pairs, MSE(X W_T, Y) = %.6g", len(sample), mse)
    for lang in sorted({p.lang for p in sample} - {""}):
        rows = [i for i, p in enumerate(sample) if p.lang == lang]
        stats: dict[str, float] = {
            "n": len(rows),
            "mse_shared": transform_mse(x[rows], y[rows], transform_matrix),
        }
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


def fit_transform_for_checkpoint(
    checkpoint_dir: str | Path,
    pairs: Sequence[Pair | tuple[str, str] | tuple[str, str, str]],
    m: int,
    seed: int,
    batch_size: int = 16,
) -> tuple[torch.Tensor, float]:
    """Refit W_T on M pairs with a trained checkpoint, without retraining (the M sweep): (W_T, MSE)."""
    from harness.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(checkpoint_dir))
    model = load_model(str(checkpoint_dir))
    fit = fit_transform(model, tokenizer, as_pairs(pairs), m, seed, batch_size=batch_size)
    return fit.transform_matrix, fit.mse

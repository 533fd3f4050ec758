"""The two-pass CC forward with key/value reuse that `CCLM` (`harness.methods.cc.lm`) scores requests with:
`cc_logits` runs pass 1 over each distinct prompt [0 .. RST] (left-padded, the RST in the last column),
recording a and e there and filling a cache that is cropped before the RST and repeated for every row
sharing the prompt, then pass 2 over [RST .. end] (right-padded, the RST in column 0) with the fused
vector added after the fusion layer; `Row` is one scored sequence, `FuseFn` the fusion callback, and
`new_cache` / `left_pad` the cache and padding helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from harness.methods.cc.hooks import CCHooks
from harness.methods.cc.model import accepts_logits_to_keep

# (a (n, L, d), e (n, d), the n prompts' tokens) -> (fused vector (n, d), chosen layer (n,))
FuseFn = Callable[[torch.Tensor, torch.Tensor, Sequence[Sequence[int]]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Row:
    """One scored sequence: the model input, its RST, and the first position whose logits are needed."""

    tokens: list[int]
    rst: int  # == len(tokens) when the RST is the final token itself (nothing scored depends on fusion)
    start: int


def new_cache(model: nn.Module):
    """A cache that can be cropped back by one token, sliding-window layers included."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if hasattr(cache, "activate_past_recording"):
        cache.activate_past_recording()
    return cache


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids (each (n, width)) with left padding; position ids count
    real tokens only, as `generate` does."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return ids, mask, positions


@torch.no_grad()
def cc_logits(
    model: nn.Module,
    hooks: CCHooks,
    fuse_after_layer: int,
    fuse_fn: FuseFn,
    rows: Sequence[Row],
    pad_id: int,
) -> tuple[list[torch.Tensor], list[tuple[tuple[int, ...], int] | None]]:
    """CC logits of each row for positions row.start .. len(row.tokens) - 1: a list of (n_i, vocab)
    tensors, and each row's (prompt, chosen layer) (None for a row whose RST is not an input)."""
    device = next(model.parameters()).device
    logits_to_keep = accepts_logits_to_keep(model)
    prompts = [tuple(r.tokens[: r.rst + 1]) for r in rows]  # [0 .. RST]: ends with the RST
    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    unique = list(index)
    prompt_of_row = torch.tensor([index[p] for p in prompts], device=device)  # (n,)

    # pass 1: prompts, left-padded: the RST is the last column of every row
    ids1, mask1, positions1 = left_pad(unique, pad_id, device)  # (u, w1)
    # logits are needed for the last `keep` columns of pass 1
    keep = max([1] + [len(p) - r.start for p, r in zip(prompts, rows, strict=True)])
    cache = new_cache(model)
    with hooks.capture(-1) as record:
        out1 = model(
            input_ids=ids1,
            attention_mask=mask1,
            position_ids=positions1,
            past_key_values=cache,
            use_cache=True,
            **({"logits_to_keep": keep} if logits_to_keep else {}),
        )
    logits1 = out1.logits[:, -keep:]  # (u, keep, vocab)
    fused, choice = fuse_fn(record.ffn, record.embedding, unique)  # (u, d), (u,)
    cache.crop(-1)  # the RST is recomputed in pass 2, with the fusion
    cache.batch_select_indices(prompt_of_row)  # one cache row per scored row

    # pass 2: [RST .. end], right-padded: the RST is column 0 of every row
    rests = [r.tokens[r.rst :] for r in rows]
    width2 = max(len(s) for s in rests)
    logits2 = None
    if width2 > 0:
        ids2 = torch.tensor([s + [pad_id] * (width2 - len(s)) for s in rests], device=device)  # (n, w2)
        mask2 = torch.tensor([[1] * len(s) + [0] * (width2 - len(s)) for s in rests], device=device)
        mask = torch.cat([mask1[prompt_of_row, :-1], mask2], dim=1)  # (n, w1 - 1 + w2): cache + new
        rst = torch.tensor([r.rst for r in rows], device=device)
        positions2 = rst[:, None] + torch.arange(width2, device=device)  # (n, w2)
        with hooks.fuse(fuse_after_layer, 0, fused[prompt_of_row]):
            logits2 = model(
                input_ids=ids2,
                attention_mask=mask,
                position_ids=positions2,
                past_key_values=cache,
                use_cache=True,
            ).logits  # (n, w2, vocab)

    out: list[torch.Tensor] = []
    choices: list[tuple[tuple[int, ...], int] | None] = []
    for i, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
        u = int(prompt_of_row[i])
        end1 = min(row.rst, len(row.tokens))  # positions before the RST: pass 1
        parts = (
            [logits1[u, keep - len(prompt) + row.start : keep - len(prompt) + end1]]
            if row.start < end1
            else []
        )
        if row.rst < len(row.tokens):
            parts.append(logits2[i, max(row.start, row.rst) - row.rst : len(row.tokens) - row.rst])
            choices.append((prompt, int(choice[u])))
        else:
            choices.append(None)
        out.append(torch.cat(parts))
    return out, choices

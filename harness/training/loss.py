"""The training loss over the response tokens only.

A causal LM computes logits at every position; supervised fine-tuning needs them only where the next token
is a response token (its label is not -100: the prompt and the padding are masked). Over a 49,152-token
vocabulary (SmolLM2) or 128,256 (Llama 3) those logits, their float32 log-softmax and its gradient are most
of what one training step allocates beyond the decoder layers. So the model runs as usual up to its output
layer, whose input is narrowed by a forward pre-hook to the hidden states of the response positions: the
output layer, the loss and their gradients cover those n positions only, (n, vocab) instead of
(batch, sequence, vocab). The loss is the same next-token cross-entropy, a mean over the same tokens (or
their sum divided by the Trainer's `num_items_in_batch`), so loss and gradients equal the full-logits
computation up to float rounding (`tests/training/test_memory_loss.py`).

The hook goes on the module `get_output_embeddings()` returns, the one a transformers causal LM applies
to its last hidden states; it works through PEFT wrappers and under DDP, DeepSpeed and FSDP (the wrapped
model calls the same module). A model whose forward does not call that module leaves its logits full:
`response_loss` then picks the response positions out of them (no memory saved, the same loss).

`HARNESS_FULL_LOGITS=1` restores the full-logits computation everywhere (the measurement baseline of
`bench/bench_memory.py`, and a way out should a model's output layer not take the narrowing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness.plumbing.errors import HarnessError

if TYPE_CHECKING:
    import torch

FULL_LOGITS_ENV = "HARNESS_FULL_LOGITS"
IGNORE_INDEX = -100


def full_logits() -> bool:
    """Whether `HARNESS_FULL_LOGITS` asks for logits at every position (the code path before this module)."""
    return os.environ.get(FULL_LOGITS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: the positions whose next token is a response token (label != -100)."""
    import torch

    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def response_targets(labels: torch.Tensor) -> torch.Tensor:
    """(n,) the response tokens, in the order of `hidden[response_mask(labels)]` (row by row)."""
    shifted = labels[:, 1:]
    return shifted[shifted != IGNORE_INDEX]


def output_layer(model) -> Any:
    """The module that maps the last hidden states to logits (`lm_head`), through PEFT wrappers."""
    get = getattr(model, "get_output_embeddings", None)
    layer = get() if callable(get) else None
    if layer is None:
        raise HarnessError(
            f"{type(model).__name__} has no output layer (get_output_embeddings() is None); "
            f"train with {FULL_LOGITS_ENV}=1"
        )
    return layer


@contextmanager
def _narrowed(model, select) -> Iterator[None]:
    """Inside the block, the output layer receives `select(hidden)` instead of its input hidden states."""

    def hook(module, args, kwargs):
        if args:
            return (select(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "input": select(kwargs["input"])}

    handle = output_layer(model).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def response_logits(model, labels: torch.Tensor) -> Iterator[None]:
    """Inside the block, `model`'s forward computes logits at the response positions only: (n, vocab),
    rows in the order of `response_targets(labels)`. Pass no `labels` to the model itself (its own loss
    expects full logits); take the loss with `response_loss`."""
    mask = response_mask(labels)

    def select(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 3 or tuple(hidden.shape[:2]) != tuple(mask.shape):
            raise HarnessError(
                f"the output layer received hidden states of shape {tuple(hidden.shape)}, not (batch, seq) = "
                f"{tuple(mask.shape)} as the labels (logits_to_keep?); train with {FULL_LOGITS_ENV}=1"
            )
        return hidden[mask.to(hidden.device)]

    with _narrowed(model, select):
        yield


@contextmanager
def no_logits(model) -> Iterator[None]:
    """Inside the block, `model`'s forward computes no logits at all ((batch, 0, vocab)): for a pass whose
    output is read from hooks on its layers (CC-Tuning's English pass)."""
    with _narrowed(model, lambda hidden: hidden[:, :0]):
        yield


def response_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Next-token cross-entropy over the response tokens, as transformers' causal-LM loss computes it: a
    mean over this batch's response tokens, or their sum divided by `num_items_in_batch` (the Trainer's
    count over the accumulated batch). `logits`: (n, vocab) from `response_logits`, or full (batch, seq,
    vocab) logits, whose response positions are picked here."""
    import torch.nn.functional as F

    targets = response_targets(labels).to(logits.device)
    if logits.dim() == 3:
        logits = logits[response_mask(labels).to(logits.device)]
    if logits.shape[0] != targets.shape[0]:
        raise HarnessError(
            f"{logits.shape[0]} response logits for {targets.shape[0]} response tokens; train with {FULL_LOGITS_ENV}=1"
        )
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    if num_items_in_batch is None:
        return total / max(1, targets.shape[0])
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def response_loss_func(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """`response_loss` as the Trainer's `compute_loss_func` (outputs, labels, num_items_in_batch)."""
    return response_loss(outputs["logits"], labels, num_items_in_batch)

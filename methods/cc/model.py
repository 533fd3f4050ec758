"""CCModel: a causal LM with CC-Tuning's cross-lingual connection, for training.

One training step (METHOD.md, "Training step"):
1. English pass over the templated English prompt: a_l = feed-forward output of layer l at the English
   RST, a: (batch, L, d). No gradient through it by default (`detach_english`, as the authors' runs).
2. Decision Maker: logits = W_DM mean_l(a_l + e), e = the hidden state entering layer 0 of the
   non-English pass at its RST; g = gumbel_softmax(logits, tau, hard) (straight-through one-hot).
3. Fusion: h[RST] += sum_l g_l a_l in the residual stream leaving layer k (default 0).
4. Loss: next-token cross-entropy on the response tokens of the fused non-English pass.

Memory: the English pass computes no logits (`no_logits`) and, under `detach_english`, runs without autograd:
it leaves nothing behind but a; the fused pass computes logits at the response positions only
(`harness.training.loss`). `HARNESS_FULL_LOGITS=1` restores full logits in both (the baseline of
`bench/bench_memory.py`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from harness.methods.cc.hooks import CCHooks
from harness.plumbing.errors import HarnessError
from harness.training.loss import full_logits, no_logits, response_logits, response_loss
from harness.training.trainer import enable_gradient_checkpointing

# Why the CC model cannot score lm-eval's `loglikelihood_rolling` requests (`CCTuning.cannot_evaluate`).
NO_ROLLING = (
    "the CC-Tuning model scores continuations of a prompt (it fuses at the prompt's last token); "
    "loglikelihood_rolling (perplexity) tasks have no prompt: evaluate them with a plain HFLM"
)


@dataclass(frozen=True)
class CCOptions:
    """The CC-Tuning options that shape the model (training and inference)."""

    fixed_source_layer: int = -1  # >= 0: always fuse this layer's activation (no Decision Maker)
    fuse_after_layer: int = 0  # k: the residual stream after decoder layer k receives the fused vector
    dm_tau: float = 1.0  # Gumbel-softmax temperature
    dm_hard: bool = True  # straight-through one-hot (the paper) or soft weights
    detach_english: bool = True  # no gradient through the English pass (the authors' runs; see methods/cc/method.py)
    rst: str = "last"  # which prompt token is the RST: "last", or "authors" (methods.cc.rst.RST_MODES)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CCOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    decision_maker: nn.Linear,
    a: torch.Tensor,
    e: torch.Tensor,
    *,
    sample: bool,
    tau: float = 1.0,
    hard: bool = True,
    fixed_layer: int = -1,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Decision Maker: layer weights g (batch, L) for activations a (batch, L, d) and the input
    embedding e (batch, d), and its logits (batch, L) (None with a fixed source layer).

    `sample=True`: Gumbel-softmax with straight-through gradients (training). `sample=False`
    (evaluation): one-hot argmax when `hard`, softmax / tau for a soft Decision Maker, of the logits plus
    `noise` (batch, L) when given (Gumbel noise drawn per prompt for `eval_gumbel`), else of the logits.
    """
    batch, n_layers, _ = a.shape
    if fixed_layer >= 0:
        if fixed_layer >= n_layers:
            raise HarnessError(
                f"fixed_source_layer={fixed_layer} is out of range; the model has layers 0..{n_layers - 1}"
            )
        g = torch.zeros(batch, n_layers, dtype=a.dtype, device=a.device)
        g[:, fixed_layer] = 1.0
        return g, None
    dm_input = (a + e.unsqueeze(1)).mean(dim=1)  # (batch, d)
    logits = decision_maker(dm_input.to(decision_maker.weight.dtype))  # (batch, L)
    if sample:
        return F.gumbel_softmax(logits.float(), tau=tau, hard=hard).to(a.dtype), logits
    scores = logits.float() + (noise.float() if noise is not None else 0.0)
    if hard:
        g = F.one_hot(scores.argmax(dim=-1), n_layers).float()
    else:
        g = F.softmax(scores / tau, dim=-1)
    return g.to(a.dtype), logits


def histogram_entropy(counts: list[int]) -> float:
    """Entropy (nats) of a histogram of layer choices."""
    total = sum(counts)
    return 0.0 - sum(c / total * math.log(c / total) for c in counts if c) if total else 0.0


def fuse_vector(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_l g_l a_l: g (batch, L), a (batch, L, d) -> (batch, d)."""
    return torch.einsum("bl,bld->bd", g, a)


@dataclass
class CCOutput(ModelOutput):
    """What one training forward returns (a ModelOutput, so the Trainer reads `outputs["loss"]`)."""

    loss: torch.Tensor | None = None
    layer_choice: torch.Tensor | None = None  # (batch,) argmax of g: the chosen source layer
    dm_entropy: torch.Tensor | None = None  # (batch,) entropy of softmax(DM logits); None with a fixed layer
    english_activations: torch.Tensor | None = None  # a (batch, L, d)
    logits: torch.Tensor | None = None  # (batch, seq, vocab), when asked for (`return_logits`)


class CCModel(nn.Module):
    """A causal LM plus the Decision Maker W_DM (nn.Linear(d, L, bias=False)), trained jointly."""

    accepts_loss_kwargs = True  # forward normalises the loss by the Trainer's `num_items_in_batch`

    def __init__(self, lm: nn.Module, options: CCOptions | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.options = options or CCOptions()
        self.hooks = CCHooks(lm)
        config = lm.config.get_text_config(decoder=True)
        self.num_layers = self.hooks.num_layers
        self.hidden_size = int(config.hidden_size)
        self.decision_maker = nn.Linear(self.hidden_size, self.num_layers, bias=False)
        # as the authors (and the model's own linear layers): N(0, initializer_range); seeded by the caller
        nn.init.normal_(self.decision_maker.weight, std=float(getattr(config, "initializer_range", 0.02)))
        if self.options.fixed_source_layer >= 0:
            self.decision_maker.requires_grad_(False)  # never used: no optimizer state, nothing for DDP to wait on
        # HARNESS_FULL_LOGITS: the English pass asks for the last position's logits only, where the model allows it
        self._one_logit = {"logits_to_keep": 1} if accepts_logits_to_keep(lm) else {}
        if self.options.fuse_after_layer >= self.num_layers:
            raise HarnessError(
                f"fuse_after_layer={self.options.fuse_after_layer} is out of range; the model has layers 0..{self.num_layers - 1}"
            )

    @property
    def config(self):
        return self.lm.config

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None) -> None:
        """Gradient (activation) checkpointing of the LM's decoder layers, with CC's hooks replayed when a
        layer is recomputed in the backward pass (`CCHooks.checkpoint_function`).

        With `use_reentrant=True` (LLaMA-Factory's default, so the authors' runs) a checkpointed layer's
        first forward runs under `no_grad`: the English activations captured inside it carry no gradient,
        whatever `detach_english` says. With `use_reentrant=False` they keep their gradient."""
        enable_gradient_checkpointing(self.lm, **(activation_checkpointing_kwargs or {}))
        for module in self.lm.modules():
            func = getattr(module, "_gradient_checkpointing_func", None)
            if func is not None and getattr(module, "gradient_checkpointing", False):
                module._gradient_checkpointing_func = self.hooks.checkpoint_function(func)

    @property
    def _no_split_modules(self) -> list[str] | None:
        """The LM's decoder-layer classes, which FSDP's transformer-layer auto wrap reads off this model."""
        return getattr(self.lm, "_no_split_modules", None)

    def english_activations(
        self, en_input_ids: torch.Tensor, en_attention_mask: torch.Tensor, en_rst: torch.Tensor
    ) -> torch.Tensor:
        """a (batch, L, d): feed-forward outputs at the English RST. Under `detach_english` the pass runs without
        autograd, so each layer's activations are freed as soon as the next layer has read them; it computes
        no logits (with `HARNESS_FULL_LOGITS`, the last position's where the model allows it, as before)."""
        grad = torch.enable_grad() if not self.options.detach_english else torch.no_grad()
        kwargs = self._one_logit if full_logits() else {}
        logits = contextlib.nullcontext() if full_logits() else no_logits(self.lm)
        with grad, logits, self.hooks.capture(en_rst) as record:
            self.lm(input_ids=en_input_ids, attention_mask=en_attention_mask, use_cache=False, **kwargs)
        return record.ffn

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, seq) non-English prompt + response, right-padded
        attention_mask: torch.Tensor,
        labels: torch.Tensor,  # (batch, seq), -100 on the prompt and padding
        rst: torch.Tensor,  # (batch,)
        en_input_ids: torch.Tensor,  # (batch, seq_en) English prompt, right-padded
        en_attention_mask: torch.Tensor,
        en_rst: torch.Tensor,  # (batch,)
        num_items_in_batch: torch.Tensor | int | None = None,
        return_logits: bool = False,
    ) -> CCOutput:
        a = self.english_activations(en_input_ids, en_attention_mask, en_rst)  # (batch, L, d)
        decision: dict[str, torch.Tensor | None] = {}

        def fused(e: torch.Tensor) -> torch.Tensor:  # e (batch, d) -> (batch, d)
            g, logits = decide(
                self.decision_maker,
                a,
                e,
                sample=self.training,  # Gumbel noise in training only; eval() takes the argmax
                tau=self.options.dm_tau,
                hard=self.options.dm_hard,
                fixed_layer=self.options.fixed_source_layer,
            )
            decision["g"], decision["logits"] = g, logits
            return fuse_vector(g, a)

        full = return_logits or full_logits()  # else logits at the response positions only: (n, vocab)
        only_response = contextlib.nullcontext() if full else response_logits(self.lm, labels)
        with self.hooks.fuse(self.options.fuse_after_layer, rst, fused), only_response:
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        if full:
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        else:
            loss = response_loss(logits, labels, num_items_in_batch)
        dm_logits = decision["logits"]
        entropy = None
        if dm_logits is not None:
            log_p = F.log_softmax(dm_logits.detach().float(), dim=-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
        return CCOutput(
            loss=loss,
            layer_choice=decision["g"].detach().argmax(dim=-1),
            dm_entropy=entropy,
            english_activations=a,
            logits=logits if return_logits else None,
        )


def accepts_logits_to_keep(lm: nn.Module) -> bool:
    forward = getattr(lm, "get_base_model", lambda: lm)().forward
    return "logits_to_keep" in inspect.signature(forward).parameters


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Next-token cross-entropy over labels != -100 from full logits: a mean over this batch, or the sum divided
    by `num_items_in_batch` (the Trainer's token count over the accumulated batch), as transformers does. The
    full-logits path (`return_logits`, `HARNESS_FULL_LOGITS`); training takes `response_loss`."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])  # (batch * (seq - 1), vocab)
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch

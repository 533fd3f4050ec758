"""The CC-aware lm-eval model: HFLM with CC-Tuning's monolingual inference.

For each prompt (METHOD.md, "Inference"): pass 1 computes the prompt's own feed-forward outputs a at
its RST, a_hat = a W_T (identity with `use_wt=False`), the Decision Maker picks a layer (argmax; Gumbel
sampling with `eval_gumbel`), and pass 2 scores or generates with sum_l g_l a_hat_l added after layer k
at the RST.

Key/value reuse. Fusion changes nothing before the RST (the model is causal), so the two passes share
everything up to it:
- pass 1 runs the prompt [0 .. RST] once, left-padded so every row's RST is the last column; it records
  a and e at that column and fills a cache; the cache is then cropped by one position (the RST's own
  keys/values were computed without the fusion) and its rows are repeated for every request that
  shares the prompt (multiple-choice options score one prompt pass);
- pass 2 runs [RST .. end] on that cache, right-padded so every row's RST is column 0, with the fused
  vector added there. Logits of positions before the RST come from pass 1.
Scored requests go through `harness.methods.cc.two_pass.cc_logits`; generation does pass 1 in `CCLM._model_generate`
and lets `generate` run pass 2.
CC inference therefore costs one extra token per request over plain inference, and less than plain
inference when several continuations share a prompt. `tests/methods/test_cc_lm.py` checks it against two full
forward passes.

RST of a request. lm-eval moves the trailing whitespace of a context into the continuation (the "\\n"
that ends a chat-templated prompt, for instance); the RST is still the last token of the prompt as the
model was trained on it: the last token of `tok_encode(context)` that the scored sequence shares.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from torch import nn
from tqdm import tqdm

from harness.data.base import LANGUAGES
from harness.methods.cc.hooks import CCHooks
from harness.methods.cc.model import (
    NO_ROLLING,
    CCOptions,
    accepts_logits_to_keep,
    decide,
    fuse_vector,
    histogram_entropy,
)
from harness.methods.cc.rst import rst_offset
from harness.methods.cc.transform import CCWeights, load_cc
from harness.methods.cc.two_pass import Row, cc_logits, new_cache
from harness.plumbing.errors import HarnessError

log = logging.getLogger(__name__)

def prompt_gumbel_noise(prompts: Sequence[Sequence[int]], n_layers: int, seed: int) -> torch.Tensor:
    """Gumbel(0, 1) noise (n, L) for the Decision Maker at evaluation (`eval_gumbel`), drawn from a
    generator seeded by (`seed`, the prompt's tokens): a prompt gets the same noise in any batch, order or
    resumed chunk, and another `eval_seed` gives another sample."""
    rows = []
    for prompt in prompts:
        digest = hashlib.sha256(json.dumps([seed, list(prompt)]).encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        uniform = torch.rand(n_layers, generator=generator, dtype=torch.float64).clamp_min(1e-20)
        rows.append(-torch.log(-torch.log(uniform)))
    return torch.stack(rows).float()


def language_of(task_name: str | None) -> str | None:
    """The language of a task named like `xnli_sw` or `xnli_sw_gen` (its last part that is a language code)."""
    parts = [p for p in (task_name or "").split("_") if p in LANGUAGES]
    return parts[-1] if parts else None


class CCLM(HFLM):
    """lm-eval's HFLM evaluating a CC-Tuning checkpoint (the model plus `cc.safetensors`)."""

    def __init__(
        self,
        pretrained: str | nn.Module,
        cc: CCWeights | str | Path | None = None,
        use_wt: bool = True,
        eval_gumbel: bool = False,
        wt_per_language: bool = False,
        eval_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(pretrained=pretrained, **kwargs)
        if cc is None:
            if not isinstance(pretrained, (str, Path)):
                raise HarnessError(
                    "CCLM: pass `cc` (CCWeights or a folder with cc.safetensors) with a model object"
                )
            cc = Path(pretrained)
        weights = cc if isinstance(cc, CCWeights) else load_cc(cc)
        self.cc_options = CCOptions.from_dict(weights.options)
        self.hooks = CCHooks(self.model)
        hidden = int(self.model.config.get_text_config(decoder=True).hidden_size)
        expected = (self.hooks.num_layers, hidden)
        if tuple(weights.decision_maker.shape) != expected:
            raise HarnessError(
                f"cc.safetensors: decision_maker has shape {tuple(weights.decision_maker.shape)}, the model needs {expected}"
            )
        self.decision_maker = nn.Linear(hidden, self.hooks.num_layers, bias=False).to(self.device)
        self.decision_maker.weight.data.copy_(weights.decision_maker)
        self.decision_maker.eval()
        if use_wt and weights.transform_matrix is None:
            raise HarnessError(
                "cc.safetensors has no transform_matrix; refit it or evaluate with use_wt=false"
            )
        if wt_per_language and not weights.per_language:
            raise HarnessError(
                "cc.safetensors has no per-language transform matrices; train with wt_per_language=true"
            )
        self.transform_matrix = weights.transform_matrix.to(self.device) if use_wt else None
        self.per_language = (
            {k: v.to(self.device) for k, v in weights.per_language.items()}
            if use_wt and wt_per_language
            else {}
        )
        self.use_wt, self.eval_gumbel, self.wt_per_language = use_wt, eval_gumbel, wt_per_language
        self.eval_seed = int(eval_seed)
        self.rst_offset = rst_offset(self.tokenizer, self.cc_options.rst)  # as the model was trained
        self._lang: str | None = None  # language of the requests being run
        # digest of (language, prompt tokens) -> (language, chosen layer); stable across processes so
        # the run's evaluation cache can save and restore it (`cache_state` / `restore_state`)
        self._choices: dict[str, tuple[str | None, int]] = {}

    # -- CC inference -------------------------------------------------------------------------

    def _fuse(
        self, a: torch.Tensor, e: torch.Tensor, prompts: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """a (n, L, d), e (n, d), the prompts' tokens -> fused vector (n, d), chosen layer (n,)."""
        matrix = (
            self.per_language.get(self._lang, self.transform_matrix) if self._lang else self.transform_matrix
        )
        a_hat = a.float() @ matrix if matrix is not None else a.float()  # (n, L, d)
        noise = (
            prompt_gumbel_noise(prompts, self.hooks.num_layers, self.eval_seed).to(a.device)
            if self.eval_gumbel
            else None
        )
        g, _ = decide(
            self.decision_maker,
            a_hat,
            e.float(),
            sample=False,
            noise=noise,
            tau=self.cc_options.dm_tau,
            hard=self.cc_options.dm_hard,
            fixed_layer=self.cc_options.fixed_source_layer,
        )
        return fuse_vector(g, a_hat), g.argmax(dim=-1)

    def _record(self, prompt: Sequence[int], layer: int) -> None:
        digest = hashlib.sha1(json.dumps([self._lang, list(prompt)]).encode()).hexdigest()
        self._choices.setdefault(digest, (self._lang, layer))

    def cache_state(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self._choices.items()}

    def restore_state(self, state: dict[str, Any]) -> None:
        for k, (lang, layer) in state.items():
            self._choices.setdefault(k, (lang, int(layer)))

    def artifacts(self) -> dict[str, Any]:
        """The Decision Maker's layer choices over the evaluation prompts (one per distinct prompt)."""
        hist = [0] * self.hooks.num_layers
        per_language: dict[str, list[int]] = {}
        for lang, layer in self._choices.values():
            hist[layer] += 1
            per_language.setdefault(lang or "unknown", [0] * self.hooks.num_layers)[layer] += 1
        return {
            "eval_layer_hist": hist,
            "eval_layer_entropy": histogram_entropy(hist),
            "eval_layer_hist_per_language": per_language,
            "eval_prompts": len(self._choices),
            "decision": "gumbel" if self.eval_gumbel else "argmax",
            "eval_seed": self.eval_seed if self.eval_gumbel else None,
            "rst": self.cc_options.rst,
            "use_wt": self.use_wt,
            "wt_per_language": self.wt_per_language,
            **{
                k: v
                for k, v in self.cc_options.to_dict().items()
                if k in ("fixed_source_layer", "fuse_after_layer")
            },
        }

    # -- lm-eval entry points -----------------------------------------------------------------

    def _per_language(self, requests: list, run: Callable, disable_tqdm: bool) -> list:
        """Run the requests language by language, so each gets its own W_T (with `wt_per_language`)
        and its layer choices are counted under its language."""
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[language_of(getattr(request, "task_name", None))].append(i)
        results: list = [None] * len(requests)
        try:
            for lang, indices in groups.items():
                self._lang = lang
                for i, result in zip(
                    indices, run([requests[i] for i in indices], disable_tqdm=disable_tqdm), strict=True
                ):
                    results[i] = result
        finally:
            self._lang = None
        return results

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._per_language(requests, super().loglikelihood, disable_tqdm)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self._per_language(requests, super().generate_until, disable_tqdm)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise HarnessError(NO_ROLLING)

    def _rst(
        self, context: str, context_enc: list[int], whole: list[int], cache: dict[str, list[int]]
    ) -> int:
        """Index in `whole` of the RST: `rst_offset` tokens from the end of the prompt, and at most the
        last prompt token that the scored sequence shares (see the module docstring)."""
        if not context:
            return len(context_enc) - self.rst_offset
        if context not in cache:
            cache[context] = self.tok_encode(context)
        prompt = cache[context]
        shared = 0
        for a, b in zip(prompt, whole, strict=False):
            if a != b:
                break
            shared += 1
        if shared == 0:
            raise HarnessError(f"cannot locate the prompt of the request {context[:60]!r} in its tokens")
        return min(shared - 1, len(prompt) - self.rst_offset)

    def _loglikelihood_tokens(
        self, requests: list, disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        # Requests with the same model input and RST share one row (one-token options of a question, say).
        rows_of: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        tokens_of: list[list[int]] = []
        prompt_tokens: dict[str, list[int]] = {}
        for n, (strings, context_enc, continuation_enc) in enumerate(requests):
            if strings is None:
                raise HarnessError(NO_ROLLING)
            whole = context_enc + continuation_enc
            tokens = whole[-(self.max_length + 1) :]
            rst = self._rst(strings[0], context_enc, whole, prompt_tokens) - (len(whole) - len(tokens))
            if rst < 0:
                raise HarnessError(
                    f"request longer than max_length={self.max_length}: left truncation would cut the prompt's RST"
                )
            rows_of[(tuple(tokens[:-1]), rst)].append(n)
            tokens_of.append(tokens)
        # one prompt's rows together (they share pass 1), longest prompts first
        keys = sorted(rows_of, key=lambda k: (-min(k[1] + 1, len(k[0])), k[0][: k[1] + 1], -len(k[0])))
        batch_size = override_bs or (
            self.batch_size if self.batch_size != "auto" else self._detect_batch_size()
        )
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running CC loglikelihood requests",
        )
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            rows = []
            for inp, rst in chunk:
                n_scored = max(len(requests[n][2]) for n in rows_of[(inp, rst)])
                rows.append(Row(list(inp), rst, len(inp) - n_scored))
            logits, choices = cc_logits(
                self.model, self.hooks, self.cc_options.fuse_after_layer, self._fuse, rows, self._pad_id()
            )
            for key, row_logits, choice in zip(chunk, logits, choices, strict=True):
                if choice is not None:
                    self._record(*choice)
                log_probs = F.log_softmax(row_logits.float(), dim=-1)  # (n_scored, vocab)
                for n in rows_of[key]:
                    strings, _, continuation_enc = requests[n]
                    target = torch.tensor(tokens_of[n][-len(continuation_enc) :], device=log_probs.device)
                    scored = log_probs[-len(continuation_enc) :]  # (n_cont, vocab)
                    answer = (
                        float(scored.gather(1, target[:, None]).sum()),
                        bool((scored.argmax(dim=-1) == target).all()),
                    )
                    results[n] = answer
                    self.cache_hook.add_partial("loglikelihood", strings, answer)
                    pbar.update(1)
        pbar.close()
        return results

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eot_token_id)

    @torch.no_grad()
    def _model_generate(
        self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs
    ) -> torch.Tensor:
        """Pass 1 over the left-padded prompts (the RST is column -rst_offset), then `generate` on the
        cache cropped before the RST, fusing into its first forward call (whose columns start at the RST)."""
        attention_mask = generation_kwargs.pop("attention_mask", None)
        if attention_mask is None:
            attention_mask = torch.ones_like(context)
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = new_cache(self.model)
        rst = -self.rst_offset
        with self.hooks.capture(rst) as record:
            self.model(
                input_ids=context,
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                **({"logits_to_keep": 1} if accepts_logits_to_keep(self.model) else {}),
            )
        prompts = [
            [t for t, m in zip(row, mask, strict=True) if m]
            for row, mask in zip(context.tolist(), attention_mask.tolist(), strict=True)
        ]
        fused, choice = self._fuse(record.ffn, record.embedding, prompts)  # (batch, d), (batch,)
        for prompt, layer in zip(prompts, choice.tolist(), strict=True):
            self._record(prompt, layer)
        cache.crop(-self.rst_offset)  # the RST and the prompt tokens after it are recomputed with the fusion
        with self.hooks.fuse(self.cc_options.fuse_after_layer, rst, fused, once=True):
            return super()._model_generate(
                context,
                max_length,
                stop,
                attention_mask=attention_mask,
                past_key_values=cache,
                **generation_kwargs,
            )

"""CC-Tuning's representations for the per-layer alignment analysis (`Method.alignment_views`,
`harness.evaluation.alignment`): the feed-forward outputs at the RST of every decoder layer, which CC-Tuning
fuses, as they are (`ffn`) and mapped by the Transform Matrix (`ffn+W_T`: a_l W_T for a non-English prompt,
the English prompt's own a_l, the target W_T was fitted to reach). W_T is the checkpoint's shared matrix, or
the language's own when the run evaluates with per-language matrices and the checkpoint holds one.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.data.chat import encode_prompt
from harness.evaluation.alignment import batches
from harness.methods.cc.transform import collect_activations, load_cc

FFN = "ffn"
FFN_WT = "ffn+W_T"


class CCAlignmentViews:
    """`(model, tokenizer, texts, lang, batch_size) -> {"ffn": (n, L, d), "ffn+W_T": (n, L, d)}` for one CC
    checkpoint (`ffn+W_T` only when the checkpoint holds a W_T)."""

    descriptions = {
        FFN: "feed-forward outputs at CC-Tuning's RST, per decoder layer",
        FFN_WT: "the same, non-English ones mapped by W_T (what CC-Tuning fuses at test time)",
    }

    def __init__(self, checkpoint: str, per_language: bool = False) -> None:
        weights = load_cc(checkpoint)
        self.rst = str(weights.options.get("rst", "last"))
        self.transform_matrix = weights.transform_matrix
        self.per_language = weights.per_language if per_language else {}

    def matrix(self, lang: str) -> torch.Tensor | None:
        return self.per_language.get(lang, self.transform_matrix)

    def __call__(self, model, tokenizer, texts: list[str], lang: str, batch_size: int) -> dict[str, Any]:
        # The decoder without its LM head (no logits to compute or hold), in batches of bounded padded tokens.
        decoder = getattr(model, "base_model", model)
        lengths = [len(encode_prompt(tokenizer, text)) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        ffn = torch.empty(0)
        for batch in batches([lengths[i] for i in order], batch_size):
            rows = [order[k] for k in batch]
            part = collect_activations(decoder, tokenizer, [texts[i] for i in rows], len(rows), rst=self.rst)
            if ffn.numel() == 0:
                ffn = torch.empty(len(texts), *part.shape[1:])
            ffn[rows] = part  # (n, L, d)
        views = {FFN: ffn}
        matrix = self.matrix(lang)
        if matrix is not None:
            views[FFN_WT] = ffn if lang == "en" else ffn @ matrix.float()
        return views

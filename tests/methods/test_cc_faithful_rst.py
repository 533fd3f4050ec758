"""CC-Tuning as its authors ran it: the Response Start Token per model family, from training to inference."""

from __future__ import annotations

import pytest
import torch

from harness.data.base import Example
from harness.data.chat import encode_prompt, format_prompt
from harness.methods.cc import CCDataset, CCTuning
from harness.methods.cc import hooks as hooks_module
from harness.methods.cc.hooks import CCHooks
from harness.methods.cc.model import CCModel, CCOptions
from harness.methods.cc.rst import rst_offset
from harness.methods.cc.transform import CCWeights, collect_activations
from harness.plumbing.errors import HarnessError
from harness.training.trainer import pad_collate
from tests.methods.cc_faithful_helpers import PROMPTS, tiny_lm
from tests.tiny import family_tokenizer, tiny_tokenizer

# -- 3. the RST per family ----------------------------------------------------------------------


def expected_rst_token(family: str, tokenizer, mode: str) -> tuple[int | None, int | None]:
    """(token id at the RST, token id right after it) that `mode` must pick for `family`; None: any."""
    vocab = tokenizer.get_vocab()
    last = {"qwen2": "Ċ", "mistral": "[/INST]", "llama3": "\n\n"}[family]
    if mode == "last":
        return vocab[last], None
    if family == "qwen2":
        return vocab["assistant"], vocab["Ċ"]
    if family == "mistral":
        return None, vocab["[/INST]"]  # the instruction's last token
    return vocab[last], None


@pytest.mark.parametrize(
    "family, mode, offset",
    [("qwen2", "authors", 2), ("qwen2", "last", 1), ("mistral", "authors", 2), ("mistral", "last", 1),
     ("llama3", "authors", 1), ("llama3", "last", 1)],
)  # fmt: skip
def test_rst_offset_per_family(family, mode, offset):
    tokenizer = family_tokenizer(family)
    assert rst_offset(tokenizer, mode) == offset
    ids = encode_prompt(tokenizer, "quelle est la capitale")
    at, after = expected_rst_token(family, tokenizer, mode)
    assert at is None or ids[-offset] == at
    assert after is None or ids[-offset + 1] == after


def test_authors_rst_needs_a_known_template():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None  # our plain template: none of the authors' markers
    with pytest.raises(HarnessError, match="rst=authors.*use rst=last"):
        rst_offset(tokenizer, "authors")
    with pytest.raises(HarnessError, match="unknown RST mode 'first'"):
        rst_offset(tokenizer, "first")
    with pytest.raises(HarnessError, match="valid: authors, last"):
        CCTuning(rst="middle")


class RSTSpy:
    """Records, for every CC capture and fusion, the token at the RST and the one after it (None past
    the end of the input), reading the input ids of the forward call that is running."""

    def __init__(self, model, monkeypatch) -> None:
        self.ids: torch.Tensor | None = None
        self.seen: list[tuple[int, int | None]] = []
        model.get_input_embeddings().register_forward_hook(lambda m, args, out: setattr(self, "ids", args[0]))
        original = hooks_module._at

        def at(hidden, rst):
            rows = torch.arange(self.ids.shape[0])
            cols = torch.full_like(rows, rst % self.ids.shape[1]) if isinstance(rst, int) else rst.cpu()
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                after = int(self.ids[r, c + 1]) if c + 1 < self.ids.shape[1] else None
                self.seen.append((int(self.ids[r, c]), after))
            return original(hidden, rst)

        monkeypatch.setattr(hooks_module, "_at", at)

    def check(self, at: int | None, after: int | None, pad: int) -> None:
        assert self.seen
        for token, following in self.seen:
            assert token != pad
            assert at is None or token == at
            assert after is None or following is None or following == after
        if at is None:  # the RST is known by its successor only: some record must have seen it
            assert any(following == after for _, following in self.seen)
        self.seen.clear()




@pytest.mark.parametrize("family", ["qwen2", "mistral"])
@pytest.mark.parametrize("mode", ["authors", "last"])
def test_rst_lands_on_the_token_in_training_wt_fit_and_inference(family, mode, monkeypatch):
    from lm_eval.api.instance import Instance

    from harness.methods.cc.lm import CCLM

    tokenizer = family_tokenizer(family)
    pad = tokenizer.pad_token_id
    arch = "qwen2" if family == "qwen2" else "mistral"
    lm = tiny_lm(arch, vocab=len(tokenizer))
    lm.generation_config.eos_token_id = None
    spy = RSTSpy(lm, monkeypatch)
    at, after = expected_rst_token(family, tokenizer, mode)

    # training: both passes of a right-padded batch of different lengths
    examples = [Example(str(i), "fr", text, "the answer", f"english {text}") for i, text in enumerate(PROMPTS)]
    dataset = CCDataset(tokenizer, examples, 128, rst_offset(tokenizer, mode))
    model = CCModel(lm, CCOptions(rst=mode)).train()
    model(**pad_collate(pad)([dataset[i] for i in range(len(dataset))]))
    spy.check(at, after, pad)

    # the W_T fit: right padding, batches of unequal lengths
    collect_activations(lm, tokenizer, PROMPTS, batch_size=2, rst=mode)
    spy.check(at, after, pad)

    # inference: pass 1 left-padded (RST in the last column / column -offset), pass 2 from the RST
    weights = CCWeights(torch.randn(3, 32), torch.eye(32), options={"rst": mode, "fuse_after_layer": 0})
    cclm = CCLM(pretrained=lm.eval(), tokenizer=tokenizer, cc=weights, batch_size=3)
    contexts = [format_prompt(tokenizer, text) for text in PROMPTS]
    requests = [(c, option) for c in contexts for option in (" la", " the cat")]
    cclm.loglikelihood([Instance("loglikelihood", {}, r, i, ("xnli_fr", i, 1)) for i, r in enumerate(requests)])
    spy.check(at, None, pad)  # pass 1 ends at the RST; pass 2 starts there
    gen = [(c, {"until": ["@@@"], "max_gen_toks": 3}) for c in contexts]
    cclm.generate_until([Instance("generate_until", {}, g, i, ("xnli_fr", i, 1)) for i, g in enumerate(gen)])
    spy.check(at, after, pad)


@pytest.mark.parametrize("mode", ["authors", "last"])
def test_generation_with_the_authors_rst_equals_two_full_passes(mode):
    """KV reuse with the RST before the prompt's end: pass 2 recomputes the RST and the tokens after it."""
    from lm_eval.api.instance import Instance

    from harness.methods.cc.lm import CCLM

    tokenizer = family_tokenizer("qwen2")
    lm = tiny_lm("qwen2", vocab=len(tokenizer)).eval()
    lm.generation_config.eos_token_id = None
    g = torch.Generator().manual_seed(3)
    weights = CCWeights(torch.randn(3, 32, generator=g), torch.eye(32) + torch.randn(32, 32, generator=g) / 8,
                        options={"rst": mode, "fuse_after_layer": 0})  # fmt: skip
    cclm = CCLM(pretrained=lm, tokenizer=tokenizer, cc=weights, batch_size=2)
    contexts = [format_prompt(tokenizer, text) for text in PROMPTS]
    got = cclm.generate_until([Instance("generate_until", {}, (c, {"until": ["@@@"], "max_gen_toks": 4}), i,
                                        ("xnli_fr", i, 1)) for i, c in enumerate(contexts)])  # fmt: skip
    hooks = CCHooks(lm)
    for context, text in zip(contexts, got, strict=True):
        tokens = tokenizer(context, add_special_tokens=False)["input_ids"]
        prompt_len, rst = len(tokens), len(tokens) - rst_offset(tokenizer, mode)
        for _ in range(4):
            with torch.no_grad():
                with hooks.capture(rst) as record:
                    lm(input_ids=torch.tensor([tokens[: rst + 1]]))
                a_hat = record.ffn.float() @ weights.transform_matrix
                layer = ((a_hat + record.embedding[:, None]).mean(1) @ weights.decision_maker.T).argmax(-1)
                with hooks.fuse(0, torch.tensor([rst]), a_hat[0, layer]):
                    tokens.append(int(lm(input_ids=torch.tensor([tokens])).logits[0, -1].argmax()))
        assert text == tokenizer.decode(tokens[prompt_len:], skip_special_tokens=True)

"""CC-Tuning model: hooks on five architectures, the training batch and step, the Decision Maker."""

from __future__ import annotations

import pytest
import torch

from harness.data.base import Example
from harness.data.chat import encode_prompt
from harness.methods.cc.hooks import CCHooks, decoder_layers
from harness.methods.cc.model import CCModel, CCOptions, decide, fuse_vector
from harness.training.trainer import pad_collate
from tests.methods.cc_helpers import ARCHS, EXAMPLES, make_model, random_rows


def right_pad(seqs: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


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
    from harness.methods.cc import CCDataset

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
    from harness.methods.cc import CCDataset

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

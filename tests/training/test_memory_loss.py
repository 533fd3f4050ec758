"""The loss over response tokens only (`harness.training.loss`): the output layer runs on the response positions,
and loss and gradients equal those of the full-logits computation (`HARNESS_FULL_LOGITS=1`, the code before),
for vanilla SFT (through the Trainer's `compute_loss`) and CC-Tuning, with and without LoRA and gradient
checkpointing; CC's English pass computes no logits and keeps nothing but its activations at the RST."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.methods.cc.model import CCModel, CCOptions
from harness.training.loss import FULL_LOGITS_ENV, no_logits, response_logits, response_loss
from harness.training.memory import measure, measure_peak
from harness.training.settings import TrainSettings
from harness.training.trainer import apply_lora, enable_gradient_checkpointing, sft_trainer_class
from tests.methods.cc_faithful_helpers import cc_batch, tiny_lm
from tests.methods.cc_helpers import ARCHS, make_model
from tests.tiny import tiny_llama, tiny_tokenizer

LORA = TrainSettings(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)


def grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(loss_a, grads_a, loss_b, grads_b) -> None:
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def lm(lora: bool, tied: bool = False):
    model = tiny_llama(tiny_tokenizer()) if tied else tiny_lm()
    model = apply_lora(model, LORA) if lora else model
    return model.train()


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("items", [None, 13])
def test_response_loss_equals_the_full_logits_loss(lora, checkpointing, items):
    batch = cc_batch()
    full_model = lm(lora)
    model = copy.deepcopy(full_model)
    if checkpointing:
        enable_gradient_checkpointing(full_model)
        enable_gradient_checkpointing(model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    kwargs = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    full = full_model(**inputs, labels=batch["labels"], **kwargs).loss  # transformers' own causal-LM loss
    full.backward()
    seen = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    with response_logits(model, batch["labels"]):
        logits = model(**inputs).logits
    loss = response_loss(logits, batch["labels"], kwargs.get("num_items_in_batch"))
    loss.backward()
    n = int((batch["labels"][:, 1:] != -100).sum())
    assert seen == [(n, head.out_features)]  # the output layer ran on the response positions only
    assert_same(loss, grads(model), full, grads(full_model))


def test_full_logits_given_to_response_loss_give_the_same_loss():
    batch = cc_batch()
    model = tiny_lm()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(response_loss(logits, batch["labels"]), expected)


@pytest.mark.parametrize("lora", [False, True])
def test_the_trainer_loss_equals_the_plain_trainers(lora, tmp_path, monkeypatch):
    """`sft_trainer_class()` (the default of `run_trainer`) against `transformers.Trainer`, one micro-batch of
    an accumulated batch: the same loss (normalised by the Trainer's token count) and gradients."""
    from transformers import Trainer, TrainingArguments

    batch = cc_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    items = torch.tensor(2 * int((batch["labels"][:, 1:] != -100).sum()))  # two micro-batches accumulated
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    plain_model = lm(lora, tied=True)
    model = copy.deepcopy(plain_model)
    plain = Trainer(model=plain_model, args=args)
    ours = sft_trainer_class()(model=model, args=args)
    assert ours.compute_loss_func is not None and plain.compute_loss_func is None
    expected = plain.compute_loss(plain_model, dict(inputs), num_items_in_batch=items)
    expected.backward()
    loss = ours.compute_loss(model, dict(inputs), num_items_in_batch=items)
    loss.backward()
    assert_same(loss, grads(model), expected, grads(plain_model))
    monkeypatch.setenv(FULL_LOGITS_ENV, "1")  # the code path before: the plain Trainer's loss
    assert sft_trainer_class()(model=copy.deepcopy(plain_model), args=args).compute_loss_func is None


def cc_step(options: CCOptions, lora: bool, checkpointing: str | None):
    model = CCModel(lm(lora), options)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
    model.train()
    torch.manual_seed(5)  # the Gumbel noise
    out = model(**cc_batch(), num_items_in_batch=torch.tensor(17))
    out.loss.backward()
    return out.loss.detach(), grads(model)


@pytest.mark.parametrize(
    "detach, lora, checkpointing",
    [(True, False, None), (False, False, None), (True, True, None), (False, True, None),
     (True, False, "reentrant"), (False, False, "non-reentrant")],
)  # fmt: skip
def test_cc_loss_and_gradients_equal_the_full_logits_computation(detach, lora, checkpointing, monkeypatch):
    options = CCOptions(detach_english=detach)
    loss, ours = cc_step(options, lora, checkpointing)
    monkeypatch.setenv(FULL_LOGITS_ENV, "1")
    full_loss, full = cc_step(options, lora, checkpointing)
    assert_same(loss, ours, full_loss, full)
    assert ("lm.model.embed_tokens.weight" in ours) or lora


@pytest.mark.parametrize("arch", ARCHS)
def test_cc_on_every_architecture(arch, monkeypatch):
    """Gemma's scaled embeddings and soft-capped logits, GPT-2's own output layer: the same loss and gradients."""
    results = []
    for full in ("0", "1"):
        monkeypatch.setenv(FULL_LOGITS_ENV, full)
        model = CCModel(make_model(arch).train(), CCOptions())
        torch.manual_seed(5)
        out = model(**cc_batch())
        out.loss.backward()
        results += [out.loss.detach(), grads(model)]
    assert_same(*results)


def test_cc_english_pass_computes_no_logits_and_keeps_only_its_activations():
    batch = cc_batch()
    model = CCModel(tiny_lm(), CCOptions(detach_english=True)).train()
    shapes = []
    model.lm.get_output_embeddings().register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    english = measure(lambda: model.english_activations(batch["en_input_ids"], batch["en_attention_mask"], batch["en_rst"]))
    a = english.result
    assert shapes == [(2, 0, 400)] and a.shape == (2, 3, 32) and a.grad_fn is None
    # a, and the per-layer rows it was stacked from (the capture's record), nothing else: no logits, no layer
    # output, no autograd graph
    assert english.retained <= 2 * a.numel() * 4 + 1024
    # with gradient through it, the English pass still computes no logits
    model.options = CCOptions(detach_english=False)
    shapes.clear()
    assert model.english_activations(batch["en_input_ids"], batch["en_attention_mask"], batch["en_rst"]).requires_grad
    assert shapes == [(2, 0, 400)]


def test_response_logits_use_less_memory_than_full_logits():
    """8 sequences of 64 tokens, 16 of them response tokens, over a 4,000-token vocabulary: the full logits and
    their gradients (3 x 8 MB) outweigh the tiny model's layers, and the response-only ones are a quarter of
    them. (On the two 11-token rows of `cc_batch` the output layer's and the embedding's weight gradients,
    512 KB each, are as large as the logits, and the saving was 0.81x.)"""
    vocab, batch, seq, response = 4000, 8, 64, 16
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq - response] = -100
    model = tiny_lm(vocab=vocab).train()

    def full():
        model(input_ids=ids, labels=labels, use_cache=False).loss.backward()

    def response_only():
        with response_logits(model, labels):
            logits = model(input_ids=ids, use_cache=False).logits
        response_loss(logits, labels).backward()

    full()  # gradients exist: the peaks are activations only
    assert measure_peak(response_only) < 0.5 * measure_peak(full)


def test_no_logits_and_a_shape_mismatch():
    model = tiny_lm()
    ids = torch.tensor([[5, 6, 7]])
    with no_logits(model):
        assert model(input_ids=ids).logits.shape == (1, 0, 400)
    with pytest.raises(Exception, match="HARNESS_FULL_LOGITS"), response_logits(model, torch.tensor([[-100, 6]])):
        model(input_ids=ids)

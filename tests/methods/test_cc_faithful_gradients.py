"""CC-Tuning as its authors ran it: the English-pass gradient, gradient checkpointing (re-entrant or not)."""

from __future__ import annotations

import pytest
import torch

from harness.data.base import Example
from harness.methods.cc import CCTuning
from harness.methods.cc.model import CCModel, CCOptions
from harness.plumbing.errors import HarnessError
from harness.training.settings import TrainContext, TrainSettings
from harness.training.trainer import enable_gradient_checkpointing
from tests.methods.cc_faithful_helpers import cc_batch, tiny_lm
from tests.tiny import tiny_tokenizer


def cc_step(detach_english: bool, checkpointing: str | None = None):
    """One CC training forward + backward: (loss, English activations, {parameter: grad})."""
    model = CCModel(tiny_lm(), CCOptions(detach_english=detach_english))
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": checkpointing == "reentrant"})
    model.train()
    torch.manual_seed(5)  # the Gumbel noise
    out = model(**cc_batch())
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.loss.detach(), out.english_activations, grads


def english_only_rows(grads) -> torch.Tensor:
    """The input-embedding rows of the tokens only the English prompts contain: (n, d)."""
    batch = cc_batch()
    english = set(batch["en_input_ids"][batch["en_attention_mask"] == 1].tolist()) - set(batch["input_ids"].flatten().tolist())
    return grads["lm.model.embed_tokens.weight"][sorted(english)]


# -- 1. which parameters receive gradient through the English pass ------------------------------


@pytest.mark.parametrize(
    "detach, checkpointing, english_gradient",
    [
        (True, None, False),  # the default: the authors' runs
        (True, "reentrant", False),
        (True, "non-reentrant", False),
        (False, None, True),  # the variant: gradients through the English pass
        (False, "non-reentrant", True),
        (False, "reentrant", False),  # the authors' literal setting: re-entrant checkpointing drops them
    ],
)
def test_english_pass_gradient_in_each_mode(detach, checkpointing, english_gradient):
    loss, a, grads = cc_step(detach, checkpointing)
    assert torch.isfinite(loss)
    rows = english_only_rows(grads)
    if english_gradient:
        assert a.requires_grad and rows.abs().sum(-1).gt(0).all()  # every English-only token learns
    else:
        assert not a.requires_grad and (rows is None or rows.abs().max() == 0)
    # the Decision Maker learns in every mode (straight-through g; e and the fused pass keep their graph)
    assert grads["decision_maker.weight"].abs().max() > 0
    # the last layer's feed-forward weights learn from the fused pass in every mode
    assert grads["lm.model.layers.2.mlp.down_proj.weight"].abs().max() > 0


def test_default_is_the_authors_no_english_gradient():
    assert CCTuning().options["detach_english"] is True and CCOptions().detach_english is True


# -- 2. gradient checkpointing gives the same loss and gradients --------------------------------


def assert_same_step(a, b):
    (loss_a, _, grads_a), (loss_b, _, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        if grads_a[name] is None or grads_b[name] is None:
            assert grads_a[name] is None and grads_b[name] is None, name
        else:
            torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("checkpointing", ["reentrant", "non-reentrant"])
def test_cc_checkpointing_matches_the_run_without(checkpointing):
    assert_same_step(cc_step(True, checkpointing), cc_step(True))


def test_cc_english_gradient_under_checkpointing():
    # non-re-entrant keeps the English-pass gradient exactly; re-entrant equals detaching the pass
    assert_same_step(cc_step(False, "non-reentrant"), cc_step(False))
    assert_same_step(cc_step(False, "reentrant"), cc_step(True))


@pytest.mark.parametrize("checkpointing", ["reentrant", "non-reentrant"])
def test_plain_lm_checkpointing_matches_the_run_without(checkpointing):
    batch = cc_batch()

    def step(mode):
        lm = tiny_lm()
        if mode:
            enable_gradient_checkpointing(lm, use_reentrant=mode == "reentrant")
        lm.train()
        loss = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        return loss.detach(), None, {n: p.grad for n, p in lm.named_parameters()}

    assert_same_step(step(checkpointing), step(None))


def test_training_with_checkpointing_reaches_the_same_weights(tmp_path):
    """Three optimizer steps through the Trainer with `gradient_checkpointing=true` (re-entrant, as the
    paper profile) land on the weights of the same run without it."""
    from safetensors.torch import load_file

    tokenizer = tiny_tokenizer()
    base = tmp_path / "base"
    tiny_lm().save_pretrained(base)
    tokenizer.save_pretrained(base)
    examples = [
        Example("1", "fr", "traduis le chat noir", "the black cat", "translate the black cat"),
        Example("2", "de", "zähle bis drei", "one two three", "count to three"),
        Example("3", "en", "name a colour", "blue", "name a colour"),
        Example("4", "fr", "quelle est la capitale", "paris", "what is the capital"),
    ]
    weights = []
    for checkpointing in (False, True):
        settings = TrainSettings(
            epochs=1, learning_rate=1e-3, batch_size=2, per_device_batch_size=2, max_length=64, bf16=False,
            max_steps=3, logging_steps=1, save_steps=100, warmup_ratio=0.0, gradient_checkpointing=checkpointing,
        )  # fmt: skip
        run_dir = tmp_path / f"gc{int(checkpointing)}"
        CCTuning(wt_samples=2).train(TrainContext(str(base), examples, settings, 0, run_dir, run_dir / "model"))
        weights.append(load_file(str(run_dir / "model" / "model.safetensors")))
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_english_gradient_with_reentrant_checkpointing_is_refused():
    settings = TrainSettings()  # the paper profile: re-entrant checkpointing
    with pytest.raises(HarnessError, match="gradient_checkpointing_reentrant=false"):
        CCTuning(detach_english=False).check_settings(settings)
    CCTuning(detach_english=False).check_settings(TrainSettings(gradient_checkpointing_reentrant=False))
    CCTuning().check_settings(settings)  # the default is the authors' setting



def test_lora_adapters_learn_under_reentrant_checkpointing():
    """Frozen embeddings: re-entrant checkpoints still pass the gradient to every LoRA adapter."""
    from harness.training.trainer import apply_lora

    lm = apply_lora(tiny_lm(), TrainSettings())
    enable_gradient_checkpointing(lm, use_reentrant=True)
    lm.train()
    batch = cc_batch()
    lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
    adapters = {n: p.grad for n, p in lm.named_parameters() if "lora_B" in n}
    assert adapters and all(g is not None and g.abs().max() > 0 for g in adapters.values())

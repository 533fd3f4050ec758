"""CC-Tuning as its authors ran it: the English-pass gradient, gradient checkpointing (re-entrant or
not), the Response Start Token per model family, the Decision Maker's initialisation and its evaluation
without Gumbel noise (or with seeded noise per prompt).

Tiny random Llama / Qwen2 / Mistral models (hidden 32, 3 layers) and the tiny tokenizer of
`tests/tiny.py` with each family's real chat template (`tests/fixtures/chat_templates`).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from harness.data.base import Example
from harness.data.chat import encode_prompt, format_prompt
from harness.plumbing.errors import HarnessError
from harness.training.settings import TrainContext, TrainSettings
from harness.training.trainer import enable_gradient_checkpointing, pad_collate
from methods.cc import CCDataset, CCTuning
from methods.cc import hooks as hooks_module
from methods.cc.hooks import CCHooks
from methods.cc.lm import prompt_gumbel_noise
from methods.cc.model import CCModel, CCOptions
from methods.cc.rst import rst_offset
from methods.cc.transform import CCWeights, collect_activations
from tests.tiny import family_tokenizer, tiny_tokenizer

CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}


def tiny_lm(arch: str = "llama", vocab: int = 400, seed: int = 0, initializer_range: float = 0.02):
    """A random 3-layer model with untied embeddings (so an embedding row's gradient comes from the
    input side only) and no dropout."""
    config = CONFIGS[arch](
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, tie_word_embeddings=False,
        initializer_range=initializer_range,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # a random model's attention is near-uniform: sharpen it so that paths matter
        for p in model.parameters():
            p.mul_(3.0) if p.dim() > 1 else None
    return model


ENGLISH_TOKENS = range(200, 300)  # the English prompts' tokens; the non-English pass uses 3..99 only


def cc_batch() -> dict[str, torch.Tensor]:
    """Two right-padded examples of different lengths: non-English prompt + response, English prompt."""
    g = torch.Generator().manual_seed(1)
    items = []
    for prompt_len, response_len, english_len in ((7, 4, 6), (5, 6, 9)):
        prompt = torch.randint(3, 100, (prompt_len,), generator=g).tolist()
        response = torch.randint(3, 100, (response_len,), generator=g).tolist()
        english = torch.randint(ENGLISH_TOKENS.start, ENGLISH_TOKENS.stop, (english_len,), generator=g).tolist()
        items.append({"input_ids": prompt + response, "labels": [-100] * prompt_len + response,
                      "rst": prompt_len - 1, "en_input_ids": english, "en_rst": english_len - 1})  # fmt: skip
    return pad_collate(0)(items)


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


PROMPTS = ["traduis le chat noir", "zähle bis drei", "quelle est la capitale de la France"]


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
@pytest.mark.parametrize("mode", ["authors", "last"])
def test_rst_lands_on_the_token_in_training_wt_fit_and_inference(family, mode, monkeypatch):
    from lm_eval.api.instance import Instance

    from methods.cc.lm import CCLM

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

    from methods.cc.lm import CCLM

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


# -- 4. the Decision Maker's initialisation ----------------------------------------------------


def test_decision_maker_starts_as_the_models_linear_layers():
    torch.manual_seed(0)
    first = CCModel(tiny_lm(initializer_range=0.5)).decision_maker.weight.detach().clone()
    torch.manual_seed(0)
    again = CCModel(tiny_lm(initializer_range=0.5)).decision_maker.weight.detach()
    assert torch.equal(first, again)  # seeded
    assert first.shape == (3, 32) and abs(float(first.mean())) < 0.15
    assert 0.4 < float(first.std()) < 0.6  # N(0, initializer_range), not PyTorch's U(-1/sqrt(d), 1/sqrt(d))
    small = CCModel(tiny_lm(initializer_range=0.02)).decision_maker.weight
    assert 0.014 < float(small.std()) < 0.026


def test_fixed_source_layer_freezes_the_decision_maker():
    model = CCModel(tiny_lm(), CCOptions(fixed_source_layer=1))
    assert not model.decision_maker.weight.requires_grad


# -- 6. the Decision Maker at evaluation ---------------------------------------------------------


def test_cc_model_samples_no_gumbel_noise_in_eval_mode():
    model = CCModel(tiny_lm())
    batch = cc_batch()
    model.eval()
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model(**batch))
    assert all(torch.equal(o.loss, outs[0].loss) and torch.equal(o.layer_choice, outs[0].layer_choice) for o in outs)
    model.train()
    choices = set()
    for seed in range(12):
        torch.manual_seed(seed)
        with torch.no_grad():
            choices.add(tuple(model(**batch).layer_choice.tolist()))
    assert len(choices) > 1  # training samples


def test_evaluation_gumbel_noise_is_per_prompt_and_seeded():
    prompts = [[5, 6, 7], [8, 9], [5, 6, 7]]
    noise = prompt_gumbel_noise(prompts, 4, seed=0)
    assert noise.shape == (3, 4) and torch.equal(noise[0], noise[2])  # a prompt's noise, in any batch
    assert torch.equal(prompt_gumbel_noise(prompts[1:], 4, seed=0), noise[1:])
    assert not torch.equal(prompt_gumbel_noise(prompts, 4, seed=1), noise)
    big = prompt_gumbel_noise([[i] for i in range(4000)], 1, seed=0).flatten()
    assert abs(float(big.mean()) - 0.5772) < 0.05  # Gumbel(0, 1): mean = Euler's constant
    assert abs(float(big.std()) - 1.2825) < 0.05  # std = pi / sqrt(6)


def test_sampled_evaluation_is_reproducible_and_differs_by_seed():
    from lm_eval.api.instance import Instance

    from methods.cc.lm import CCLM

    tokenizer = tiny_tokenizer()
    lm = tiny_lm(vocab=len(tokenizer)).eval()
    weights = CCWeights(torch.zeros(3, 32), torch.eye(32), options={"fuse_after_layer": 0})  # uniform logits
    contexts = [format_prompt(tokenizer, f"{text} {i}") for i in range(8) for text in PROMPTS]
    requests = [Instance("loglikelihood", {}, (c, " the"), i, ("xnli_fr", i, 1)) for i, c in enumerate(contexts)]

    def run(**kwargs):
        cclm = CCLM(pretrained=lm, tokenizer=tokenizer, cc=weights, batch_size=5, **kwargs)
        return cclm.loglikelihood(requests), cclm.artifacts()

    argmax, art = run()
    assert art["eval_layer_hist"] == [len(contexts), 0, 0] and art["decision"] == "argmax"  # ties: layer 0
    sampled, art0 = run(eval_gumbel=True, eval_seed=0)
    assert run(eval_gumbel=True, eval_seed=0)[0] == sampled
    assert art0["decision"] == "gumbel" and art0["eval_seed"] == 0 and min(art0["eval_layer_hist"]) > 0
    assert run(eval_gumbel=True, eval_seed=1)[0] != sampled  # another sample of the layers
    assert sampled != argmax


def test_report_shows_sampled_decisions_against_argmax_and_both_entropies(tmp_path):
    from harness.plumbing.io import atomic_write_json
    from reports.report import build_report
    from tests.reports.test_report import write_run

    root = tmp_path / "runs"
    write_run(root, "vanilla")
    argmax = write_run(root, "cc", accuracy={"*": 0.5})
    artifacts = json.loads((argmax / "eval_artifacts.json").read_text())
    atomic_write_json(argmax / "eval_artifacts.json", {**artifacts, "eval_layer_entropy": 0.73})
    for seed, acc in enumerate((0.45, 0.55, 0.6)):
        write_run(root, "cc", accuracy={"*": acc}, options={"eval_gumbel": True, "eval_seed": seed})
    report = build_report([str(root)], tmp_path / "report", iters=200)
    captions = [f.caption for f in report.figures["layer choice"]]
    assert any("training entropy 1.10 nats; evaluation entropy 0.73 nats (evaluation: argmax)" in c for c in captions)
    sampled = report.figures["sampled Decision Maker at evaluation"]
    assert {f.title.split(",")[0] for f in sampled} == {"sib200_mc", "xnli_gen"}
    # every language: sampled mean (45 + 55 + 60) / 3 = 53.3 against argmax 50.0
    assert all("3 evaluations" in f.caption and "Mean |sampled mean - argmax| 3.3 points" in f.caption for f in sampled)
    assert all((tmp_path / "report" / f.path).is_file() for f in sampled)


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

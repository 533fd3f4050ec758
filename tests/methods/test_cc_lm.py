"""CC-Tuning evaluator (CCLM, key/value reuse against two full passes) and the `cc` method end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.data.base import Example
from harness.data.chat import format_prompt
from harness.methods.cc import CCTuning
from harness.methods.cc.hooks import CCHooks
from harness.methods.cc.model import CCModel
from harness.methods.cc.pairs import Pair, pairs_from_examples
from harness.methods.cc.transform import (
    CCWeights,
    collect_activations,
    load_cc,
    refit_checkpoint,
    transform_mse,
)
from harness.training.settings import TrainContext, TrainSettings
from tests.methods.cc_helpers import ARCHS, EXAMPLES, make_model, random_rows
from tests.tiny import tiny_tokenizer

# -- CC inference with key/value reuse --------------------------------------------------------


def reference_fuse(weights: CCWeights):
    """a_hat = a W_T, Decision Maker argmax, fused = a_hat of the chosen layer: written out plainly."""

    def fuse(a, e, prompts=None):
        a_hat = a.float() @ weights.transform_matrix if weights.transform_matrix is not None else a.float()
        layer = ((a_hat + e.float()[:, None]).mean(1) @ weights.decision_maker.T).argmax(-1)
        return a_hat[torch.arange(len(a)), layer], layer

    return fuse


def reference_logits(model, hooks, after_layer, fuse, tokens, rst):
    """Two full forward passes: the prompt [0..RST], then the whole sequence with the fusion at the RST."""
    with torch.no_grad():
        with hooks.capture(rst) as record:
            model(input_ids=torch.tensor([tokens[: rst + 1]]))
        fused, _ = fuse(record.ffn, record.embedding)
        with hooks.fuse(after_layer, torch.tensor([rst]), fused):
            return model(input_ids=torch.tensor([tokens])).logits[0]


def random_weights(seed: int = 0, scale: float = 1.0) -> CCWeights:
    g = torch.Generator().manual_seed(seed)
    return CCWeights(
        torch.randn(3, 32, generator=g), torch.eye(32) + scale * torch.randn(32, 32, generator=g) / 8
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_reusing_inference_equals_two_full_passes(arch):
    from harness.methods.cc.lm import Row, cc_logits

    model = make_model(arch)
    hooks = CCHooks(model)
    fuse = reference_fuse(random_weights())
    a, b, c = random_rows(1)
    rows = [
        Row(a, rst=5, start=4),  # one scored position before the RST (lm-eval's moved "\n")
        Row(a[:7] + [11, 12], rst=5, start=6),  # same prompt, other continuation: one shared pass 1
        Row(b, rst=2, start=3),
        Row(c, rst=8, start=0),  # every position, before and after the RST
        Row(b[:4], rst=4, start=2),  # the RST is the final token: nothing scored depends on fusion
    ]
    for after_layer in (0, 2):
        logits, choices = cc_logits(model, hooks, after_layer, fuse, rows, pad_id=0)
        for row, got, choice in zip(rows, logits, choices, strict=True):
            rst = min(row.rst, len(row.tokens) - 1)
            want = reference_logits(model, hooks, after_layer, fuse, row.tokens, rst)[row.start :]
            if row.rst >= len(row.tokens):
                want = model(input_ids=torch.tensor([row.tokens])).logits[0, row.start :].detach()
                assert choice is None
            else:
                assert choice[0] == tuple(row.tokens[: row.rst + 1])
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def make_lm(model, tokenizer, weights: CCWeights, **kwargs):
    from harness.methods.cc.lm import CCLM

    weights.options = weights.options or {"fuse_after_layer": 0}
    return CCLM(
        pretrained=model, tokenizer=tokenizer, cc=weights, batch_size=kwargs.pop("batch_size", 3), **kwargs
    )


def instances(kind: str, args: list[tuple], task: str = "xnli_fr"):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i, (task, i, 1)) for i, a in enumerate(args)]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_cc_lm_loglikelihood_matches_two_full_passes(arch, tokenizer):
    model = make_model(arch)
    weights = random_weights(2)
    lm = make_lm(model, tokenizer, weights)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:3]]
    requests = [(p, option) for p in prompts for option in ("the black cat", "blue", " paris")]
    got = lm.loglikelihood(instances("loglikelihood", requests))
    hooks, fuse = CCHooks(model), reference_fuse(weights)
    for (context, continuation), (logprob, greedy) in zip(requests, got, strict=True):
        prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        # lm-eval moves the "\n" that ends the prompt out of the context: the RST is still that "\n"
        assert whole[: len(prompt)] == prompt and context.endswith("\n")
        ctx_len = len(tokenizer(context.rstrip(), add_special_tokens=False)["input_ids"])
        logits = reference_logits(model, hooks, 0, fuse, whole[:-1], len(prompt) - 1)
        log_probs = torch.log_softmax(logits[ctx_len - 1 :], -1)
        target = torch.tensor(whole[ctx_len:])
        assert logprob == pytest.approx(float(log_probs.gather(1, target[:, None]).sum()), abs=1e-4)
        assert greedy == bool((log_probs.argmax(-1) == target).all())
    # W_T matters: the identity gives other scores
    plain = make_lm(model, tokenizer, weights, use_wt=False).loglikelihood(
        instances("loglikelihood", requests)
    )
    assert any(abs(x[0] - y[0]) > 1e-4 for x, y in zip(plain, got, strict=True))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_cc_lm_generate_matches_two_full_passes(arch, tokenizer):
    model = make_model(arch)
    model.generation_config.eos_token_id = None  # generate all tokens; the test compares them
    weights = random_weights(3)
    lm = make_lm(model, tokenizer, weights, batch_size=2)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:3]]
    hooks, fuse = CCHooks(model), reference_fuse(weights)
    got = lm.generate_until(
        instances("generate_until", [(p, {"until": ["@@@"], "max_gen_toks": 6}) for p in prompts])
    )
    for prompt, text in zip(prompts, got, strict=True):
        tokens = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        rst = len(tokens) - 1
        for _ in range(6):  # greedy decoding, each step two full passes
            tokens.append(int(reference_logits(model, hooks, 0, fuse, tokens, rst)[-1].argmax()))
        assert text == tokenizer.decode(tokens[rst + 1 :], skip_special_tokens=True)
    hist = lm.artifacts()
    assert hist["eval_prompts"] == 3 and sum(hist["eval_layer_hist"]) == 3
    assert list(hist["eval_layer_hist_per_language"]) == ["fr"] and hist["decision"] == "argmax"


def test_per_language_transform_matrix_is_used_for_its_language(tokenizer):
    model = make_model("llama")
    weights = random_weights(4)
    prompts = [format_prompt(tokenizer, ex.instruction) for ex in EXAMPLES[:2]]
    requests = [(p, " blue") for p in prompts]
    identity = make_lm(model, tokenizer, weights, use_wt=False).loglikelihood(
        instances("loglikelihood", requests)
    )
    shared = make_lm(model, tokenizer, weights).loglikelihood(instances("loglikelihood", requests))
    weights.per_language = {"fr": torch.eye(32)}
    per_language = make_lm(model, tokenizer, weights, wt_per_language=True)
    assert per_language.loglikelihood(instances("loglikelihood", requests, "xnli_mc_fr")) == identity
    # German has no W_T of its own: the shared one
    assert per_language.loglikelihood(instances("loglikelihood", requests, "xnli_mc_de")) == shared
    assert set(per_language.artifacts()["eval_layer_hist_per_language"]) == {"fr", "de"}


def test_language_of_task_names():
    from harness.methods.cc.lm import language_of

    assert language_of("xnli_sw") == "sw" and language_of("xstorycloze_te_gen") == "te"
    assert language_of("mmmlu_id_mc") == "id" and language_of("custom") is None


# -- the `cc` method end to end ---------------------------------------------------------------


def test_trainer_checkpoint_round_trip_with_tied_embeddings(tokenizer, tmp_path):
    from transformers import TrainingArguments

    from harness.methods.cc.trainer import CCTrainer

    model = CCModel(make_model("llama"))
    assert model.lm.lm_head.weight is model.lm.model.embed_tokens.weight
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    trainer = CCTrainer(model=model, args=args, processing_class=tokenizer)
    trainer._save(str(tmp_path / "checkpoint-1"))
    other = CCModel(make_model("llama", seed=1))
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"), other)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert other.lm.lm_head.weight is other.lm.model.embed_tokens.weight


def test_english_examples_need_no_translation():
    from harness.methods.cc import CCTuning
    from harness.plumbing.errors import HarnessError

    CCTuning().check_examples([Example("e", "en", "name a colour", "blue")])
    with pytest.raises(HarnessError, match="instruction_en"):
        CCTuning().check_examples([Example("f", "fr", "nomme une couleur", "bleu")])
    with pytest.raises(HarnessError, match="wt_source"):
        CCTuning(wt_source="aya")


def train_run(tmp_path: Path, tokenizer, name: str, seed: int = 0, **options):
    from harness.methods.cc import CCTuning

    base = tmp_path / "base"
    if not base.exists():
        make_model("llama").save_pretrained(base)
        tokenizer.save_pretrained(base)
    settings = TrainSettings(
        epochs=1,
        learning_rate=1e-3,
        batch_size=2,
        per_device_batch_size=2,
        max_length=64,
        bf16=False,
        max_steps=3,
        logging_steps=1,
        save_steps=2,  # a mid-training checkpoint (CCTrainer._save with tied embeddings)
        warmup_ratio=0.0,
    )
    run_dir = tmp_path / name
    ctx = TrainContext(str(base), EXAMPLES, settings, seed, run_dir, run_dir / "model")
    method = CCTuning(**options)
    method.train(ctx)
    return method, ctx


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    tmp = tmp_path_factory.mktemp("cc_run")
    method, ctx = train_run(tmp, tokenizer, "run1", wt_samples=4)
    return tmp, tokenizer, method, ctx


def test_method_trains_saves_and_records_artifacts(trained):
    from harness.data.models import load_model, load_tokenizer

    _, tokenizer, method, ctx = trained
    folder = ctx.output_dir
    assert (folder / "model.safetensors").is_file() and (folder / "cc.safetensors").is_file()
    weights = load_cc(folder)
    assert weights.decision_maker.shape == (3, 32) and weights.transform_matrix.shape == (32, 32)
    assert weights.options["fuse_after_layer"] == 0 and weights.transform["m"] == 4
    assert weights.transform["heldout"] == 1  # 5 pairs: 4 fitted on, 1 held out
    artifacts = json.loads((ctx.run_dir / "cc_artifacts.json").read_text())
    assert [r["step"] for r in artifacts["train_layer_hist_per_step"]] == [1, 2, 3]
    assert sum(artifacts["train_layer_hist"]) == 6  # 3 steps x 2 examples
    assert artifacts["transform"]["m"] == 4 and set(artifacts["transform"]["per_language"]) <= {"fr", "de"}
    assert artifacts["transform"]["heldout"] == 1 and artifacts["transform"] == weights.transform
    log_rows = [json.loads(line) for line in ctx.log_path.read_text().splitlines()]
    assert any("cc_layer_entropy" in r for r in log_rows) and any("loss" in r for r in log_rows)
    # the logged MSEs are MSE(X W_T, Y) on the sampled and on the held-out pairs, recomputed here from the
    # checkpoint (one batched call per side, as the fit collects them)
    from harness.methods.cc.pairs import split_pairs

    model, tok = load_model(str(folder)), load_tokenizer(str(folder))
    sample, held = split_pairs(pairs_from_examples(EXAMPLES), 4, ctx.seed)
    x = collect_activations(model, tok, [p.text for p in [*sample, *held]])
    y = collect_activations(model, tok, [p.text_en for p in [*sample, *held]])
    assert artifacts["transform"]["mse"] == pytest.approx(
        transform_mse(x[:4], y[:4], weights.transform_matrix), rel=1e-4
    )
    assert artifacts["transform"]["mse_heldout"] == pytest.approx(
        transform_mse(x[4:], y[4:], weights.transform_matrix), rel=1e-4
    )
    # refitting for another M without retraining
    pairs = [(p.text, p.text_en) for p in pairs_from_examples(EXAMPLES)]
    every = [Pair(p.lang, p.text, p.text_en) for p in pairs_from_examples(EXAMPLES)]
    copy = folder.parent / "refit"  # refitting rewrites the checkpoint's CC files: on a copy
    shutil.copytree(folder, copy)
    fit = refit_checkpoint(copy, every, {**CCTuning.defaults, "wt_samples": 4}, ctx.seed)
    torch.testing.assert_close(fit.transform_matrix, weights.transform_matrix, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(load_cc(copy).transform_matrix, fit.transform_matrix)  # rewritten in place
    assert refit_checkpoint(copy, pairs, {**CCTuning.defaults, "wt_samples": 2}, 0).transform_matrix.shape == (32, 32)


def evaluate(method, folder: Path):
    lm = method.make_lm(str(folder), device="cpu", batch_size=4)
    prompts = [format_prompt(lm.tokenizer, ex.instruction) for ex in EXAMPLES[:4]]
    scores = lm.loglikelihood(
        instances("loglikelihood", [(p, o) for p in prompts for o in ("blue", "the big dog")], "xnli_de")
    )
    return scores, lm.artifacts()


def test_same_seed_same_eval_numbers_twice(trained):
    tmp, tokenizer, method, ctx = trained
    first, artifacts = evaluate(method, ctx.output_dir)
    assert evaluate(method, ctx.output_dir)[0] == first  # argmax decisions: deterministic
    assert artifacts["eval_prompts"] == 4 and list(artifacts["eval_layer_hist_per_language"]) == ["de"]
    _, ctx2 = train_run(tmp, tokenizer, "run2", wt_samples=4)
    assert evaluate(method, ctx2.output_dir)[0] == first  # same seed, same training, same numbers


@pytest.mark.e2e
def test_default_model_with_zero_fusion_scores_and_generates_like_hflm():
    """On SmolLM2-135M-Instruct: with W_T = 0 the fused vector is zero, so the CC model (two passes,
    shared cache) must give HFLM's log-likelihoods and generations."""
    from lm_eval.models.huggingface import HFLM

    from harness.data.base import data_dir, read_jsonl
    from harness.data.models import resolve_model
    from harness.methods.cc.lm import CCLM
    from harness.plumbing.errors import HarnessError

    try:
        ref = resolve_model("smollm2-135m-instruct")
        rows = read_jsonl(data_dir() / "benchmarks" / "xnli" / "en.jsonl")[:3]
    except HarnessError as e:
        pytest.skip(str(e))
    kwargs = {"device": "cpu", "dtype": "float32", "batch_size": 4}
    hflm = HFLM(pretrained=ref, **kwargs)
    config = hflm.model.config
    weights = CCWeights(
        torch.randn(config.num_hidden_layers, config.hidden_size),
        torch.zeros(config.hidden_size, config.hidden_size),
    )
    cc = CCLM(pretrained=ref, cc=weights, **kwargs)
    contexts = [format_prompt(hflm.tokenizer, row["prompt"]) for row in rows]
    requests = instances("loglikelihood", [(c, o) for c in contexts for o in ("1", "2", "3")], "xnli_mc_en")
    for (want, want_greedy), (got, got_greedy) in zip(
        hflm.loglikelihood(requests), cc.loglikelihood(requests), strict=True
    ):
        assert got == pytest.approx(want, abs=1e-3) and got_greedy == want_greedy
    generate = instances(
        "generate_until", [(c, {"until": ["<|im_end|>"], "max_gen_toks": 12}) for c in contexts]
    )
    assert cc.generate_until(generate) == hflm.generate_until(generate)
    assert cc.artifacts()["eval_prompts"] == 6  # 3 prompts scored + 3 generated (another task language)


def test_cc_run_through_the_pipeline(tmp_path):
    """`harness run --method cc` on a tiny model: training, cc.safetensors, lm-eval tasks (log-likelihood
    and generation) through the CC model, and both artifact files in the run."""
    from harness.core.config import EvalConfig, RunConfig
    from harness.evaluation.evaluate import resolve_tasks
    from harness.orchestration.pipeline import execute
    from harness.training.settings import PROFILES

    base = tmp_path / "base"
    model = make_model("qwen2")
    # 512 positions, not make_config's 256: a chat-templated SIB-200 prompt is up to ~320 tiny tokens,
    # and lm-eval left-truncates context + option to max_length + 1 tokens, so with 256 each multi-token
    # option ("science/technology", "travel", ...) would cut a different number of leading prompt tokens
    # and give that item one distinct (truncated) prompt per option length instead of one shared prompt.
    model.config.max_position_embeddings = 512
    model.save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ex.to_dict()) + "\n" for ex in EXAMPLES), encoding="utf-8")
    train = {**PROFILES["cpu"].to_dict(), "max_steps": 2, "per_device_batch_size": 3, "batch_size": 3}
    train |= {"bf16": False, "logging_steps": 1, "max_length": 128}
    config = RunConfig(
        method="cc", model=str(base), recipe="jsonl", recipe_path=str(data), train_limit=None, train=train,
        method_options={"wt_samples": 3},
    )  # fmt: skip
    refs = resolve_tasks(["sib200_mc", "xnli_gen"], ["sw"])
    run = execute(
        config, refs, EvalConfig(tasks=[r.name for r in refs], limit=2, batch_size=2), tmp_path, "t"
    )
    assert run.status()["phase"] == "complete" and (run.model_dir / "cc.safetensors").is_file()
    train_artifacts = json.loads((run.dir / "cc_artifacts.json").read_text())
    assert sum(train_artifacts["train_layer_hist"]) == 6 and train_artifacts["transform"]["m"] == 3
    assert train_artifacts["transform"]["heldout"] == 1 and train_artifacts["transform"]["mse_heldout"] > 0
    eval_artifacts = json.loads((run.dir / "eval_artifacts.json").read_text())
    # one prompt per item (all options of an item share its RST and pass 1): 2 SIB-200 + 2 XNLI
    assert eval_artifacts["eval_prompts"] == 4 and list(eval_artifacts["eval_layer_hist_per_language"]) == [
        "sw"
    ]

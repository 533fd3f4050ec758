"""CC-Tuning as its authors ran it: the Decision Maker's initialisation and its evaluation."""

from __future__ import annotations

import json

import torch

from harness.data.chat import format_prompt
from harness.methods.cc.lm import prompt_gumbel_noise
from harness.methods.cc.model import CCModel, CCOptions
from harness.methods.cc.transform import CCWeights
from tests.methods.cc_faithful_helpers import PROMPTS, cc_batch, tiny_lm
from tests.tiny import tiny_tokenizer

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

    from harness.methods.cc.lm import CCLM

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
    from harness.reports.report import build_report
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

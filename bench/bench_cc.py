"""What CC-Tuning costs over vanilla SFT, on the default model (CPU, a few minutes).

    python bench/bench_cc.py [--model smollm2-135m-instruct] [--batch-size 8] [--steps 2] [--items 16]

Prints
- training: seconds per step (forward + backward + AdamW) of vanilla SFT, CC-Tuning, and CC-Tuning
  with `detach_english`, on the same batch of real training data (the `mini-parallel` recipe), and the
  ratios to vanilla;
- evaluation: seconds for the same lm-eval loglikelihood requests (XNLI prompts, chat template, three
  options each) with plain HFLM and with the CC model (pass 1 + cached pass 2), and a few greedy
  generations with both.
The CC weights are random (W_T = identity): timing does not depend on their values. Each figure is
the fastest of a few runs, on one thread by default: on a shared CPU that is the steadiest measure.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import torch

from harness.data.base import data_dir, read_jsonl
from harness.data.chat import format_prompt
from harness.data.models import load_model, load_tokenizer, resolve_model
from harness.data.recipes import RecipeOptions, load_recipe
from harness.methods.cc import CCDataset
from harness.methods.cc.lm import CCLM
from harness.methods.cc.model import CCModel, CCOptions
from harness.methods.cc.transform import CCWeights
from harness.training.trainer import SFTDataset, pad_collate

LANGS = ("fr", "sw", "hi", "zh")


def seconds_per_step(step: Callable[[], torch.Tensor], params, steps: int) -> float:
    """Fastest of `steps` optimizer steps after one warm-up step (the minimum: the CPU is shared, and
    other jobs only ever add time)."""
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


def bench_training(ref: str, tokenizer, batch_size: int, steps: int, max_length: int) -> dict[str, float]:
    examples = load_recipe("mini-parallel", RecipeOptions(langs=LANGS, per_lang=batch_size, seed=0))
    examples = examples[:batch_size]
    collate = pad_collate(tokenizer.pad_token_id)
    sft = SFTDataset(tokenizer, examples, max_length)
    vanilla_batch = collate([{k: v for k, v in item.items() if k != "rst"} for item in sft.items])
    cc_batch = collate(CCDataset(tokenizer, examples, max_length).items)
    logging.info(
        "batch: %d examples, %d tokens (English prompts: %d tokens)",
        len(sft),
        int(cc_batch["attention_mask"].sum()),
        int(cc_batch["en_attention_mask"].sum()),
    )
    out = {}
    model = load_model(ref).train()
    out["vanilla"] = seconds_per_step(
        lambda model=model: model(**vanilla_batch).loss, model.parameters(), steps
    )
    del model
    for name, detach in (("cc", False), ("cc_detach_english", True)):
        torch.manual_seed(0)
        cc = CCModel(load_model(ref).train(), CCOptions(detach_english=detach))
        out[name] = seconds_per_step(lambda cc=cc: cc(**cc_batch).loss, cc.parameters(), steps)
        del cc
    return out


def xnli_requests(tokenizer, items: int):
    from lm_eval.api.instance import Instance

    requests = []
    for lang in ("sw", "zh"):
        for row in read_jsonl(data_dir() / "benchmarks" / "xnli" / f"{lang}.jsonl")[: items // 2]:
            context = format_prompt(tokenizer, row["prompt"])
            for option in ("1", "2", "3"):
                requests.append(
                    Instance(
                        "loglikelihood",
                        row,
                        (context, option),
                        len(requests),
                        (f"xnli_mc_{lang}", row["id"], 1),
                    )
                )
    return requests


def fastest(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs of `fn` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_evaluation(
    ref: str, tokenizer, items: int, generations: int, batch_size: int, repeats: int
) -> dict[str, float]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoConfig

    requests = xnli_requests(tokenizer, items)
    prompts = [r.args[0] for r in requests[::3][:generations]]
    gen = [
        Instance(
            "generate_until",
            {},
            (p, {"until": ["<|im_end|>"], "max_gen_toks": 16, "do_sample": False}),
            i,
            ("xnli_gen_sw", i, 1),
        )
        for i, p in enumerate(prompts)
    ]
    kwargs = {"device": "cpu", "dtype": "float32", "batch_size": batch_size}
    config = AutoConfig.from_pretrained(ref)
    weights = CCWeights(
        torch.randn(config.num_hidden_layers, config.hidden_size),
        torch.eye(config.hidden_size),
        options=CCOptions().to_dict(),
    )
    out = {}
    for name, lm in (
        ("vanilla", HFLM(pretrained=ref, **kwargs)),
        ("cc", CCLM(pretrained=ref, cc=weights, **kwargs)),
    ):
        lm.loglikelihood(requests[:3], disable_tqdm=True)  # warm-up
        out[f"{name}_loglikelihood"] = fastest(
            lambda lm=lm: lm.loglikelihood(requests, disable_tqdm=True), repeats
        )
        if gen:
            lm.model.generation_config.eos_token_id = None  # both generate every token
            out[f"{name}_generate"] = fastest(
                lambda lm=lm: lm.generate_until(gen, disable_tqdm=True), repeats
            )
    out["requests"], out["generations"] = len(requests), len(gen)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--repeats", type=int, default=2, help="evaluation runs per model (the fastest counts)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)"
    )
    parser.add_argument("--items", type=int, default=16, help="XNLI items (x 3 options) for loglikelihood")
    parser.add_argument(
        "--generations", type=int, default=4, help="prompts for greedy generation (16 tokens)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("lm_eval", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    torch.set_num_threads(args.threads)
    ref = resolve_model(args.model)
    tokenizer = load_tokenizer(ref)
    logging.info("model %s, %d torch threads", ref, torch.get_num_threads())
    train = bench_training(ref, tokenizer, args.batch_size, args.steps, args.max_length)
    evaluation = bench_evaluation(ref, tokenizer, args.items, args.generations, args.batch_size, args.repeats)

    print(f"\ntraining, batch of {args.batch_size}: seconds per step (fastest of {args.steps})")
    for name in ("vanilla", "cc", "cc_detach_english"):
        print(f"  {name:<20} {train[name]:7.2f} s   x{train[name] / train['vanilla']:.2f}")
    print(
        f"evaluation: {evaluation['requests']} loglikelihood requests, {evaluation['generations']} generations"
    )
    for kind in ("loglikelihood", "generate"):
        if f"vanilla_{kind}" in evaluation:
            v, c = evaluation[f"vanilla_{kind}"], evaluation[f"cc_{kind}"]
            print(f"  {kind:<14} vanilla HFLM {v:6.2f} s   CC {c:6.2f} s   x{c / v:.2f}")


if __name__ == "__main__":
    main()

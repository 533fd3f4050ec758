"""Training throughput: the harness's `vanilla` method against a plain `transformers.Trainer` on the same
examples, and both as a fraction of this CPU's measured matmul throughput (model-FLOPs utilisation).

    python bench/bench_train.py [--examples 64] [--batch-size 8] [--repeats 3]

Same model (the default), same tokenised examples (the `mini-parallel` recipe, chat template, prompt
masked), batch size, learning rate, optimizer and epochs. The plain side is what a user would write:
`Trainer` with a padding collator, no checkpoints, `save_model` at the end. The harness side is
`harness.methods.vanilla` as `harness run` calls it: checkpoints (one at the last step, for crash safety),
length-grouped batches, the JSONL training log, the atomic final save. Alternating runs in this process;
medians. Tokens are the non-padding tokens of the batches.

FLOPs per token of training: 6 x parameters (every weight, the tied LM head included) + the attention
score and value products, 12 x layers x hidden x context (forward + backward); the peak is the median of
timed float32 GEMMs (2048^3) on the same threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def train_flops_per_token(model, context: float) -> float:
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 12 * config.num_hidden_layers * config.hidden_size * context


def run_harness(ref: str, examples, settings, seed: int) -> tuple[float, float]:
    from harness.methods import METHODS
    from harness.training.settings import TrainContext

    with tempfile.TemporaryDirectory() as tmp:
        ctx = TrainContext(base_model=ref, examples=examples, settings=settings, seed=seed, run_dir=Path(tmp),
                           output_dir=Path(tmp) / "model")  # fmt: skip
        start = time.perf_counter()
        METHODS.get("vanilla")().train(ctx)
        wall = time.perf_counter() - start
        log = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    runtime = next(r["train_runtime"] for r in log if "train_runtime" in r)
    return runtime, wall


def run_plain(ref: str, items: list[dict], settings, seed: int) -> tuple[float, float]:
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate, lr_scheduler_type=settings.lr_scheduler,
            warmup_steps=settings.warmup_ratio, weight_decay=settings.weight_decay, use_cpu=True, seed=seed,
            save_strategy="no", report_to="none", logging_steps=settings.logging_steps, disable_tqdm=True,
            gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": settings.gradient_checkpointing_reentrant},
        )  # fmt: skip
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=collator)
        result = trainer.train()
        trainer.save_model(Path(tmp) / "model")
    return result.metrics["train_runtime"], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=64, help="training examples (split over 4 languages)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from harness.data.models import load_model, load_tokenizer, resolve_model
    from harness.data.recipes import RecipeOptions, load_recipe
    from harness.training.settings import PROFILES, TrainSettings
    from harness.training.trainer import SFTDataset

    ref = resolve_model("smollm2-135m-instruct")
    examples = load_recipe("mini-parallel", RecipeOptions(langs=("en", "sw", "hi", "zh"), per_lang=args.examples // 4))
    settings = TrainSettings.from_dict({**PROFILES["cpu"].to_dict(), "epochs": 1.0, "batch_size": args.batch_size,
                                        "per_device_batch_size": args.batch_size, "bf16": False})  # fmt: skip
    tokenizer = load_tokenizer(ref)
    dataset = SFTDataset(tokenizer, examples, settings.max_length)
    items = [{"input_ids": it["input_ids"], "labels": it["labels"]} for it in dataset.items]
    tokens = sum(len(it["input_ids"]) for it in items)
    context = tokens / len(items)
    flops_token = train_flops_per_token(load_model(ref), context)
    peak = matmul_flops()
    print(f"{len(items)} examples, {tokens} tokens (mean {context:.0f}), batch {args.batch_size}, 1 epoch; "
          f"torch threads {torch.get_num_threads()}; measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)  # fmt: skip
    runs: dict[str, list[tuple[float, float]]] = {"harness": [], "plain": []}
    for i in range(args.repeats):
        runs["harness"].append(run_harness(ref, examples, settings, seed=0))
        runs["plain"].append(run_plain(ref, items, settings, seed=0))
        print(f"repeat {i + 1}: harness train {runs['harness'][-1][0]:.1f} s (wall {runs['harness'][-1][1]:.1f} s), "
              f"plain train {runs['plain'][-1][0]:.1f} s (wall {runs['plain'][-1][1]:.1f} s)", flush=True)  # fmt: skip
    print("\n| side | train() s (median) | tokens/s | wall s incl. load and save | achieved GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    med = {}
    for side, values in runs.items():
        train = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        rate = tokens / train
        med[side] = (train, wall)
        achieved = rate * flops_token
        print(f"| {side} | {train:.1f} | {rate:.0f} | {wall:.1f} | {achieved / 1e9:.1f} | {achieved / peak:.1%} |")
    overhead = med["harness"][0] / med["plain"][0] - 1
    wall_overhead = med["harness"][1] / med["plain"][1] - 1
    print(f"\nharness overhead in tokens/s: {overhead:+.1%} (train()); {wall_overhead:+.1%} wall incl. load and save")


if __name__ == "__main__":
    main()

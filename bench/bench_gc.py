"""Gradient checkpointing on the default model: step time and memory of vanilla SFT and CC-Tuning without
it, re-entrant (LLaMA-Factory's default, the paper's runs) and non-re-entrant.

    python bench/bench_gc.py [--batch-size 8] [--steps 3] [--max-length 256]

Each (method, mode) runs in a fresh subprocess on the same batch of real training data (the
`mini-parallel` recipe, four languages) and reports:
- seconds per optimizer step (forward + backward + AdamW), the fastest of `--steps` after a warm-up;
- the bytes autograd keeps for the backward pass during one forward (activation memory: every tensor
  saved for backward, counted once per storage, parameters left out), read by
  `harness.training.memory.saved_for_backward`: exactly what checkpointing trades for recompute;
- the process's peak resident memory (ru_maxrss) over load, warm-up and timed steps, and how far it rose
  above the resident memory once the model and AdamW states were in place.
Both methods compute the loss as the harness trains them (logits on the response tokens only: vanilla
through `harness.training.loss`, as its Trainer does; CC-Tuning in `CCModel`). CC-Tuning runs with its
default (`detach_english=true`); the ratios are against the same method without checkpointing, measured in
the same run of this script.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("off", "reentrant", "non-reentrant")
LANGS = ("fr", "sw", "hi", "zh")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(method: str, mode: str, batch_size: int, steps: int, max_length: int, threads: int) -> dict:
    import torch

    from harness.data.models import load_model, load_tokenizer, resolve_model
    from harness.data.recipes import RecipeOptions, load_recipe
    from harness.methods.cc import CCDataset
    from harness.methods.cc.model import CCModel, CCOptions
    from harness.training.loss import response_logits, response_loss
    from harness.training.memory import saved_for_backward
    from harness.training.trainer import SFTDataset, enable_gradient_checkpointing, pad_collate

    torch.set_num_threads(threads)
    ref = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(ref)
    examples = load_recipe("mini-parallel", RecipeOptions(langs=LANGS, per_lang=batch_size, seed=0))[:batch_size]
    collate = pad_collate(tokenizer.pad_token_id)
    torch.manual_seed(0)
    if method == "vanilla":
        batch = collate([{k: v for k, v in it.items() if k != "rst"} for it in SFTDataset(tokenizer, examples, max_length).items])
        model = load_model(ref)
        if mode != "off":
            enable_gradient_checkpointing(model, use_reentrant=mode == "reentrant")
    else:
        batch = collate(CCDataset(tokenizer, examples, max_length).items)
        model = CCModel(load_model(ref), CCOptions())
        if mode != "off":
            model.activation_checkpointing_enable({"use_reentrant": mode == "reentrant"})
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def loss_of() -> torch.Tensor:
        if method != "vanilla":
            return model(**batch).loss  # CCModel: logits on the response tokens only
        with response_logits(model, batch["labels"]):  # as the harness's Trainer computes vanilla's loss
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return response_loss(logits, batch["labels"])

    def step() -> None:
        loss_of().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    loss, saved_bytes = saved_for_backward(loss_of, model.parameters())
    loss.backward()
    optimizer.zero_grad(set_to_none=True)
    del loss
    step()  # warm-up: AdamW states exist from here on
    steady = rss_bytes()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"method": method, "mode": mode, "seconds": min(times), "saved_bytes": saved_bytes,
            "peak_rss": peak, "steady_rss": steady, "tokens": int(batch["attention_mask"].sum())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.batch_size, args.steps, args.max_length, args.threads)))
        return
    rows = []
    for method in ("vanilla", "cc"):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--one", method, mode, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--max-length", str(args.max_length), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"measured {method} {mode}", file=sys.stderr, flush=True)
    gb = 1e9
    print(f"batch of {args.batch_size} ({rows[0]['tokens']} tokens vanilla, {rows[3]['tokens']} cc), "
          f"{args.threads} threads, fastest of {args.steps} steps")  # fmt: skip
    print("| method | checkpointing | s / step | x off | saved for backward | x off | peak RSS | rise above steady |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        off = next(r for r in rows if r["method"] == row["method"] and r["mode"] == "off")
        print(f"| {row['method']} | {row['mode']} | {row['seconds']:.2f} | {row['seconds'] / off['seconds']:.2f} | "
              f"{row['saved_bytes'] / gb:.2f} GB | {row['saved_bytes'] / off['saved_bytes']:.2f} | "
              f"{row['peak_rss'] / gb:.2f} GB | {(row['peak_rss'] - row['steady_rss']) / gb:.2f} GB |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Training memory on the default model: vanilla SFT and CC-Tuning, with and without gradient checkpointing,
before this change (`HARNESS_FULL_LOGITS=1`: logits over every position) and after (logits over the response
tokens only).

    python bench/bench_memory.py [--batch-size 8] [--threads 2] [--no-profile]

The batch is the heaviest of the README's main job: its training data (mini-parallel, en/es/zh/sw, 32 examples
per language, seed 0, cutoff 512), the `--batch-size` longest examples, which the Trainer's length-grouped
sampler puts in the first batch. Each (method, checkpointing, code path) runs in a fresh subprocess:
load the model, one warm-up optimizer step (AdamW states from here on), then one measured step. Methods:
`vanilla` (the Trainer's loss: `sft_trainer_class().compute_loss`, the plain Trainer's with full logits),
`cc` (CCModel, `detach_english=true`, the default) and `cc_grad` (`detach_english=false`); checkpointing
re-entrant for vanilla and cc (the paper profile's), non-re-entrant for cc_grad (which re-entrant refuses).

Reported per row:
- peak RSS: the process's high-water mark (ru_maxrss) over loading, warm-up and the measured step;
- step RSS rise: the high-water mark during the measured step (VmHWM, reset after the warm-up) minus the
  resident memory before it (model, gradients, AdamW states in place);
- torch peak: the peak of bytes torch allocated during one more forward + backward above what existed before
  it (`harness.training.memory.measure_peak`, the profiler's allocation events), and the estimate of
  `harness.training.memory` for the same batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("vanilla", "cc", "cc_grad")
LANGS = ("en", "es", "zh", "sw")
MAX_LENGTH = 512  # the cpu profile's cutoff


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def vm_hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def measure(method: str, checkpointing: bool, batch_size: int, threads: int, profile: bool) -> dict:
    import tempfile

    import torch
    from transformers import TrainingArguments

    from harness.data.models import load_model, load_tokenizer, resolve_model
    from harness.data.recipes import RecipeOptions, load_recipe
    from harness.methods.cc import CCDataset
    from harness.methods.cc.model import CCModel, CCOptions
    from harness.training.loss import full_logits
    from harness.training.memory import Pass, Shape, estimate, measure_peak
    from harness.training.trainer import enable_gradient_checkpointing, pad_collate, sft_trainer_class

    torch.set_num_threads(threads)
    ref = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(ref)
    examples = load_recipe("mini-parallel", RecipeOptions(langs=LANGS, per_lang=32, seed=0))
    items = sorted(CCDataset(tokenizer, examples, MAX_LENGTH).items, key=lambda it: -len(it["input_ids"]))
    items = items[:batch_size]
    torch.manual_seed(0)
    lm = load_model(ref)
    reentrant = method != "cc_grad"
    if method == "vanilla":
        batch = pad_collate(tokenizer.pad_token_id)(
            [{k: it[k] for k in ("input_ids", "labels")} for it in items]
        )
        model = lm
        if checkpointing:
            enable_gradient_checkpointing(model, use_reentrant=True)
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none")
        trainer = sft_trainer_class()(model=model, args=args)
        count = int((batch["labels"][:, 1:] != -100).sum())

        def loss():
            return trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(count))
    else:
        batch = pad_collate(tokenizer.pad_token_id)(items)
        model = CCModel(lm, CCOptions(detach_english=method == "cc"))
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": reentrant})

        def loss():
            return model(**batch).loss

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: AdamW states exist from here on
    steady = rss_bytes()
    reset_hwm()
    step()
    step_peak = vm_hwm_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"method": method, "checkpointing": checkpointing, "code": "before" if full_logits() else "after",
           "tokens": int(batch["attention_mask"].sum()), "padded": batch["input_ids"].numel(),
           "peak_rss": peak, "steady_rss": steady, "step_rss_rise": step_peak - steady}  # fmt: skip
    if profile:
        for p in model.parameters():  # gradients in place, as the estimate assumes: the peak is activations
            p.grad = torch.zeros_like(p) if p.requires_grad else None
        row["torch_peak"] = measure_peak(lambda: loss().backward())
        shape, (b, s) = Shape.of(lm.config), batch["input_ids"].shape
        n = b * (s - 1) if full_logits() else int((batch["labels"][:, 1:] != -100).sum())
        passes = [Pass(b, s, True, logits=n)]
        if method != "vanilla":
            s_en = batch["en_input_ids"].shape[1]
            passes.insert(0, Pass(b, s_en, method == "cc_grad", keeps=b * shape.layers * shape.hidden * 4))
        row["estimate"] = estimate(shape, passes, checkpointing=checkpointing, e=4).peak
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true", help="skip the torch peak and the estimate")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = measure(args.one[0], args.one[1] == "on", args.batch_size, args.threads, not args.no_profile)
        print(json.dumps(row))
        return
    rows = []
    for method in args.methods.split(","):
        for checkpointing in ("off", "on"):
            for code in ("before", "after"):
                env = {**os.environ, "HARNESS_FULL_LOGITS": "1" if code == "before" else "0"}
                cmd = [sys.executable, __file__, "--one", method, checkpointing, "--batch-size", str(args.batch_size),
                       "--threads", str(args.threads)] + (["--no-profile"] if args.no_profile else [])  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"measured {method} checkpointing {checkpointing} {code}", file=sys.stderr, flush=True)
    print_table(rows, args.batch_size)


def print_table(rows: list[dict], batch_size: int) -> None:
    gb = 1e9
    first = rows[0]
    print(f"batch: the {batch_size} longest main-job examples, {first['tokens']} tokens ({first['padded']} padded)")
    print("| method | checkpointing | code | peak RSS | step RSS rise | torch peak | estimate | est./torch "
          "| peak RSS after/before | peak RSS / vanilla |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        key = (row["method"], row["checkpointing"])
        before = next(r for r in rows if (r["method"], r["checkpointing"]) == key and r["code"] == "before")
        vanilla = next((r for r in rows if r["method"] == "vanilla" and r["checkpointing"] == row["checkpointing"]
                        and r["code"] == row["code"]), None)  # fmt: skip
        torch_peak = f"{row['torch_peak'] / gb:.2f} GB" if "torch_peak" in row else "-"
        est = f"{row['estimate'] / gb:.2f} GB" if "estimate" in row else "-"
        ratio = f"{row['estimate'] / row['torch_peak']:.2f}" if "estimate" in row else "-"
        per_vanilla = f"{row['peak_rss'] / vanilla['peak_rss']:.2f}" if vanilla else "-"
        print(f"| {row['method']} | {'on' if row['checkpointing'] else 'off'} | {row['code']} | "
              f"{row['peak_rss'] / gb:.2f} GB | {row['step_rss_rise'] / gb:.2f} GB | {torch_peak} | {est} | {ratio} | "
              f"{row['peak_rss'] / before['peak_rss']:.2f} | {per_vanilla} |")  # fmt: skip


if __name__ == "__main__":
    main()

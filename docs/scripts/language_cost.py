"""How much of each language the default model knows: per language, the tokens the default tokenizer
spends on a SIB-200 test sentence, and the base model's negative log-likelihood of the 99 FLORES dev
sentences in bits per character and per sentence (the sentences are parallel, so bits per sentence
compares the same content across languages).

    python docs/scripts/language_cost.py en,es,fr,zh,sw,hi
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.core.config import RunConfig
from harness.data.base import data_dir, read_jsonl
from harness.data.models import resolve_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("langs", help="comma-separated languages")
    args = p.parse_args()
    path = resolve_model(RunConfig().model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    print("| lang | tokens / sentence | characters / sentence | bits / character | bits / sentence |")
    print("|---|---|---|---|---|")
    for lang in args.langs.split(","):
        rows = read_jsonl(data_dir() / "parallel" / "flores_sib" / f"{lang}.jsonl")
        test = [r["text"] for r in rows if r["split"] == "test"]
        dev = [r["text"] for r in rows if r["split"] == "dev"]
        tokens = statistics.mean(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in test)
        nats = 0.0
        with torch.no_grad():
            for text in dev:
                ids = tokenizer((tokenizer.bos_token or "") + text, return_tensors="pt", add_special_tokens=False)["input_ids"]
                nats += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)  # mean over predicted tokens
        bits = nats / math.log(2)
        chars = sum(len(t) for t in dev)
        print(f"| {lang} | {tokens:.0f} | {statistics.mean(len(t) for t in test):.0f} | {bits / chars:.2f} | "
              f"{bits / len(dev):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()

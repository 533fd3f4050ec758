"""How the `mini-parallel` recipe splits the training loss between SIB-200 classification and NTREX
translation: examples and response tokens (the tokens the loss is computed on) of each source.

    python docs/scripts/loss_mix.py en,sw,hi,zh 32,64
"""

from __future__ import annotations

import argparse
from collections import Counter

from transformers import AutoTokenizer

from harness.core.config import RunConfig
from harness.data.models import resolve_model
from harness.data.recipes import RecipeOptions, load_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("langs", help="comma-separated training languages")
    p.add_argument("per_lang", help="comma-separated examples per language (--train-limit values)")
    args = p.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(RunConfig().model))
    for per_lang in map(int, args.per_lang.split(",")):
        options = RecipeOptions(langs=tuple(args.langs.split(",")), per_lang=per_lang, seed=0)
        examples, tokens = Counter(), Counter()
        for ex in load_recipe("mini-parallel", options):
            source = "sib" if "/sib/" in ex.id else "ntrex"
            examples[source] += 1
            tokens[source] += len(tokenizer(ex.output + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        share = tokens["sib"] / sum(tokens.values())
        print(f"--train-limit {per_lang}: examples {dict(examples)}, response tokens {dict(tokens)}, "
              f"SIB-200 share of the loss {share:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()

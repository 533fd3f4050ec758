"""The SIB-200 part of the `mini-parallel` recipe (no NTREX translation examples) as a `jsonl` recipe file.

    python docs/scripts/sib_only.py en,sw,hi,zh 32 /tmp/exp/sib32.jsonl
    harness run --method vanilla --recipe jsonl --recipe-path /tmp/exp/sib32.jsonl ...

Used by docs/main-job.md (run B) to test whether the mix of classification and translation is what keeps
vanilla SFT at the label prior.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from harness.data.recipes import RecipeOptions, load_recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("langs", help="comma-separated languages")
    p.add_argument("per_lang", type=int, help="SIB-200 examples per language")
    p.add_argument("out", help="the JSONL file to write")
    args = p.parse_args()
    langs = tuple(args.langs.split(","))
    # twice as many as needed, so the SIB-200 share (2/3) covers per_lang; the recipe's seeded order is kept
    examples = load_recipe("mini-parallel", RecipeOptions(langs=langs, per_lang=2 * args.per_lang, seed=0))
    kept: Counter[str] = Counter()
    with open(args.out, "w", encoding="utf-8") as f:
        for ex in examples:
            if "/sib/" in ex.id and kept[ex.lang] < args.per_lang:
                kept[ex.lang] += 1
                row = {"id": ex.id, "lang": ex.lang, "instruction": ex.instruction, "output": ex.output,
                       "instruction_en": ex.instruction_en}  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(dict(kept))


if __name__ == "__main__":
    main()

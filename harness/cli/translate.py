"""`harness translate`: translate a recipe's instructions with a translation model (cached, resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.data.translate import translate_recipe
from harness.orchestration.options import names, positive


def add(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("translate", help="translate a recipe's instructions with a translation model (cached, resumable)")
    t.add_argument("--model", required=True, help="a Hugging Face translation model: NLLB-200, M2M100, MarianMT (id or folder)")
    t.add_argument("--tgt-lang", required=True, help="target languages, comma-separated (e.g. sw,yo)")
    t.add_argument("--src-lang", default="auto",
                   help="auto (each instruction from its own language; default) or a language: only text in it")  # fmt: skip
    t.add_argument("--out", required=True, help="JSONL translation file, also the cache (appended, resumable)")
    t.add_argument("--recipe", default="mini-parallel", help="training-data recipe (default mini-parallel)")
    t.add_argument("--recipe-path", help="file or dataset for recipes that read one (jsonl, aya)")
    t.add_argument("--train-langs", help="the recipe's languages to translate from, comma-separated")
    t.add_argument("--train-limit", default="200", help="examples per language as in `harness run` (default 200), or all")
    t.add_argument("--seed", type=int, default=0, help="the recipe's seed, as in `harness run` (default 0)")
    t.add_argument("--whole", action="store_true", help="translate each instruction as one text, not line by line")
    t.add_argument("--batch-size", type=int, default=16, help="texts per generate call (default 16)")
    t.add_argument("--max-new-tokens", type=int, default=256, help="at most this many tokens per translation")
    t.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    t.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    t.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    for name in ("batch_size", "max_new_tokens", "num_beams"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    stats = translate_recipe(
        model=args.model, tgt_langs=names(args.tgt_lang) or [], out=Path(args.out), recipe=args.recipe,
        recipe_path=args.recipe_path, train_langs=names(args.train_langs),
        train_limit=None if args.train_limit == "all" else positive("--train-limit", args.train_limit),
        seed=args.seed, src_lang=args.src_lang, by_line=not args.whole, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, trust_remote_code=args.trust_remote_code,
    )  # fmt: skip
    print(f"{stats.units} texts: {stats.cached} cached, {stats.translated} translated in {stats.batches} batches "
          f"-> {args.out}")  # fmt: skip
    return 0

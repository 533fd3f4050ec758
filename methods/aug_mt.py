"""+MT (`aug_mt`): the training data plus copies of its examples with the instruction in another language
and the same response.

Reference: the "+MT" data-level baseline of the CC-Tuning paper (Ye et al., ACL 2025, Sec. 4 and
`shared/docs/METHOD.md`, "Baselines"): the multilingual data augmented with its instructions
machine-translated into other languages. Training is vanilla SFT on the augmented data.

Where the translations come from, in this order, for an example in language X and a target Y:
1. the recipe's own parallel text: a `mini-parallel` example (`mini-parallel/X/sib/123`) has the same
   FLORES / NTREX sentence in every language (`mini-parallel/Y/sib/123`), so its copy in Y is the Y
   example's instruction: a human translation. The full recipe is read for the target languages (all
   its decontaminated examples, not only the `--train-limit` ones) and indexed by source and row id;
2. a `harness translate` file (`--method-opt translations=FILE`): the example's instruction translated
   from X into Y, else its English instruction translated from English into Y;
3. for Y = en (only when `mt_langs` names it), the example's English instruction.

Options:
- `mt_ratio` (1.0): translated copies added per original example. The examples are shuffled (seeded by
  the run's seed) and dealt one copy each, round after round, until round(mt_ratio x N) copies are
  added: 0.5 gives every other example one copy, 2.0 gives every example two (in two languages). An
  example's target language is drawn (seeded) from those it has a translation into; each example and
  language is used once. When too few translations exist, fewer copies are added (logged, and counted
  in `augmentation.json`).
- `mt_langs` (""): comma-separated target languages; empty means the non-English languages of the
  training data.
- `translations` (""): a `harness translate` output file.

How it differs from the paper's version, where it must: the paper machine-translated Aya instructions;
with `mini-parallel` we use the human parallel sentences the recipe already has (translation quality is
then not a variable), and machine translation only where the recipe has no parallel. Like `aug_en`,
added examples that repeat one already in the data, are copy tasks, or overlap a benchmark test item
are dropped; `<run_dir>/train_data.jsonl` and `augmentation.json` keep the exact data.
"""

from __future__ import annotations

import logging
import random

from harness.core.method import register_method
from harness.data.base import LANGUAGES, Example, check_languages
from harness.data.recipes import RecipeOptions, load_recipe
from harness.methods.aug_en import AugmentedData, load_translations
from harness.methods.vanilla import Vanilla
from harness.plumbing.errors import HarnessError
from harness.training.settings import TrainContext

log = logging.getLogger(__name__)

PARALLEL_RECIPE = "mini-parallel"


def parallel_key(example: Example) -> str | None:
    """`mini-parallel/sw/sib/123` -> `sib/123`: the same key for the same sentence in every language."""
    parts = example.id.split("/")
    if len(parts) == 4 and parts[0] == PARALLEL_RECIPE and parts[1] == example.lang:
        return f"{parts[2]}/{parts[3]}"
    return None


def parallel_instructions(examples: list[Example], langs: list[str]) -> dict[str, dict[str, str]]:
    """Parallel key -> {language: instruction} from the full `mini-parallel` recipe in `langs`, for the
    keys of `examples` (empty when none of them comes from that recipe)."""
    keys = {k for k in map(parallel_key, examples) if k is not None}
    langs = [lang for lang in langs if lang != "en"]  # English is each example's own instruction_en
    if not keys or not langs:
        return {}
    index: dict[str, dict[str, str]] = {}
    for ex in load_recipe(PARALLEL_RECIPE, RecipeOptions(langs=tuple(langs))):
        key = parallel_key(ex)
        if key in keys:
            index.setdefault(key, {})[ex.lang] = ex.instruction
    return index


def parse_langs(value: str, examples: list[Example]) -> list[str]:
    """`mt_langs`: comma-separated languages, or the non-English training languages when empty."""
    if value.strip():
        langs = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
        check_languages(langs, LANGUAGES, where="--method-opt mt_langs")
        return langs
    langs = sorted({ex.lang for ex in examples} - {"en"})
    if not langs:
        raise HarnessError(
            "aug_mt: the training data has no non-English language to translate into; "
            "name the targets with --method-opt mt_langs=sw,yo"
        )
    return langs


@register_method("aug_mt")
class AugMT(Vanilla):
    description = "+MT: vanilla SFT on the data plus copies with the instruction in other languages (parallel or machine-translated)."
    defaults = {"mt_ratio": 1.0, "mt_langs": "", "translations": ""}

    def prepare_examples(self, examples: list[Example], ctx: TrainContext) -> list[Example]:
        ratio = self.options["mt_ratio"]
        if ratio <= 0:
            raise HarnessError(f"option mt_ratio={ratio} of method 'aug_mt' must be above 0 (e.g. 0.5 or 1)")
        langs = parse_langs(self.options["mt_langs"], examples)
        translations = load_translations(self.options["translations"])
        parallel = parallel_instructions(examples, langs)
        data = AugmentedData(self.name, examples)

        def translation(ex: Example, lang: str) -> tuple[str, str] | None:
            """(instruction in `lang`, where it came from) for example `ex`, or None."""
            key = parallel_key(ex)
            if key is not None and lang in parallel.get(key, {}):
                return parallel[key][lang], "parallel"
            if translations is not None:
                text = translations.get(ex.instruction, ex.lang, lang)
                if text is None and ex.instruction_en and ex.lang != "en":
                    text = translations.get(ex.instruction_en, "en", lang)
                if text is not None:
                    return text, "mt"
            if lang == "en" and ex.instruction_en:
                return ex.instruction_en, "parallel"
            return None

        # Per example, the copies it can get, in a seeded random order.
        rng = random.Random(f"aug_mt:{ctx.seed}")
        order = list(examples)
        rng.shuffle(order)
        choices: dict[str, list[tuple[str, Example, str]]] = {}
        for ex in order:
            options = []
            for lang in langs:
                found = None if lang == ex.lang else translation(ex, lang)
                if found is None:
                    continue
                copy = Example(f"{ex.id}+mt:{lang}", lang, found[0], ex.output, ex.instruction_en)
                if data.accepts(copy):
                    options.append((lang, copy, found[1]))
            rng.shuffle(options)
            choices[ex.id] = options

        target = round(ratio * len(examples))
        while len(data.added) < target and any(choices.values()):
            for ex in order:
                if len(data.added) >= target:
                    break
                if choices[ex.id]:
                    _, copy, source = choices[ex.id].pop()
                    data.add(copy, source)
        if len(data.added) < target:
            data.skip("no_translation", target - len(data.added))
            log.warning("aug_mt: %d of the %d copies asked for (mt_ratio=%s) have no translation available",
                        target - len(data.added), target, ratio)  # fmt: skip
        return data.finish(ctx, target_copies=target, mt_langs=langs)

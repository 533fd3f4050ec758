"""+EN (`aug_en`): the training data plus, for every non-English example, its English instruction paired
with the same response.

Reference: the "+EN" data-level baseline of the CC-Tuning paper (Ye et al., ACL 2025, Sec. 4 and
`shared/docs/METHOD.md`, "Baselines"): "English translations of the instructions paired with the same
responses". Training is vanilla SFT on the augmented data (`harness.methods.vanilla.Vanilla.train`).

The English instruction is the example's `instruction_en` (the recipe's human parallel: FLORES and
NTREX English sentences in `mini-parallel`). Where the recipe has none (Aya, a JSONL file without it)
it comes from a `harness translate --tgt-lang en` file passed as `--method-opt translations=FILE`.

How it differs from the paper's version, where it must:
- the paper used a parallel subset of Aya whose English side came with the data; we use the offline
  `mini-parallel` recipe (or machine translations, as above);
- an added example is dropped when it repeats one already in the data (same language, instruction and
  response: with `mini-parallel` the English example of the same FLORES sentence may be in the data,
  and several languages may share one sentence), when it is a copy task (its response is a whole line
  or paragraph of its instruction: the English side of an NTREX "translate into English" example,
  which the recipe itself leaves out for English), and when it overlaps a benchmark test item
  (`harness.data.decontam`, like the recipe).

The run keeps the exact data: `<run_dir>/train_data.jsonl` (every example trained on, its `source`
saying where it came from: `original`, or how it was made) and `<run_dir>/augmentation.json` (counts:
originals, added per language and per source, skipped per reason). `AugmentedData` below does this for
every data-level method (`aug_mt` and `sdrrl` use it).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from harness.core.method import register_method
from harness.data.base import Example
from harness.data.decontam import texts_overlap
from harness.data.translate import Translations
from harness.methods.vanilla import Vanilla
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl
from harness.training.settings import TrainContext

log = logging.getLogger(__name__)

TRAIN_DATA = "train_data.jsonl"
AUGMENTATION = "augmentation.json"


def is_copy_task(example: Example) -> bool:
    """The response is a whole line, or a whole paragraph, of the instruction (an answer that is one of
    the options listed inside a line is not a copy)."""
    output = example.output.strip()
    pieces = example.instruction.split("\n") + example.instruction.split("\n\n")
    return any(output == piece.strip() for piece in pieces)


def overlapping(examples: list[Example]) -> list[bool]:
    """For each example: does its instruction, response or English instruction overlap a benchmark test
    item of its language or of English (`harness.data.decontam.texts_overlap`)?"""
    hits = [False] * len(examples)
    by_lang: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        by_lang.setdefault(example.lang, []).append(i)
    for lang, indices in by_lang.items():
        texts = [
            t
            for i in indices
            for t in (examples[i].instruction, examples[i].output, examples[i].instruction_en or "")
        ]
        flags = texts_overlap(texts, lang)
        for j, i in enumerate(indices):
            hits[i] = any(flags[3 * j : 3 * j + 3])
    return hits


def _key(example: Example) -> tuple[str, str, str]:
    """What makes two examples the same training signal."""
    return example.lang, example.instruction, example.output


class AugmentedData:
    """The examples a data-level method trains on: the originals (unless `keep_original` is False), then
    the added examples, less those that repeat an example already there, are copy tasks, or overlap a
    benchmark test item. `finish` stores them in the run and returns them."""

    def __init__(self, method: str, originals: list[Example], keep_original: bool = True) -> None:
        self.method = method
        self.originals = list(originals)
        self.keep_original = keep_original
        self.added: list[Example] = []
        self.sources: dict[str, str] = {}  # added example id -> where it came from
        self.skipped: Counter[str] = Counter()
        self._seen = {_key(ex) for ex in originals}

    def accepts(self, example: Example) -> bool:
        """Would `add` keep `example` (before the test-set check)?"""
        return _key(example) not in self._seen and not is_copy_task(example)

    def add(self, example: Example, source: str = "added") -> bool:
        """Add `example` (tagged with its `source`, e.g. "parallel" or "mt") unless it repeats one or is a
        copy task; True when added."""
        key = _key(example)
        if key in self._seen:
            self.skipped["duplicate"] += 1
            return False
        if is_copy_task(example):
            self.skipped["copy_task"] += 1
            return False
        self._seen.add(key)
        self.added.append(example)
        self.sources[example.id] = source
        return True

    def skip(self, reason: str, count: int = 1) -> None:
        """Count examples the method could not augment (e.g. no translation)."""
        self.skipped[reason] += count

    def finish(self, ctx: TrainContext, **details: Any) -> list[Example]:
        """Drop added examples that overlap a test item, write `train_data.jsonl` and `augmentation.json`
        into the run, and return the examples to train on."""
        clean = [ex for ex, hit in zip(self.added, overlapping(self.added), strict=True) if not hit]
        if len(clean) < len(self.added):
            self.skipped["contaminated"] += len(self.added) - len(clean)
        self.added = clean
        originals = self.originals if self.keep_original else []
        examples = originals + self.added
        if not examples:
            raise HarnessError(f"method '{self.method}' produced no training examples ({self.summary()})")
        rows = [{**ex.to_dict(), "source": "original"} for ex in originals]
        rows += [{**ex.to_dict(), "source": self.sources[ex.id]} for ex in self.added]
        atomic_write_jsonl(ctx.run_dir / TRAIN_DATA, rows)
        atomic_write_json(ctx.run_dir / AUGMENTATION, {"method": self.method, **self.summary(), **details})
        log.info("%s: %s", self.method, self.summary())
        return examples

    def summary(self) -> dict[str, Any]:
        return {
            "originals": len(self.originals),
            "kept_originals": len(self.originals) if self.keep_original else 0,
            "added": dict(sorted(Counter(ex.lang for ex in self.added).items())),
            "added_total": len(self.added),
            "sources": dict(sorted(Counter(self.sources[ex.id] for ex in self.added).items())),
            "skipped": dict(sorted(self.skipped.items())),
        }


def load_translations(path: str):
    """The `harness translate` file of a `translations` option, or None when the option is empty."""
    if not path:
        return None
    return Translations.load(path)


def english_instruction(example: Example, translations=None) -> str | None:
    """The English instruction of `example`: its own `instruction_en`, else a translation into English."""
    if example.instruction_en:
        return example.instruction_en
    if translations is not None:
        return translations.get(example.instruction, example.lang, "en")
    return None


@register_method("aug_en")
class AugEnglish(Vanilla):
    description = "+EN: vanilla SFT on the data plus each non-English example's English instruction with the same response."
    defaults = {
        "translations": ""
    }  # a `harness translate --tgt-lang en` file, for recipes without instruction_en

    def prepare_examples(self, examples: list[Example], ctx: TrainContext) -> list[Example]:
        translations = load_translations(self.options["translations"])
        data = AugmentedData(self.name, examples)
        foreign = [ex for ex in examples if ex.lang != "en"]
        for ex in foreign:
            english = english_instruction(ex, translations)
            if english is None:
                data.skip("no_english_instruction")
                continue
            source = "instruction_en" if ex.instruction_en else "mt"
            data.add(Example(f"{ex.id}+en", "en", english, ex.output, english), source)
        if foreign and data.skipped["no_english_instruction"] == len(foreign):
            raise HarnessError(
                f"aug_en: none of the {len(foreign)} non-English examples has an English instruction; use a "
                "parallel recipe (mini-parallel), or translate with `harness translate --tgt-lang en --out FILE` "
                "and pass --method-opt translations=FILE"
            )
        return data.finish(ctx)

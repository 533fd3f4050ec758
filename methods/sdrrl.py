"""SDRRL (`sdrrl`): self-distillation from resource-rich languages. The base model answers the English
instructions; each answer becomes an extra target for the corresponding non-English instruction.

Reference: Zhang et al., "Enhancing Multilingual Capabilities of Large Language Models through
Self-Distillation from Resource-Rich Languages", ACL 2024 (arXiv 2402.12204); a data-level baseline of
the CC-Tuning paper (`shared/docs/METHOD.md`, "Baselines"). Training is vanilla SFT on the data.

The data, for each non-English example (X instruction q_X, English instruction q_EN, response r):
- the original (q_X, r); with `keep_original` False no original example (English ones included) is kept;
- (q_X, a_EN), a_EN the base model's answer to q_EN: chat template (`harness.data.chat.format_prompt`),
  batches of `gen_batch_size` left-padded prompts, greedy decoding (or sampling with `temperature`
  when `do_sample`), at most `max_new_tokens` new tokens, special tokens dropped, whitespace stripped;
  an empty answer adds nothing;
- with `code_switch`, also (q_CS, a_EN), q_CS the code-switched instruction of `code_switch_text`: the
  words that q_X and q_EN share at their start and end (the recipe's English template) are kept, and
  in the part between (the native content) one contiguous stretch of round(`cs_ratio` x its words) is
  replaced by the proportionally placed stretch of the English content (a CJK or Thai character counts
  as a word). The stretch is drawn from a generator seeded by the run's seed and the example id.

The answers are cached in `<run_dir>/sdrrl_answers.jsonl`, one row per distinct English instruction,
keyed by the model, the generation settings and the instruction's hash (the example ids that use it are
stored too). Rows are appended one flushed batch at a time (`harness.data.translate.ResumableJsonl`): a
killed run keeps every finished batch, and the resumed run generates only what is missing. English
instructions come from `instruction_en`, else from a `harness translate --tgt-lang en` file
(`translations` option); examples with neither are skipped (counted in `augmentation.json`).

How it differs from the paper's version, where it must:
- the paper distils on its own English instruction data (e.g. Alpaca-style instructions) and also
  machine-translates the self-distilled answers into the target languages; we distil on the English
  side of the run's own recipe (`mini-parallel`: the FLORES / NTREX English sentences, offline, instead
  of Aya) and keep the answers in English (no translation model is needed);
- the paper code-switches with word-level bilingual dictionaries; offline we have none, so q_CS is the
  proportional-stretch switch above: approximate (no word alignment), documented, and optional;
- added examples that repeat one already in the data or overlap a benchmark test item are dropped,
  and `<run_dir>/train_data.jsonl` keeps the exact data (`harness.methods.aug_en.AugmentedData`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness.core.method import register_method
from harness.data.base import Example
from harness.data.chat import format_prompt
from harness.data.models import load_model, load_tokenizer
from harness.data.translate import ResumableJsonl
from harness.methods.aug_en import AugmentedData, english_instruction, load_translations
from harness.methods.vanilla import Vanilla
from harness.plumbing.errors import HarnessError
from harness.training.settings import TrainContext

log = logging.getLogger(__name__)

ANSWERS = "sdrrl_answers.jsonl"

# A word with the whitespace after it; each CJK or Thai-family character is a word of its own.
_CONTINUOUS = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE = re.compile(f"\\s+|[{_CONTINUOUS}]\\s*|[^\\s{_CONTINUOUS}]+\\s*")


def words(text: str) -> list[str]:
    """`text` cut into words, each with the whitespace after it ("".join(words(t)) == t)."""
    return _WORD_RE.findall(text)


def code_switch_text(native: str, english: str, ratio: float, rng: random.Random) -> str | None:
    """The native instruction with one stretch of its content in English (see the module doc), or None
    when the two instructions differ in less than two native words."""
    a, b = words(native), words(english)
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    mid_a, mid_b = a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]
    m, n = len(mid_a), len(mid_b)
    if m < 2 or n < 1:
        return None
    k = min(m - 1, max(1, round(ratio * m)))  # native words replaced
    start = rng.randrange(m - k + 1)
    e0 = min(n - 1, round(start * n / m))
    e1 = max(e0 + 1, min(n, round((start + k) * n / m)))
    replaced_tail = mid_a[start + k - 1]
    stretch = "".join(mid_b[e0:e1]).rstrip() + replaced_tail[len(replaced_tail.rstrip()) :]
    return "".join(a[:prefix] + mid_a[:start] + [stretch] + mid_a[start + k :] + a[len(a) - suffix :])


def answer_key(settings: dict[str, Any], instruction_en: str) -> str:
    blob = json.dumps({**settings, "instruction_en": instruction_en}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def generate_answers(
    model_ref: str,
    instructions: dict[str, list[str]],
    cache_path: Path,
    settings: dict[str, Any],
    batch_size: int,
    seed: int,
    trust_remote_code: bool = False,
) -> dict[str, str]:
    """English instruction -> the model's answer, for every instruction in `instructions` (instruction ->
    ids of the examples that use it), generating only those not in the cache."""
    cache = ResumableJsonl(cache_path)
    keys = {text: answer_key(settings, text) for text in instructions}
    todo = [text for text, key in keys.items() if key not in cache]
    log.info("sdrrl: %d English instructions, %d answers cached, %d to generate",
             len(keys), len(keys) - len(todo), len(todo))  # fmt: skip
    if todo:
        _generate_into(
            cache, model_ref, todo, keys, instructions, settings, batch_size, seed, trust_remote_code
        )
    return {text: str(cache.rows[key]["answer"]) for text, key in keys.items()}


def _generate_into(
    cache: ResumableJsonl,
    model_ref: str,
    todo: list[str],
    keys: dict[str, str],
    instructions: dict[str, list[str]],
    settings: dict[str, Any],
    batch_size: int,
    seed: int,
    trust_remote_code: bool,
) -> None:
    import torch
    tokenizer = load_tokenizer(model_ref, trust_remote_code)
    tokenizer.padding_side = "left"  # generation continues every row from its last prompt token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_ref, trust_remote_code=trust_remote_code).to(device).eval()
    eos = (
        model.generation_config.eos_token_id
    )  # None, an id, or a list of ids (e.g. end of turn + end of text)
    eos_ids = sorted({tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None})
    sampling: dict[str, Any] = {"do_sample": settings["do_sample"]}
    if settings["do_sample"]:
        sampling["temperature"] = settings["temperature"]
    todo = sorted(todo, key=lambda t: (len(t), t))  # similar lengths together: less padding
    with tqdm(total=len(todo), desc="sdrrl answers", unit="answer") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [format_prompt(tokenizer, text) for text in batch]
            inputs = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
            inputs = inputs.to(device)  # input_ids, attention_mask: (batch, prompt width), left-padded
            if settings["do_sample"]:  # the batch's own seed: a resumed run samples the same
                torch.manual_seed(seed + int(keys[batch[0]][:8], 16))
            with torch.no_grad():
                out = model.generate(  # (batch, prompt width + new tokens)
                    **inputs, max_new_tokens=settings["max_new_tokens"], eos_token_id=eos_ids,
                    pad_token_id=tokenizer.pad_token_id, **sampling,
                )  # fmt: skip
            new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (batch, new tokens)
            answers = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            cache.append([
                {"key": keys[text], "instruction_en": text, "answer": answer.strip(), "ids": instructions[text],
                 "settings": settings}
                for text, answer in zip(batch, answers, strict=True)
            ])  # fmt: skip
            bar.update(len(batch))


@register_method("sdrrl")
class SDRRL(Vanilla):
    description = "SDRRL: the base model's answers to the English instructions as extra targets for the non-English ones."
    defaults = {
        "max_new_tokens": 128,
        "gen_batch_size": 8,
        "do_sample": False,
        "temperature": 0.7,  # used only with do_sample
        "code_switch": False,
        "cs_ratio": 0.3,
        "keep_original": True,
        "translations": "",  # a `harness translate --tgt-lang en` file, for recipes without instruction_en
    }

    def generation_settings(self, ctx: TrainContext) -> dict[str, Any]:
        """What an answer depends on (its cache key)."""
        settings = {"model": ctx.base_model, "max_new_tokens": self.options["max_new_tokens"],
                    "do_sample": self.options["do_sample"]}  # fmt: skip
        if self.options["do_sample"]:
            settings.update(temperature=self.options["temperature"], seed=ctx.seed)
        return settings

    def prepare_examples(self, examples: list[Example], ctx: TrainContext) -> list[Example]:
        opts = self.options
        if opts["max_new_tokens"] < 1 or opts["gen_batch_size"] < 1:
            raise HarnessError(
                "options max_new_tokens and gen_batch_size of method 'sdrrl' must be at least 1"
            )
        if not 0 < opts["cs_ratio"] < 1:
            raise HarnessError(
                f"option cs_ratio={opts['cs_ratio']} of method 'sdrrl' must be between 0 and 1"
            )
        translations = load_translations(opts["translations"])
        data = AugmentedData(self.name, examples, keep_original=opts["keep_original"])
        pairs: list[tuple[Example, str]] = []  # (non-English example, its English instruction)
        for ex in examples:
            if ex.lang == "en":
                continue
            english = english_instruction(ex, translations)
            if english is None:
                data.skip("no_english_instruction")
            else:
                pairs.append((ex, english))
        if not pairs:
            raise HarnessError(
                "sdrrl: no non-English example with an English instruction; use a parallel recipe "
                "(mini-parallel) or pass --method-opt translations=FILE from `harness translate --tgt-lang en`"
            )
        instructions: dict[str, list[str]] = {}
        for ex, english in pairs:
            instructions.setdefault(english, []).append(ex.id)
        settings = self.generation_settings(ctx)
        answers = generate_answers(ctx.base_model, instructions, ctx.run_dir / ANSWERS, settings,
                                   opts["gen_batch_size"], ctx.seed, ctx.trust_remote_code)  # fmt: skip
        for ex, english in pairs:
            answer = answers[english]
            if not answer:
                data.skip("empty_answer")
                continue
            data.add(Example(f"{ex.id}+sdrrl", ex.lang, ex.instruction, answer, english), "answer")
            if opts["code_switch"]:
                rng = random.Random(f"sdrrl:{ctx.seed}:{ex.id}")
                switched = code_switch_text(ex.instruction, english, opts["cs_ratio"], rng)
                if switched is None:
                    data.skip("no_code_switch")
                else:
                    data.add(Example(f"{ex.id}+sdrrl-cs", ex.lang, switched, answer, english), "code_switch")
        return data.finish(ctx, generation=settings, answers_file=ANSWERS)

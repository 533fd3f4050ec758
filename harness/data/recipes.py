"""Training-data recipes: a name and `RecipeOptions` in, a deterministic list of `Example`s out.

    examples = load_recipe("mini-parallel", RecipeOptions(langs=("sw", "zh"), per_lang=300, seed=1))

Every recipe returns the same shape: per language, a seeded shuffle cut to `per_lang`; then the
languages interleaved (seeded) so that every stretch of the list holds every language in proportion
(a run cut short still trains on all of them). Same options, same list; another seed, another order.

- `mini-parallel` (default): SIB-200 topic classification and NTREX translation into English from
  the shared parallel data, 22 languages, each example with its English instruction; it contains no
  benchmark test item (see `harness.data.decontam`).
- `jsonl`: any local JSONL file of `{lang, instruction, output, instruction_en?, id?}` rows.
- `aya`: the Aya dataset (Hub, or a local copy), 22 languages, no English parallel; reading it (language
  codes, script check, loading) is `harness.data.aya_source`.
- `llamafactory`: LLaMA-Factory data (dataset_info.json + alpaca files), as the CC-Tuning authors trained
  from; reading it is `harness.data.llamafactory`.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.aya_source import AYA_DATASET, AYA_LANGUAGE_CODES, in_script, load_aya_table
from harness.data.base import LANGUAGES, Example, check_languages, data_dir, iter_jsonl
from harness.data.decontam import texts_overlap
from harness.data.llamafactory import USAGE, read_llamafactory
from harness.data.prompts import SIB_PROMPT, SIB_TOPICS, TRANSLATE_TO_EN_PROMPT
from harness.plumbing.errors import HarnessError
from harness.plumbing.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeOptions:
    """What to take from a recipe. `langs=None` takes every language the recipe has; `per_lang=None`
    every example; `path` is the file / dataset a recipe reads (`jsonl`: required; `aya`: a local copy
    or another Hub id)."""

    langs: tuple[str, ...] | None = None
    per_lang: int | None = None
    seed: int = 0
    path: str | None = None


Recipe = Callable[[RecipeOptions], list[Example]]
RECIPES: Registry[Recipe] = Registry("recipe")
DEFAULT_RECIPE = "mini-parallel"


def load_recipe(name: str, options: RecipeOptions) -> list[Example]:
    """The examples of recipe `name` under `options` (deterministic: same options, same list)."""
    recipe = RECIPES.get(name)
    return recipe(_checked(options))


def describe_recipes() -> dict[str, str]:
    """Recipe name -> one-line description (the first line of its docstring)."""
    return {name: (RECIPES.get(name).__doc__ or "").strip().splitlines()[0] for name in RECIPES}


def _checked(options: RecipeOptions) -> RecipeOptions:
    per_lang = options.per_lang
    if per_lang is not None and (isinstance(per_lang, bool) or not isinstance(per_lang, int) or per_lang < 1):
        raise HarnessError(
            f"--train-limit (per_lang) must be a positive integer, or unset for all examples; got {per_lang!r}"
        )
    if isinstance(options.seed, bool) or not isinstance(options.seed, int):
        raise HarnessError(f"--seed must be an integer, got {options.seed!r}")
    if options.langs is None:
        return options
    if isinstance(options.langs, str) or not options.langs:
        raise HarnessError(
            f"--train-langs (langs) must list at least one language, or be unset for all; got {options.langs!r}"
        )
    langs = tuple(dict.fromkeys(options.langs))
    check_languages(list(langs), LANGUAGES, where="--train-langs")
    return RecipeOptions(langs=langs, per_lang=per_lang, seed=options.seed, path=options.path)


# --- shared selection: seeded per-language sample, then seeded interleaving -------------------------


def _rng(recipe: str, seed: int, *parts: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`: the same on every machine and Python run.
    return random.Random(":".join((recipe, str(seed), *parts)))


def _shuffled(items: Sequence[Example], rng: random.Random) -> list[Example]:
    out = list(items)
    rng.shuffle(out)
    return out


def _interleave(by_lang: dict[str, list[Example]], recipe: str, seed: int) -> list[Example]:
    """Merge the languages so each is spread evenly: the j-th of a language's n examples lands at a
    random point of the j-th n-th of the output (stratified jitter). With equal counts, each
    consecutive block of len(by_lang) examples holds one example of every language, in a random order."""
    rng = _rng(recipe, seed, "interleave")
    keyed: list[tuple[float, str, Example]] = []
    for lang in sorted(by_lang):
        items = by_lang[lang]
        keyed.extend(((j + rng.random()) / len(items), ex.id, ex) for j, ex in enumerate(items))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [ex for _, _, ex in keyed]


def _sample_and_interleave(
    by_lang: dict[str, list[Example]], options: RecipeOptions, recipe: str
) -> list[Example]:
    """Seeded shuffle per language, cut to `per_lang`, then `_interleave`."""
    chosen = {
        lang: _shuffled(items, _rng(recipe, options.seed, lang))[: options.per_lang]
        for lang, items in by_lang.items()
    }
    return _interleave(chosen, recipe, options.seed)


def _require_langs(have: Sequence[str], options: RecipeOptions, source: str) -> list[str]:
    """The languages to take: all of `have`, or `options.langs` (each must be there)."""
    if not have:
        raise HarnessError(f"{source} has no usable examples")
    if options.langs is None:
        return sorted(have)
    missing = [lang for lang in options.langs if lang not in have]
    if missing:
        raise HarnessError(
            f"{source} has no examples in {', '.join(missing)}; languages there: {', '.join(sorted(have)) or 'none'}"
        )
    return list(options.langs)


# --- mini-parallel ---------------------------------------------------------------------------------

SIB_SHARE = 2 / 3  # of per_lang (rounded); the rest is NTREX


@dataclass(frozen=True)
class _Pool:
    """One language's decontaminated mini-parallel candidates, in file order."""

    sib: tuple[Example, ...]
    ntrex: tuple[Example, ...]
    removed: dict[str, int] = field(default_factory=dict)  # source -> examples dropped as contaminated


def _text_field(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise HarnessError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def _row_id(row: dict[str, Any], where: str) -> str:
    if "id" not in row:
        raise HarnessError(f"{where}: missing field 'id'")
    return str(row["id"])


def _clean(candidates: list[tuple[str, str, Example]], lang: str, data: Path) -> tuple[list[Example], int]:
    """The candidates (native sentence, English sentence, example) whose sentences overlap no test
    item, and how many were dropped."""
    native = texts_overlap([c[0] for c in candidates], lang, data)
    english = texts_overlap([c[1] for c in candidates], "en", data)
    kept = [ex for (_, _, ex), a, b in zip(candidates, native, english, strict=True) if not (a or b)]
    return kept, len(candidates) - len(kept)


@functools.cache
def _mini_parallel_pool(root: str, lang: str) -> _Pool:
    data = Path(root)
    sib: list[tuple[str, str, Example]] = []
    path = data / "parallel" / "flores_sib" / f"{lang}.jsonl"
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if row.get("split") != "train":
            continue  # dev and test are the SIB-200 task's items
        text = _text_field(row, "text", where)
        text_en = text if lang == "en" else _text_field(row, "text_en", where)
        topic = _text_field(row, "topic", where)
        if topic not in SIB_TOPICS:
            raise HarnessError(f"{where}: unknown topic '{topic}'; valid: {', '.join(SIB_TOPICS)}")
        example = Example(
            id=f"mini-parallel/{lang}/sib/{_row_id(row, where)}",
            lang=lang,
            instruction=SIB_PROMPT.format(text=text),
            output=topic,
            instruction_en=SIB_PROMPT.format(text=text_en),
        )
        sib.append((text, text_en, example))
    ntrex: list[tuple[str, str, Example]] = []
    if lang != "en":  # an English "translate into English" example is a copy task: useless
        path = data / "parallel" / "ntrex" / f"{lang}.jsonl"
        for lineno, row in iter_jsonl(path):
            where = f"{path}:{lineno}"
            text = _text_field(row, "text", where)
            text_en = _text_field(row, "text_en", where)
            example = Example(
                id=f"mini-parallel/{lang}/ntrex/{_row_id(row, where)}",
                lang=lang,
                instruction=TRANSLATE_TO_EN_PROMPT.format(text=text),
                output=text_en,
                instruction_en=TRANSLATE_TO_EN_PROMPT.format(text=text_en),
            )
            ntrex.append((text, text_en, example))
    sib_kept, sib_removed = _clean(sib, lang, data)
    ntrex_kept, ntrex_removed = _clean(ntrex, lang, data)
    removed = {"sib": sib_removed, "ntrex": ntrex_removed}
    if sib_removed or ntrex_removed:
        logger.info("mini-parallel %s: dropped %s as overlapping benchmark test items", lang, removed)
    return _Pool(tuple(sib_kept), tuple(ntrex_kept), removed)


def mini_parallel_removed(langs: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Per language, how many candidates decontamination dropped from each source ("sib", "ntrex")."""
    root = str(data_dir().resolve())
    return {lang: dict(_mini_parallel_pool(root, lang).removed) for lang in (langs or LANGUAGES)}


@RECIPES.register("mini-parallel")
def mini_parallel(options: RecipeOptions) -> list[Example]:
    """Default: SIB-200 topic classification + NTREX translation into English, 22 languages, parallel English instructions, no test items.

    Built from the shared data folder (`<data>/parallel`):
    - SIB-200 (FLORES-200 sentences, `split == "train"` only: 701 per language): instruction
      `SIB_PROMPT` around the native sentence, output the English topic label, English instruction
      the same template around the English sentence. The dev/test sentences are the SIB-200 task's.
    - NTREX-128 (1997 news sentences): "translate into English", output the English sentence; the
      English instruction is the same template around the English sentence. Not for English
      itself: translating English into English is a copy task that teaches nothing.
    For English, `instruction_en == instruction`.

    Decontamination: a candidate is dropped when its source sentence (native or English) overlaps a
    benchmark test item: any prompt / prompt_en / answer of `<data>/benchmarks`, or a SIB-200 dev/test
    sentence (`harness.data.decontam`; `mini_parallel_removed()` says how many).

    Mix: each source is shuffled per language (seeded). With `per_lang=N` a language takes
    round(2N/3) SIB examples and the rest from NTREX (the SIB share keeps the in-domain SIB probe
    learnable); when one source runs short the other fills in (English: all SIB), and a language
    with fewer than N examples gives all it has. Without `per_lang`, everything. Ids look like
    `mini-parallel/sw/sib/123` and `mini-parallel/sw/ntrex/45` (the row id in the source file).
    """
    if options.path:
        raise HarnessError(
            f"recipe 'mini-parallel' takes no --recipe-path (got '{options.path}'); it reads <data>/parallel, "
            "set HARNESS_DATA to use another data folder"
        )
    root = str(data_dir().resolve())
    by_lang: dict[str, list[Example]] = {}
    for lang in options.langs or LANGUAGES:
        pool = _mini_parallel_pool(root, lang)
        rng = _rng("mini-parallel", options.seed, lang)
        sib, ntrex = _shuffled(pool.sib, rng), _shuffled(pool.ntrex, rng)
        n = options.per_lang
        if n is not None:
            n_sib = min(len(sib), max(n - len(ntrex), round(SIB_SHARE * n)))
            sib, ntrex = sib[:n_sib], ntrex[: n - n_sib]
        by_lang[lang] = _shuffled(sib + ntrex, rng)
    return _interleave(by_lang, "mini-parallel", options.seed)


# --- jsonl -----------------------------------------------------------------------------------------

JSONL_ROW = (
    "each row needs non-empty string fields lang, instruction and output (instruction_en and id are optional)"
)


def _required(row: dict[str, Any], key: str, where: str) -> str:
    if key not in row:
        raise HarnessError(f"{where}: missing field '{key}'; {JSONL_ROW}")
    value = row[key]
    if not isinstance(value, str):
        raise HarnessError(
            f"{where}: field '{key}' must be a string, got {type(value).__name__}; {JSONL_ROW}"
        )
    if not value.strip():
        raise HarnessError(f"{where}: field '{key}' is empty; {JSONL_ROW}")
    return value


@RECIPES.register("jsonl")
def jsonl(options: RecipeOptions) -> list[Example]:
    """A local JSONL file of {lang, instruction, output, instruction_en, id} rows (--recipe-path).

    `lang` is one of the 22 languages; `instruction_en` (the English instruction with the same
    content, needed by CC-Tuning) is optional, and for English rows defaults to the instruction;
    `id` is optional (default `<file stem>/<line>`) and must be unique. Every row is checked; a bad
    one is an error naming file:line. Rows are used as given: run
    `harness.data.decontam.contamination_report` to check a file against the benchmarks.
    """
    if not options.path:
        raise HarnessError(
            "recipe 'jsonl' needs --recipe-path: a local JSONL file with one "
            '{"lang", "instruction", "output", "instruction_en"} object per line'
        )
    path = Path(options.path).expanduser()
    by_lang: dict[str, list[Example]] = {}
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        lang = _required(row, "lang", where)
        check_languages([lang], LANGUAGES, where=where)
        instruction = _required(row, "instruction", where)
        output = _required(row, "output", where)
        instruction_en = row.get("instruction_en")
        if instruction_en is not None and (not isinstance(instruction_en, str) or not instruction_en.strip()):
            raise HarnessError(
                f"{where}: field 'instruction_en' must be a non-empty string or absent, got {instruction_en!r}"
            )
        if instruction_en is None and lang == "en":
            instruction_en = instruction
        raw_id = row.get("id")
        if raw_id is None:
            ex_id = f"{path.stem}/{lineno}"
        elif isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
            raise HarnessError(
                f"{where}: field 'id' must be a non-empty string or an integer, got {raw_id!r}"
            )
        else:
            ex_id = str(raw_id)
        if ex_id in first_line:
            raise HarnessError(
                f"{where}: duplicate id '{ex_id}' (first used on line {first_line[ex_id]}); ids must be unique"
            )
        first_line[ex_id] = lineno
        by_lang.setdefault(lang, []).append(Example(ex_id, lang, instruction, output, instruction_en))
    langs = _require_langs(list(by_lang), options, str(path))
    return _sample_and_interleave({lang: by_lang[lang] for lang in langs}, options, "jsonl")


# --- aya -------------------------------------------------------------------------------------------


@RECIPES.register("aya")
def aya(options: RecipeOptions) -> list[Example]:
    """The Aya dataset (CohereForAI/aya_dataset, human-written, Hub or local copy), 22 languages, no English parallel.

    Loaded with `datasets.load_dataset(path, split="train")`, path defaulting to the Hub id; the
    recipe path may name another Hub id or a local copy in the same format (a folder, or a .jsonl /
    .parquet file with columns inputs, targets, language_code). Rows are mapped by
    `AYA_LANGUAGE_CODES`; rows in other languages or dialects, empty rows, rows not in their
    language's script (romanised Hindi / Urdu) and rows overlapping a benchmark test item are
    dropped. Ids are `aya/<lang>/<row index>`.

    Aya has no English parallel: `instruction_en` is None except for English rows (the instruction
    itself). CC-Tuning needs parallel instructions (the paper used a parallel subset of Aya built by
    translation), so with this recipe it can only use the English rows; the data-level baselines and
    vanilla SFT use everything.
    """
    source = options.path or AYA_DATASET
    table = load_aya_table(source)
    missing = [c for c in ("inputs", "targets", "language_code") if c not in table.column_names]
    if missing:
        raise HarnessError(
            f"{source}: not in the Aya format, missing column(s) {', '.join(missing)}; expected inputs, "
            f"targets, language_code (found: {', '.join(table.column_names)})"
        )
    wanted = set(options.langs or LANGUAGES)
    dropped = {"language": 0, "empty": 0, "script": 0, "contaminated": 0}
    candidates: dict[str, list[Example]] = {}
    columns = table.select_columns(["inputs", "targets", "language_code"]).to_dict()  # fast: one Arrow read
    rows = zip(columns["inputs"], columns["targets"], columns["language_code"], strict=True)
    for i, (inputs, targets, code) in enumerate(rows):
        lang = AYA_LANGUAGE_CODES.get(str(code).strip().lower())
        if lang is None or lang not in wanted:
            dropped["language"] += 1
        elif not (
            isinstance(inputs, str) and isinstance(targets, str) and inputs.strip() and targets.strip()
        ):
            dropped["empty"] += 1
        elif not in_script(inputs + " " + targets, lang):
            dropped["script"] += 1
        else:
            instruction_en = inputs if lang == "en" else None
            candidates.setdefault(lang, []).append(
                Example(f"aya/{lang}/{i}", lang, inputs, targets, instruction_en)
            )
    data = data_dir()
    by_lang: dict[str, list[Example]] = {}
    for lang, examples in candidates.items():
        hits = texts_overlap([t for ex in examples for t in (ex.instruction, ex.output)], lang, data)
        by_lang[lang] = [ex for i, ex in enumerate(examples) if not (hits[2 * i] or hits[2 * i + 1])]
        dropped["contaminated"] += len(examples) - len(by_lang[lang])
    logger.info(
        "aya %s: kept %s, dropped %s", source, {k: len(v) for k, v in sorted(by_lang.items())}, dropped
    )
    langs = _require_langs(list(by_lang), options, f"the Aya data at '{source}'")
    return _sample_and_interleave({lang: by_lang[lang] for lang in langs}, options, "aya")


# --- llamafactory ----------------------------------------------------------------------------------


@RECIPES.register("llamafactory")
def llamafactory(options: RecipeOptions) -> list[Example]:
    """LLaMA-Factory data as the CC-Tuning authors trained from: dataset_info.json + alpaca JSON files (--recipe-path DIR[#name,...]).

    Every alpaca-format entry with a local file, or those named (`DIR#name1,name2=sw`); the English
    instruction from the authors' `instruction_en` field; the language per row or per dataset. The
    format and its rules: `harness.data.llamafactory`. Rows are used as given (no decontamination).
    """
    if not options.path:
        raise HarnessError(f"recipe 'llamafactory' needs {USAGE}")
    by_lang = read_llamafactory(options.path)
    langs = _require_langs(list(by_lang), options, f"--recipe-path {options.path}")
    return _sample_and_interleave({lang: by_lang[lang] for lang in langs}, options, "llamafactory")

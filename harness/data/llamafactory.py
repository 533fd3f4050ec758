"""Reading LLaMA-Factory training data for the `llamafactory` recipe (`harness.data.recipes`): a folder
with a `dataset_info.json` naming alpaca-format JSON / JSONL files, as the CC-Tuning authors trained from
(their `Training/data/dataset_info.json`, read by their fork of LLaMA-Factory).

    --recipe-path DIR                      every alpaca-format entry whose file is in DIR
    --recipe-path DIR#name1,name2=sw       these entries (DIR may also be the dataset_info.json file)

Each entry as LLaMA-Factory reads it (`src/llamafactory/data/parser.py`, `aligner.py`, `loader.py`):

- `file_name`: a file or a folder of files, relative to DIR; JSON (an array of objects, or one object per
  line) or JSONL. Entries on the Hub (`hf_hub_url`, `ms_hub_url`) or behind a loading script (`script_url`)
  are refused when named and skipped by default: nothing is downloaded.
- `columns` maps LLaMA-Factory's names to the file's fields: `prompt`, `query`, `response`, `history`,
  `system`. Without `columns` they are `instruction`, `input`, `output` (no history, no system); with
  `columns`, a name it leaves out is not read (parser.py sets it to None). The instruction is the prompt
  and the query joined by a newline, either left out when empty (aligner.py `convert_alpaca`).
- the English instruction, for CC-Tuning: the field `instruction_en`, which the authors' aligner reads by
  name (aligner.py, `example['instruction_en']`) and their dataset_info.json documents as
  `"aux": "instruction_en"` in `columns` (a key their parser ignores). Here `columns.aux` names the field,
  `instruction_en` by default. As in the authors' aligner the query is not appended to it. An English row
  without one is its own translation; other rows without one have none (CC-Tuning refuses them).
- a row with earlier turns (a non-empty `history` list) or a system prompt is refused: the harness trains
  single-turn examples without a system prompt. Preference data (`ranking`), `tools`, `images`, `videos`,
  sharegpt formatting and `num_samples` are refused too.

Languages: the authors' files carry none (their rows are `instruction`, `output`, `instruction_en`;
loader.py's comment shows the columns). A row's language is read from the field named by `columns.lang`
(an extension key LLaMA-Factory ignores, as it ignores `aux`; a code of `harness.data.base.LANGUAGES` or an
Aya ISO 639-3 code such as `swh`), else it is the dataset's: `name=lang` in the recipe path, else a language
code among the `_`/`-`/`.`-separated parts of the entry's name (`alpaca_sw`, LLaMA-Factory's
`alpaca_zh_demo`). Ids are `<entry>/<row>` (`<entry>/<file stem>/<row>` for a folder), rows counted from 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.aya_source import AYA_LANGUAGE_CODES
from harness.data.base import LANGUAGES, Example, check_languages, iter_jsonl
from harness.plumbing.errors import HarnessError, unknown

DATA_CONFIG = "dataset_info.json"
ALPACA_COLUMNS = ("prompt", "query", "response", "history", "system")
DEFAULT_COLUMNS: dict[str, str | None] = {"prompt": "instruction", "query": "input", "response": "output",
                                          "history": None, "system": None}  # fmt: skip
ENGLISH_FIELD = "instruction_en"
EXTRA_COLUMNS = ("aux", "lang")  # ours (and the authors' aux): LLaMA-Factory ignores them
UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "chosen", "rejected", "kto_tag", "messages")
REMOTE_KEYS = {"hf_hub_url": "on the Hugging Face Hub", "ms_hub_url": "on the ModelScope Hub",
               "script_url": "behind a loading script"}  # fmt: skip
READABLE = {".json", ".jsonl"}
OTHER_TYPES = {".arrow", ".csv", ".parquet", ".txt"}  # LLaMA-Factory's other file types (FILEEXT2TYPE)
USAGE = (
    "--recipe-path DIR or DIR#name1,name2 (DIR holds dataset_info.json; name=lang sets a dataset's language)"
)


@dataclass(frozen=True)
class Entry:
    """One dataset of dataset_info.json, checked: its files, its column map and its language."""

    name: str
    files: tuple[Path, ...]
    columns: dict[str, str | None]
    lang: str | None  # the dataset's language, when its rows do not carry one (`columns["lang"]`)
    in_folder: bool  # file_name is a folder: the row ids name the file


def read_llamafactory(spec: str) -> dict[str, list[Example]]:
    """The examples of the datasets `spec` selects (see the module docstring), by language."""
    info_path, selection = _split(spec)
    info = _read_info(info_path)
    by_lang: dict[str, list[Example]] = {}
    for entry in _entries(info, info_path, selection):
        for ex in _examples(entry):
            by_lang.setdefault(ex.lang, []).append(ex)
    return by_lang


def _split(spec: str) -> tuple[Path, dict[str, str | None] | None]:
    """dataset_info.json's path, and the chosen entries with their languages (None: every local one)."""
    where, hash_, names = spec.rpartition("#") if "#" in spec else (spec, "", "")
    path = Path(where).expanduser()
    info = path if path.is_file() else path / DATA_CONFIG
    if not info.is_file():
        raise HarnessError(f"--recipe-path {where}: no {DATA_CONFIG} there; expected {USAGE}")
    if not hash_:
        return info, None
    selection: dict[str, str | None] = {}
    for item in (part.strip() for part in names.split(",")):
        name, eq, lang = (s.strip() for s in item.partition("="))
        if not name or (eq and not lang):
            raise HarnessError(f"--recipe-path {spec}: empty dataset name or language; expected {USAGE}")
        if lang:
            check_languages([lang], LANGUAGES, where=f"--recipe-path {spec}")
        selection[name] = lang or None
    return info, selection


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not valid UTF-8; save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(info, dict) or not info:
        raise HarnessError(
            f"{path}: expected a JSON object of dataset entries (name -> {{file_name, columns}})"
        )
    return info


def _entries(info: dict[str, Any], path: Path, selection: dict[str, str | None] | None) -> list[Entry]:
    if selection is not None:
        for name in selection:
            if name not in info:
                raise unknown("dataset", name, info, str(path))
        return [_entry(name, info[name], path, selection[name]) for name in selection]
    entries, skipped = [], []
    for name, raw in info.items():
        why = _not_local(raw, path)
        if why:
            skipped.append(f"{name} ({why})")
        else:
            entries.append(_entry(name, raw, path, None))
    if not entries:
        raise HarnessError(f"{path}: no local alpaca-format dataset to read: {'; '.join(skipped)}")
    return entries


def _not_local(raw: Any, path: Path) -> str | None:
    """Why the default selection leaves an entry out (remote, not alpaca, preference data, file absent)."""
    if not isinstance(raw, dict):
        return None  # `_entry` says what is wrong
    remote = next((key for key in REMOTE_KEYS if key in raw), None)
    if remote:
        return remote
    if raw.get("formatting", "alpaca") != "alpaca":
        return f"formatting {raw['formatting']}"
    if raw.get("ranking"):
        return "ranking"
    if "file_name" in raw and not (path.parent / str(raw["file_name"])).exists():
        return "file absent"
    return None


def _entry(name: str, raw: Any, path: Path, lang: str | None) -> Entry:
    where = f"{path}: dataset '{name}'"
    if not isinstance(raw, dict):
        raise HarnessError(
            f"{where}: expected a JSON object with file_name and columns, got {type(raw).__name__}"
        )
    remote = next((key for key in REMOTE_KEYS if key in raw), None)
    if remote:
        raise HarnessError(f"{where} is {REMOTE_KEYS[remote]} ({remote}: {raw[remote]}); the llamafactory recipe "
                           "reads local files only (no network): save it as a JSON file and name it in file_name")  # fmt: skip
    refusals = [
        (raw.get("formatting", "alpaca") != "alpaca",
         f"formatting '{raw.get('formatting')}' is not read; the recipe reads alpaca-format data"),
        (bool(raw.get("ranking")), "ranking (preference) data is not read; the recipe reads supervised alpaca data"),
        ("num_samples" in raw, "num_samples is not supported; take a sample with --train-limit (per language)"),
    ]  # fmt: skip
    for refused, why in refusals:
        if refused:
            raise HarnessError(f"{where}: {why}")
    if not isinstance(raw.get("file_name"), str) or not raw["file_name"]:
        raise HarnessError(
            f"{where}: needs a file_name (a JSON / JSONL file or a folder of them, relative to {path.parent})"
        )
    columns = _columns(raw, where)
    target = path.parent / raw["file_name"]
    if target.is_dir():
        files = tuple(sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")))
        if not files:
            raise HarnessError(f"{where}: folder {target} holds no file")
    elif target.is_file():
        files = (target,)
    else:
        raise HarnessError(f"{where}: file {target} not found")
    for file in files:
        if file.suffix.lower() not in READABLE:
            other = (
                " (LLaMA-Factory also reads arrow, csv, parquet, txt)"
                if file.suffix.lower() in OTHER_TYPES
                else ""
            )
            raise HarnessError(
                f"{where}: {file}: only JSON and JSONL files are read{other}; save it as .json or .jsonl"
            )
    lang = lang or _name_language(name)
    if lang is None and not columns["lang"]:
        raise HarnessError(
            f'{where}: no language: name a row field with "lang" in its columns, add it to the recipe path '
            f"(DIR#{name}=sw), or put one language code in the dataset's name (e.g. {name}_sw)"
        )
    return Entry(name, files, columns, lang, target.is_dir())


def _columns(raw: dict[str, Any], where: str) -> dict[str, str | None]:
    """LLaMA-Factory's column map (parser.py: with `columns`, what it leaves out is None) plus ours (`aux`:
    the English instruction's field, required of non-English rows when named; `lang`)."""
    given = raw.get("columns")
    if given is None:
        return {**DEFAULT_COLUMNS, "aux": None, "lang": None}
    if not isinstance(given, dict):
        raise HarnessError(f"{where}: columns must be a JSON object mapping column names to fields")
    for key, value in given.items():
        if key in UNSUPPORTED_COLUMNS:
            raise HarnessError(f"{where}: column '{key}' is not supported; the recipe reads single-turn text "
                               f"examples ({', '.join(ALPACA_COLUMNS + EXTRA_COLUMNS)})")  # fmt: skip
        if key not in ALPACA_COLUMNS + EXTRA_COLUMNS:
            raise unknown("column", key, ALPACA_COLUMNS + EXTRA_COLUMNS, where)
        if value is not None and (not isinstance(value, str) or not value):
            raise HarnessError(f"{where}: column '{key}' must name a field (a string), got {value!r}")
    columns = {key: given.get(key) for key in ALPACA_COLUMNS + EXTRA_COLUMNS}
    if not (columns["prompt"] or columns["query"]) or not columns["response"]:
        raise HarnessError(f"{where}: columns must name a prompt (or query) and a response field")
    return columns


def _name_language(name: str) -> str | None:
    """The one language code among the parts of a dataset name (`alpaca_sw`, `alpaca_zh_demo`), if one."""
    codes = {part for part in re.split(r"[_\-.]", name.lower()) if part in LANGUAGES}
    return codes.pop() if len(codes) == 1 else None


def _rows(file: Path):
    """(where, row number, row) of a JSON array or a JSON-lines file; rows are objects; an empty file is an
    error."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HarnessError(f"{file}: not valid UTF-8; save the file as UTF-8") from None
    if file.suffix.lower() == ".jsonl" or not text.lstrip().startswith("["):
        for lineno, row in iter_jsonl(file):
            yield f"{file}:{lineno}", lineno, row
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{file}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    if not rows:
        raise HarnessError(f"{file}: empty file, expected a JSON array of alpaca rows")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise HarnessError(f"{file}: row {n}: expected a JSON object, got {type(row).__name__}")
        yield f"{file}: row {n}", n, row


def _examples(entry: Entry) -> list[Example]:
    out = []
    for file in entry.files:
        for where, n, row in _rows(file):
            ex_id = f"{entry.name}/{file.stem}/{n}" if entry.in_folder else f"{entry.name}/{n}"
            out.append(_example(entry, row, where, ex_id))
    return out


def _field(row: dict[str, Any], column: str | None, role: str, where: str, required: bool) -> str | None:
    """A text field, or None when it is unmapped, absent (and not required) or empty."""
    if not column:
        return None
    if column not in row or row[column] is None:
        if required:
            raise HarnessError(f"{where}: missing field '{column}' (the {role} column); fields there: "
                               f"{', '.join(row) or 'none'}")  # fmt: skip
        return None
    if not isinstance(row[column], str):
        raise HarnessError(f"{where}: field '{column}' (the {role} column) must be a string, got "
                           f"{type(row[column]).__name__}")  # fmt: skip
    return row[column] or None


def _example(entry: Entry, row: dict[str, Any], where: str, ex_id: str) -> Example:
    cols = entry.columns
    history = row.get(cols["history"]) if cols["history"] else None
    if isinstance(history, list) and history:
        raise HarnessError(f"{where}: field '{cols['history']}' holds earlier turns; multi-turn rows are not "
                           "supported (the harness trains single-turn examples): drop them or the history column")  # fmt: skip
    if cols["system"] and row.get(cols["system"]):
        raise HarnessError(f"{where}: field '{cols['system']}' holds a system prompt, which the harness does not "
                           "train with: drop it or the system column")  # fmt: skip
    prompt = _field(row, cols["prompt"], "prompt", where, required=True)
    query = _field(row, cols["query"], "query", where, required=False)
    instruction = "\n".join(part for part in (prompt, query) if part)
    if not instruction.strip():
        raise HarnessError(f"{where}: empty instruction (fields {cols['prompt']!r} and {cols['query']!r})")
    output = _field(row, cols["response"], "response", where, required=True)
    if output is None or not output.strip():
        raise HarnessError(f"{where}: field '{cols['response']}' (the response column) is empty")
    lang = entry.lang
    if cols["lang"]:
        code = _field(row, cols["lang"], "lang", where, required=True) or ""
        lang = code.strip().lower()
        lang = lang if lang in LANGUAGES else AYA_LANGUAGE_CODES.get(lang, lang)
        check_languages([lang], LANGUAGES, where=where)
    english = _field(row, cols["aux"] or ENGLISH_FIELD, "aux (English instruction)", where,
                     required=bool(cols["aux"]) and lang != "en")  # fmt: skip
    if english is not None and not english.strip():
        english = None
    if english is None and lang == "en":
        english = instruction
    return Example(ex_id, str(lang), instruction, output, english)

"""The converters: the bytes of source files -> the text of one data file, exactly as in `../shared/data`.

Each takes `(label, bytes)` pairs (the label names the file in errors) in the order `plan.Output.inputs`
lists them. Every JSONL row is `json.dumps(row, ensure_ascii=False)` (default separators `", "` and
`": "`, keys in the order written here) plus "\\n"; `exemplars.json` is `json.dumps(..., indent=1,
ensure_ascii=False)` with no final newline. Lines are split on "\\n" only (never `str.splitlines`, which
also splits on characters such as U+2028 inside the text) and a "\\r" before it is dropped.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from harness.plumbing.errors import HarnessError

Input = tuple[str, bytes]


def _text(item: Input) -> str:
    label, data = item
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HarnessError(
            f"{label}:{line}: not valid UTF-8 (byte {e.start}); expected the source file as published"
        ) from None


def _lines(item: Input) -> list[str]:
    """The lines of a text file, without their "\\n" / "\\r\\n"; a final newline makes no empty last line."""
    text = _text(item)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _json_lines(item: Input) -> list[Any]:
    found = []
    for lineno, line in enumerate(_lines(item), 1):
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise HarnessError(f"{item[0]}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    return found


def _instructions(item: Input) -> list[str]:
    rows = _json_lines(item)
    for lineno, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
            raise HarnessError(f'{item[0]}:{lineno}: expected an object with a string "instruction"')
    return [row["instruction"] for row in rows]


def _same_length(items: list[Input], counts: list[int]) -> None:
    if len(set(counts)) > 1:
        found = ", ".join(f"{label}: {n}" for (label, _), n in zip(items, counts, strict=True))
        raise HarnessError(f"source files differ in length ({found}); they must hold the same items in order")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def cc_tuning(inputs: list[Input]) -> str:
    """CC-Tuning's evaluation samples: a prompts file (`{"instruction": ...}` per line), the English prompts
    of the same items, and an answers file (one JSON value per line: a string, or a list for MKQA). Row i
    of each is item i: `{"id": i, "prompt", "prompt_en", "answer"}`."""
    prompts, english, answers = inputs
    p, e, a = _instructions(prompts), _instructions(english), _json_lines(answers)
    _same_length(inputs, [len(p), len(e), len(a)])
    return _jsonl([{"id": i, "prompt": p[i], "prompt_en": e[i], "answer": a[i]} for i in range(len(p))])


def _tsv(item: Input, fields: int, header: tuple[str, ...] | None = None) -> list[list[str]]:
    lines = _lines(item)
    if header is not None:
        if not lines or tuple(lines[0].split("\t")) != header:
            raise HarnessError(f"{item[0]}:1: expected the header {' / '.join(header)}")
        lines = lines[1:]
    rows = []
    for lineno, line in enumerate(lines, 2 if header else 1):
        cells = line.split("\t")
        if len(cells) != fields:
            raise HarnessError(
                f"{item[0]}:{lineno}: expected {fields} tab-separated fields, got {len(cells)}"
            )
        rows.append(cells)
    return rows


def mgsm(inputs: list[Input]) -> str:
    """MGSM: `mgsm_<lang>.tsv` (question TAB answer, no header) and `mgsm_en.tsv`: row i is item i, its
    prompt the bare question, `prompt_en` the English question."""
    native, english = _tsv(inputs[0], 2), _tsv(inputs[1], 2)
    _same_length(inputs, [len(native), len(english)])
    return _jsonl([{"id": i, "prompt": q, "prompt_en": e[0], "answer": a}
                   for i, ((q, a), e) in enumerate(zip(native, english, strict=True))])  # fmt: skip


def mgsm_exemplars(inputs: list[Input]) -> str:
    """`MGSM_EXEMPLARS` of `mgsm/exemplars.py` (`{lang: {"1": {"q", "a"}, ...}}`), read as a literal from
    the file's syntax tree (never executed), as JSON in its own order."""
    (label, _), text = inputs[0], _text(inputs[0])
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise HarnessError(f"{label}:{e.lineno}: not valid Python ({e.msg})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["MGSM_EXEMPLARS"]:
            try:
                exemplars = ast.literal_eval(node.value)
            except ValueError:
                raise HarnessError(f"{label}:{node.lineno}: MGSM_EXEMPLARS is not a plain literal") from None
            break
    else:
        raise HarnessError(f"{label}: no MGSM_EXEMPLARS assignment")
    ok = isinstance(exemplars, dict) and all(
        isinstance(shots, dict) and all(isinstance(s, dict) and set(s) == {"q", "a"} for s in shots.values())
        for shots in exemplars.values()
    )
    if not ok:
        raise HarnessError(f"{label}:{node.lineno}: MGSM_EXEMPLARS must map language -> number -> {{q, a}}")
    return json.dumps(exemplars, ensure_ascii=False, indent=1)


SIB_HEADER = ("index_id", "category", "text")


def _sib_rows(items: list[Input]) -> dict[int, tuple[str, str, str]]:
    """index_id -> (split, topic, text) over the train, dev and test files of one language."""
    rows: dict[int, tuple[str, str, str]] = {}
    for split, item in zip(("train", "dev", "test"), items, strict=True):
        for lineno, (index, topic, text) in enumerate(_tsv(item, 3, SIB_HEADER), 2):
            if not index.isdigit() or int(index) in rows:
                raise HarnessError(f"{item[0]}:{lineno}: index_id {index!r} is not a new whole number")
            rows[int(index)] = (split, topic, text)
    return rows


def flores_sib(inputs: list[Input]) -> str:
    """SIB-200: a language's train/dev/test TSVs (index_id, category, text) and English's. One row per
    sentence in index_id order: `{"id": index_id, "split", "topic", "text", "text_en"}`."""
    native, english = _sib_rows(inputs[:3]), _sib_rows(inputs[3:])
    if native.keys() != english.keys():
        odd = sorted(native.keys() ^ english.keys())[:5]
        raise HarnessError(f"{inputs[0][0]}: index_ids differ from English's ({inputs[3][0]}), e.g. {odd}")
    return _jsonl([{"id": i, "split": native[i][0], "topic": native[i][1], "text": native[i][2],
                    "text_en": english[i][2]} for i in sorted(native)])  # fmt: skip


def ntrex(inputs: list[Input]) -> str:
    """NTREX-128: one sentence per line (CRLF), a language's reference and the English one; line i is
    `{"id": i, "text", "text_en"}`."""
    native, english = _lines(inputs[0]), _lines(inputs[1])
    _same_length(inputs, [len(native), len(english)])
    return _jsonl(
        [{"id": i, "text": t, "text_en": e} for i, (t, e) in enumerate(zip(native, english, strict=True))]
    )

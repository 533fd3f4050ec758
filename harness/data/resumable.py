"""`ResumableJsonl`: an append-only JSONL file of keyed rows that survives being killed mid-write. It is
read once, appended one flushed (fsynced) batch at a time, and a last line torn by a kill is dropped and
cut from the file before the next append. `harness translate` keeps its translations in one
(`harness.data.translate`), and SDRRL its generated answers (`harness.methods.sdrrl`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.plumbing.errors import HarnessError

log = logging.getLogger(__name__)


class ResumableJsonl:
    """An append-only JSONL file of rows with a `key` field, read once and appended one flushed batch at
    a time, so that a killed job keeps every finished batch. A last line cut short by a kill (no final
    newline, not valid JSON) is ignored, and cut from the file before the next append; any other
    malformed line is an error naming file:line. When a key appears twice the first row counts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        self._cut_at: int | None = None  # where a torn last line starts, cut before the next append
        self._newline_first = False
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")  # the last element is b"" when the file ends with a newline
        offset = 0
        for lineno, line in enumerate(lines, 1):
            torn = lineno == len(lines) and line != b""  # no newline after it: a write may have been cut
            if line.strip():
                try:
                    row = json.loads(line.decode("utf-8"))
                    if not isinstance(row, dict) or "key" not in row:
                        raise ValueError("expected a JSON object with a 'key' field")
                except (ValueError, UnicodeDecodeError) as e:
                    if not torn:
                        raise HarnessError(f"{self.path}:{lineno}: malformed cache row ({e})") from None
                    log.warning("%s:%d: ignoring a truncated last line", self.path, lineno)
                    self._cut_at = offset
                    break
                self.rows.setdefault(str(row["key"]), row)
            if torn and self._cut_at is None:
                self._newline_first = True  # whole but unterminated: end it before appending
            offset += len(line) + 1

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write `rows` at the end of the file and flush them to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._cut_at is not None:
            os.truncate(self.path, self._cut_at)
            self._cut_at = None
        with open(self.path, "a", encoding="utf-8") as f:
            if self._newline_first:
                f.write("\n")
                self._newline_first = False
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for row in rows:
            self.rows.setdefault(str(row["key"]), row)

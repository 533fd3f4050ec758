"""The one exception type users see: a single line naming the problem, where it is, and what is valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line, exit code 2."""


def near(name: str, valid: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix when `name` is close to one of `valid`, else ''."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown(kind: str, name: str, valid: Iterable[str], where: str = "") -> HarnessError:
    """The standard 'unknown X' error: suggests the near match and lists every valid name."""
    valid = sorted(valid)
    loc = f" in {where}" if where else ""
    return HarnessError(f"unknown {kind} '{name}'{loc}{near(name, valid)}; valid: {', '.join(valid)}")

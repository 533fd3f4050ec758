"""Option values given as text (command line) or YAML scalars, read as the type of their default."""

from __future__ import annotations

from typing import Any


def typed_like(value: Any, default: Any) -> Any:
    """`value` as the type of `default` (bool, str, int or float), for options given on the command line
    or in YAML files. Numbers may come as text: YAML 1.1 (PyYAML) reads `3e-4` as a string, since its
    floats need a dot (`3.0e-4`). Raises ValueError naming the expected kind."""
    kind = type(default)
    if kind is bool or kind is str:
        if isinstance(value, kind):
            return value
    elif kind in (int, float) and not isinstance(value, bool):
        try:
            number = float(value)
            if kind is float:
                return number
            if number == int(number):
                return int(number)
        except (TypeError, ValueError, OverflowError):
            pass
    else:
        return value
    raise ValueError({bool: "true or false", str: "text", int: "a whole number", float: "a number"}[kind])

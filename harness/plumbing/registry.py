"""Typed registries with helpful errors, in the manner of lm-eval's `@register_model`.

A registry may name an entry-point group (`plugins`): on the first lookup, every module an installed
distribution lists in that group is imported, which registers what it defines. This is how the built-in
methods reach `harness.core.method.METHODS` without the core importing them, and how a package of one's own
adds methods without editing this one (`[project.entry-points."cc_harness.methods"]`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.plumbing.errors import HarnessError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: str | None = None) -> None:
        self.kind = kind
        self.plugins = plugins
        self._items: dict[str, T] = {}
        self._loaded = plugins is None

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: a plugin module may look names up while it registers
        for point in entry_points(group=self.plugins):
            point.load()

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise HarnessError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, where: str = "") -> T:
        self._load_plugins()
        if not self._items and self.plugins:
            raise HarnessError(
                f"no {self.kind} is registered: none of the installed packages declares the entry point group "
                f"'{self.plugins}'; install this project (pip install -e .) to register its own"
            )
        if name not in self._items:
            raise unknown(self.kind, name, self._items, where)
        return self._items[name]

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

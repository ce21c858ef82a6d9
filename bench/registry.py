"""One registry idiom for every pluggable kind (losses, datasets, backbones), timm-style.

A :class:`Registry` maps a name to an entry. An entry may be given as the object itself or
as a lazy ``"module:attribute"`` string, imported on first :meth:`Registry.get`, so that
registering the built-ins imports neither torch nor PIL. The state is private: callers go
through :meth:`register` (also a decorator), :meth:`get` (an unknown name raises
:class:`KeyError` with the allowed names, the message every command shows), :meth:`names`
and ``in``. Registering a name twice warns and replaces, as timm does, unless
``replace=True`` says it is meant.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownName", "resolve_target"]


class UnknownName(KeyError, ValueError):
    """An unknown registry name; ``str()`` is the one-line message (names the allowed ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def resolve_target(target: Any) -> Any:
    """``"package.module:attr"`` -> the attribute (imported now); anything else as is."""
    if isinstance(target, str) and ":" in target:
        module, attr = target.split(":", 1)
        return getattr(importlib.import_module(module), attr)
    return target


class Registry(Generic[T]):
    """Named entries of one kind. ``kind`` names it in messages (``"loss"``, ``"dataset"``);
    ``field`` is the config field a user sets (``"loss.name"``), named in the error."""

    def __init__(self, kind: str, field: str | None = None):
        self.kind, self.field = kind, field or kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None, *, replace: bool = False) -> Any:
        """Add ``entry`` under ``name``; without ``entry``, a decorator that registers what
        it decorates (and returns it unchanged)."""
        if entry is None:
            def deco(obj: Any) -> Any:
                self.register(name, obj, replace=replace)
                return obj
            return deco
        if name in self._entries and not replace:
            warnings.warn(f"{self.kind} {name!r} was registered already; the new entry replaces it",
                          stacklevel=2)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that register temporarily)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry for ``name``, a lazy target imported on first use."""
        entry = self.raw(name)
        if isinstance(entry, str):
            entry = self._entries[name] = resolve_target(entry)
        return entry

    def raw(self, name: str) -> Any:
        """The entry as registered, without importing a lazy target."""
        if name not in self._entries:
            raise UnknownName(f"unknown {self.field} {name!r}; allowed: {', '.join(self.names())}")
        return self._entries[name]

    def names(self, where: Callable[[Any], bool] | None = None) -> list[str]:
        """Registered names, sorted; ``where`` filters on the raw entry."""
        return sorted(n for n, e in self._entries.items() if where is None or where(e))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

"""Registries: the one list of choices for each extension point (likelihoods, model kinds,
dataset kinds, architectures, objectives, ...).

A ``Registry`` maps a name to an entry (a class, a factory or a record) with a one-line summary.
The CLI's choices and ``--help`` texts, config validation and the contract tests all read the
registries; nothing else keeps a list of names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "accepted_options"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order. ``what`` names the kind in errors."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str, entry: T, summary: str = "") -> T:
        """Add ``entry`` under ``name`` (a name can be registered once)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        self._summaries[name] = summary or (inspect.getdoc(entry) or "").split("\n")[0]
        return entry

    def __call__(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Decorator form of ``register``."""
        return lambda entry: self.register(name, entry, summary)

    def get(self, name: str) -> T:
        """The entry of ``name``, or a ``ValueError`` that lists the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.what} {name!r}; choose from {', '.join(self._entries)}"
            ) from None

    __getitem__ = get

    def choices(self) -> list[str]:
        return list(self._entries)

    def summary(self, name: str) -> str:
        return self._summaries[name]

    def help(self) -> str:
        """``name: summary`` lines for ``--help`` texts."""
        return "; ".join(f"{n}: {s}" if s else n for n, s in self._summaries.items())

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def accepted_options(fn: Any, options: dict) -> dict:
    """The subset of ``options`` that ``fn`` (a class: its ``__init__``) takes as parameters."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    return {k: v for k, v in options.items() if k in params}

"""A tiny name -> object registry for backbones, temporal encoders and fusion heads.

Modelled on fvcore's Registry: decorator registration, a duplicate name is an error,
and looking up an unknown name raises an error that lists the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pipeline.errors import JmtError

T = TypeVar("T")


class RegistryError(JmtError, KeyError):
    """Raised for a duplicate registration or an unknown name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factory functions).

    >>> HEADS = Registry("fusion head")
    >>> @HEADS.register("jmt")
    ... class JMT: ...
    >>> HEADS.get("jmt") is JMT
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering an object under `name` (default: its `__name__`)."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Registers `obj` under `name`; a name can be taken only once."""
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by {self._items[name]!r})"
            )
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Returns the object registered under `name`, or raises listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

"""PrefixCache: each replica's cache of instructions' keys and values, least recently used first out, bounded in
bytes.

A cache, never state: a miss recomputes the prefix (one language-model pass over the prompt), so a restarted or
new replica answers any robot's step at once. Robots usually share a handful of instructions, so the hit rate is
high and the bound keeps a replica's memory fixed however many instructions it has seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    """A cached value: anything that says its size."""

    @property
    def nbytes(self) -> int: ...


V = TypeVar("V", bound=Sized)


class PrefixCache(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[str], V]) -> tuple[V, bool]:
        """The value for ``key`` and whether it was cached; computed (outside the lock) on a miss. A value larger
        than the whole bound is returned and not kept."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return value, True
            self.misses += 1
        value = compute(key)
        with self._lock:
            if key not in self._entries and value.nbytes <= self.max_bytes:
                self._entries[key] = value
                self._bytes += value.nbytes
                while self._bytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= old.nbytes
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

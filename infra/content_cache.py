"""A bounded, process-wide LRU of values computed from array contents.

Training recomputes the same things from the same arrays many times over: another seed,
another model with the same module settings or a permuted-label control fits the same
k-means modules, asks for the same per-slide statistics and builds the same tile graphs.
Keying by a digest of the arrays' bytes (with their shapes and dtypes) and the settings
makes a repeat a hash instead of the work, and anything that changes an input makes a new
entry: nothing can be served stale. Values are shared: callers must not modify them
(arrays are stored read-only where the caller marks them so).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

__all__ = ["ContentCache"]

V = TypeVar("V")


class ContentCache(Generic[V]):
    """At most ``maxsize`` values by content key (least recently used goes first)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[bytes, V] = OrderedDict()

    @staticmethod
    def key(*parts: object) -> bytes:
        """A digest of ``parts``: arrays by shape, dtype and bytes, anything else by repr."""
        digest = hashlib.blake2b(digest_size=20)
        for part in parts:
            if isinstance(part, np.ndarray):
                array = np.ascontiguousarray(part)
                digest.update(repr((array.shape, str(array.dtype))).encode())
                digest.update(array.tobytes())
            else:
                digest.update(repr(part).encode())
            digest.update(b"\x1f")  # parts never run into each other
        return digest.digest()

    def get(self, key: bytes, compute: Callable[[], V]) -> V:
        """The value under ``key``, computed (and kept) on a miss."""
        value = self._items.get(key)
        if value is None:
            value = compute()
            self._items[key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

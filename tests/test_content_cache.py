"""infra.content_cache: one bounded LRU keyed by array content, shared by the spatial
models' k-means fits, module statistics and tile graphs."""

from __future__ import annotations

import numpy as np
import pytest

from infra.content_cache import ContentCache


def test_equal_content_hits_and_any_change_misses() -> None:
    cache: ContentCache[int] = ContentCache(8)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert cache.get(ContentCache.key(a, 3), compute) == 1
    assert cache.get(ContentCache.key(a.copy(), 3), compute) == 1  # same bytes: a hit
    # another shape, dtype, value or setting over the same bytes: a new entry each
    for key in (
        ContentCache.key(a.reshape(3, 2), 3),
        ContentCache.key(a.astype(np.int32), 3),
        ContentCache.key(a + 1, 3),
        ContentCache.key(a, 4),
        ContentCache.key(a[:1], a[1:], 3),  # the parts never run into each other
    ):
        cache.get(key, compute)
    assert len(calls) == 6 and len(cache) == 6


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: ContentCache[str] = ContentCache(2)
    cache.get(b"a", lambda: "a")
    cache.get(b"b", lambda: "b")
    cache.get(b"a", lambda: "recomputed")  # a is now the most recent
    cache.get(b"c", lambda: "c")  # b goes
    assert cache.get(b"a", lambda: "recomputed") == "a"
    assert cache.get(b"b", lambda: "new b") == "new b"
    with pytest.raises(ValueError, match="maxsize"):
        ContentCache(0)

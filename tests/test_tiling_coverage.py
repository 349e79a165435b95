"""Tile coverage: the exact covered fraction of each box, from running sums taken only at
the rows the boxes' edges need."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.tiling._coverage import _running_rows, box_fractions


def _overlaps(starts: np.ndarray, size: float, n: int) -> np.ndarray:
    """(len(starts), n): length of [s, s + size) inside each unit pixel [p, p + 1)."""
    pixels = np.arange(n)
    lo = np.maximum(starts[:, None], pixels[None, :])
    hi = np.minimum(starts[:, None] + size, pixels[None, :] + 1)
    return np.clip(hi - lo, 0, None)


@pytest.mark.parametrize("seed", range(6))
def test_box_fractions_are_the_exact_covered_area(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    mask = rng.random((h, w)) > rng.random()
    width, height = rng.random() * w / 2 + 0.3, rng.random() * h / 2 + 0.3
    x0 = np.sort(rng.random(7) * (w + 4) - 2)
    y0 = np.sort(rng.random(5) * (h + 4) - 2)
    exact = _overlaps(y0, height, h) @ mask.astype(float) @ _overlaps(x0, width, w).T
    np.testing.assert_allclose(
        box_fractions(mask, x0, y0, width, height), exact / (width * height), atol=1e-9
    )


def test_running_rows_are_those_of_the_whole_cumulative_sum() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((257, 33)) > 0.4
    whole = np.zeros((258, 33), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=whole[1:])
    for rows in ([0], [257], [0, 1, 2], [5, 6, 100, 257], [0, 3, 4, 200], list(range(258))):
        picked = np.asarray(rows)
        out = _running_rows(mask, picked)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, whole[picked])
    labels = mask.astype(np.uint8) * 3  # not only bool masks
    np.testing.assert_array_equal(
        _running_rows(labels, np.asarray([0, 9, 257])), 3 * whole[[0, 9, 257]]
    )

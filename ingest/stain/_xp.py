"""Which array module (NumPy or CuPy) an array belongs to, without importing CuPy eagerly."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from infra.arrays import Device, get_xp


def array_module(array: Any) -> ModuleType:
    """``cupy`` for CuPy arrays, ``numpy`` for anything else (arrays, lists, scalars)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def resolve_xp(device: Device | None, array: Any) -> ModuleType:
    """The module to compute in: the array's own when ``device`` is None, else the device's."""
    return array_module(array) if device is None else get_xp(device)


def mix(rows: Any, matrix: Any) -> Any:
    """``rows @ matrix`` for tall ``(N, 3)`` rows and a tiny ``(3, k)`` matrix.

    Through einsum, not BLAS: OpenBLAS threads such skinny products badly (measured
    1.6 ms single-threaded vs 270 ms with its default threads on a busy 2-core host).
    """
    xp = array_module(rows)
    return xp.einsum("nk,kj->nj", rows, matrix)


def count_per_tile(mask: Any) -> Any:
    """(B,) int64 count of True per tile of a boolean ``(B, ...)`` array.

    NumPy's ``count_nonzero`` with an axis sums as integers (~10× slower than its flat
    popcount path), so on CPU each tile is counted flat; on GPU one reduction serves all.
    """
    xp = array_module(mask)
    if xp is np:
        return np.fromiter((np.count_nonzero(m) for m in mask), dtype=np.int64,
                           count=mask.shape[0])
    return xp.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1).astype(np.int64)

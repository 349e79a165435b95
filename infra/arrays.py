"""Choose the array module (CuPy or NumPy) at run time.

CuPy imports on machines without a GPU and only fails when it allocates, so the
choice is made by asking the CUDA runtime for a device, once, lazily.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = ["Device", "array_module", "asnumpy", "get_xp", "gpu_available", "ndimage_module",
           "resolve_xp", "skimage_module"]

Device = Literal["auto", "cpu", "cuda"]


@functools.cache
def gpu_available() -> bool:
    """True when CuPy can see and allocate on at least one CUDA device."""
    if os.environ.get("SLIDEBANK_DISABLE_GPU") == "1":
        return False
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        cupy.zeros(1)  # the failure mode without a driver is at allocation
        return True
    except Exception:  # any CUDA/driver import or runtime failure means "no GPU"
        return False


def _resolve(device: Device) -> Literal["cpu", "cuda"]:
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cuda" and not gpu_available():
        from infra.errors import ConfigError

        raise ConfigError("device='cuda' requested but no usable CUDA GPU was found")
    return device


def get_xp(device: Device = "auto") -> ModuleType:
    """``cupy`` on a GPU, ``numpy`` otherwise."""
    if _resolve(device) == "cuda":
        import cupy

        return cupy
    return np


def skimage_module(xp: ModuleType) -> ModuleType:
    """``cucim.skimage`` for CuPy arrays, ``skimage`` for NumPy arrays."""
    if xp is np:
        import skimage

        return skimage
    import cucim.skimage

    return cucim.skimage


def ndimage_module(xp: ModuleType) -> ModuleType:
    """``cupyx.scipy.ndimage`` for CuPy, ``scipy.ndimage`` for NumPy."""
    if xp is np:
        import scipy.ndimage

        return scipy.ndimage
    import cupyx.scipy.ndimage

    return cupyx.scipy.ndimage


def asnumpy(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


def array_module(array: Any) -> ModuleType:
    """The module an array belongs to: ``cupy`` for CuPy arrays, ``numpy`` for anything
    else (arrays, lists, scalars), without importing CuPy for NumPy input."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def resolve_xp(device: Device | None, array: Any) -> ModuleType:
    """The module to compute in: the array's own when ``device`` is None, else the device's."""
    return array_module(array) if device is None else get_xp(device)

"""Choose the array module (CuPy or NumPy) at run time.

CuPy imports on machines without a GPU and only fails when it allocates, so the
choice is made by asking the CUDA runtime for a device, once, lazily. On Linux without
the NVIDIA driver's device nodes the answer is known without importing CuPy at all
(:func:`cuda_driver_absent`): that import costs 1–4 s on a 2-core machine, more than a
whole small job.

:func:`device_module` replaces CuPy as "the device" for a ``with`` block: tests and
``benchmarks/gpu.py --dry-run`` install :mod:`infra.strict_device` there, so the device
paths run on a CPU machine with every host transfer checked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = [
    "Device",
    "array_module",
    "asnumpy",
    "cuda_driver_absent",
    "cuda_present",
    "device_module",
    "get_xp",
    "gpu_available",
    "hide_cupy_without_driver",
    "ndimage_module",
    "resolve_xp",
    "skimage_module",
    "to_device",
    "torch_device",
]

Device = Literal["auto", "cpu", "cuda"]

#: the device module stack (see device_module); empty: CuPy when a GPU is present
_DEVICE_MODULES: list[Any] = []


@contextlib.contextmanager
def device_module(module: Any) -> Iterator[Any]:
    """Use ``module`` (an array namespace) as the CUDA device's array module in this
    process for the ``with`` block: ``get_xp("cuda")`` returns it and ``gpu_available()``
    is true. Process-wide on purpose: the device engine reads in a thread."""
    _DEVICE_MODULES.append(module)
    try:
        yield module
    finally:
        _DEVICE_MODULES.remove(module)


def _standin() -> Any | None:
    return _DEVICE_MODULES[-1] if _DEVICE_MODULES else None


def gpu_available() -> bool:
    """True when CuPy can see and allocate on at least one CUDA device (or a stand-in is
    installed, see :func:`device_module`)."""
    return _standin() is not None or _cuda_present()


def cuda_present() -> bool:
    """True when a real CUDA device answers through CuPy (never a stand-in): the
    question before touching a CUDA-only resource such as CuPy's memory pool."""
    return _cuda_present()


#: what the NVIDIA kernel driver (or WSL's GPU bridge) creates; without one, CUDA cannot run
_DRIVER_NODES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")


@functools.cache
def cuda_driver_absent() -> bool:
    """True when this machine certainly has no CUDA driver: Linux without the driver's
    device nodes, or ``SLIDEBANK_DISABLE_GPU=1``. False means "ask CUDA" (CuPy)."""
    if os.environ.get("SLIDEBANK_DISABLE_GPU") == "1":
        return True
    if sys.platform != "linux":
        return sys.platform == "darwin"  # no CUDA on macOS; Windows: ask CUDA
    return not any(os.path.exists(node) for node in _DRIVER_NODES)


_CUPY_MODULES = ("cupy", "cupyx", "cupy_backends")


def hide_cupy_without_driver() -> bool:
    """Make ``import cupy`` fail fast in this process when no CUDA driver exists.

    zarr and cuCIM import CuPy whenever it is installed, to offer GPU buffers and
    functions; without a driver that buys nothing and costs 1–4 s of start-up on a 2-core
    machine. The command line calls this once at start; a library user's process is left
    alone. Returns True when CuPy was hidden. Both packages treat the ImportError as
    "no CuPy".
    """
    if any(name in sys.modules for name in _CUPY_MODULES) or not cuda_driver_absent():
        return False
    for name in _CUPY_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # None: "import halted"
    return True


@functools.cache
def _cuda_present() -> bool:
    if cuda_driver_absent():
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
        standin = _standin()
        if standin is not None:
            return standin
        import cupy

        return cupy
    return np


def skimage_module(xp: ModuleType) -> ModuleType:
    """``cucim.skimage`` for CuPy arrays, ``skimage`` for NumPy arrays."""
    if xp is np:
        import skimage

        return skimage
    if hasattr(xp, "skimage_module"):
        return xp.skimage_module()
    import cucim.skimage

    return cucim.skimage


def ndimage_module(xp: ModuleType) -> ModuleType:
    """``cupyx.scipy.ndimage`` for CuPy, ``scipy.ndimage`` for NumPy."""
    if xp is np:
        import scipy.ndimage

        return scipy.ndimage
    if hasattr(xp, "ndimage_module"):
        return xp.ndimage_module()
    import cupyx.scipy.ndimage

    return cupyx.scipy.ndimage


def asnumpy(array: Any, *, what: str | None = None) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array. ``what`` names what a device → host copy
    moves, for the stand-in's ledger (CuPy ignores it)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if not callable(get):
        return np.asarray(array)
    if what is not None and type(array).__module__ == "infra.strict_device":
        return get(what=what)
    return get()


def to_device(xp: Any, array: Any, *, what: str | None = None) -> Any:
    """``xp.asarray(array)``: a host → device copy when ``xp`` is a device module. ``what``
    names what it moves, for the stand-in's ledger (CuPy takes no such argument)."""
    if what is not None and getattr(xp, "is_standin", False):
        return xp.asarray(array, what=what)
    return xp.asarray(array)


def array_module(array: Any) -> ModuleType:
    """The module an array belongs to: ``cupy`` for CuPy arrays, the stand-in's for its
    arrays, ``numpy`` for anything else (arrays, lists, scalars), without importing CuPy
    for NumPy input."""
    owner = type(array).__module__
    if owner.split(".")[0] == "cupy":
        import cupy

        return cupy
    if owner == "infra.strict_device":
        return array._module
    return np


def torch_device(xp: Any) -> Literal["cpu", "cuda"]:
    """Where torch computes next to arrays of ``xp``: CUDA for CuPy; the CPU for NumPy and
    for a stand-in, whose arrays torch reads through DLPack as CPU tensors."""
    if xp is np:
        return "cpu"
    return getattr(xp, "torch_device", "cuda")


def resolve_xp(device: Device | None, array: Any) -> ModuleType:
    """The module to compute in: the array's own when ``device`` is None, else the device's."""
    return array_module(array) if device is None else get_xp(device)

"""A strict device stand-in: an array module backed by NumPy that behaves like CuPy at
the host boundary, so a CPU machine can prove that a device path stays on the device.

Its arrays (:class:`StrictArray`) refuse every implicit host conversion CuPy refuses
(``np.asarray``, ``__array__``, a NumPy array mixed into a device operation, a host array
assigned into one) and, stricter than CuPy, every implicit synchronising read of a
value: ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()``. Each raises
:class:`ImplicitTransferError`. Explicit transfers, ``asarray``/``array`` from host data
(host → device) and ``asnumpy``/``.get()`` (device → host), are recorded in a
:class:`TransferLedger` with their size and what they moved (``pixels`` for uint8 images,
``other`` otherwise, or the tag the caller gave).

Pixels a GPU decoder produces are made with :func:`decoded`: they come into being on the
device (nvJPEG decodes compressed bytes there), so they are not a transfer. DLPack
(``__dlpack__``, :meth:`StrictModule.from_dlpack`) is zero-copy, as between CuPy and
torch on one GPU; here torch's CPU tensors play the device's part.

Use it through :func:`installed`, which makes ``infra.arrays.get_xp("cuda")`` return
this module (see :func:`infra.arrays.device_module`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from infra.errors import SlidebankError

__all__ = [
    "ImplicitTransferError",
    "StrictArray",
    "StrictModule",
    "Transfer",
    "TransferLedger",
    "decode_into",
    "decoded",
    "installed",
    "module",
]


class ImplicitTransferError(SlidebankError, TypeError):
    """A device array was converted to host data, or mixed with it, without an explicit
    transfer (CuPy raises TypeError for these too)."""


@dataclass(frozen=True)
class Transfer:
    """One explicit copy across the host/device boundary."""

    direction: str  # "h2d" or "d2h"
    what: str  # "pixels", "other", or the caller's tag
    nbytes: int
    shape: tuple[int, ...]
    dtype: str


class TransferLedger:
    """Every explicit transfer, in order (thread-safe: reads run in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Transfer] = []

    def record(self, direction: str, array: np.ndarray, what: str | None) -> None:
        tag = what or _classify(array)
        with self._lock:
            self.records.append(
                Transfer(direction, tag, int(array.nbytes), tuple(array.shape), str(array.dtype))
            )

    def select(self, direction: str | None = None, what: str | None = None) -> list[Transfer]:
        with self._lock:
            return [
                t
                for t in self.records
                if (direction is None or t.direction == direction)
                and (what is None or t.what == what)
            ]

    def count(self, direction: str | None = None, what: str | None = None) -> int:
        return len(self.select(direction, what))

    def nbytes(self, direction: str | None = None, what: str | None = None) -> int:
        return sum(t.nbytes for t in self.select(direction, what))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def summary(self) -> dict[str, dict[str, int]]:
        """``{"h2d:pixels": {"count": n, "bytes": b}, ...}`` for reports."""
        out: dict[str, dict[str, int]] = {}
        for t in self.select():
            entry = out.setdefault(f"{t.direction}:{t.what}", {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += t.nbytes
        return out


def _classify(array: np.ndarray) -> str:
    if array.dtype == np.uint8 and array.ndim >= 3 and array.shape[-1] in (3, 4):
        return "pixels"
    return "other"


def _refuse(what: str) -> ImplicitTransferError:
    return ImplicitTransferError(
        f"implicit device→host conversion ({what}) of a device array; "
        "copy it explicitly with asnumpy()"
    )


class StrictArray(NDArrayOperatorsMixin):
    """A NumPy array that lives "on the device" (see module docstring)."""

    __slots__ = ("_data", "_module")
    __array_priority__ = 1000.0

    def __init__(self, data: np.ndarray, module: StrictModule) -> None:
        self._data = data
        self._module = module

    # ---- what CuPy refuses or syncs on -------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise _refuse("__array__ / np.asarray")

    def __float__(self) -> float:
        raise _refuse("float()")

    def __int__(self) -> int:
        raise _refuse("int()")

    def __index__(self) -> int:
        raise _refuse("operator.index()")

    def __complex__(self) -> complex:
        raise _refuse("complex()")

    def __bool__(self) -> bool:
        raise _refuse("bool()")

    def item(self, *args: Any) -> Any:
        raise _refuse(".item()")

    def tolist(self) -> Any:
        raise _refuse(".tolist()")

    def tobytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise _refuse(".tobytes()")

    def __getattr__(self, name: str) -> Any:
        # Buffer/array protocols (__array_interface__, __array_struct__, ...) are how NumPy
        # would read the data without __array__: none of them exists on a device array.
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._data, name)
        if callable(attr):
            return self._module._wrap_callable(attr, name)
        return self._module._wrap(attr)

    # ---- explicit transfers and DLPack ---------------------------------------------------
    def get(self, stream: Any = None, *, what: str | None = None) -> np.ndarray:
        """An explicit device → host copy (recorded)."""
        self._module.ledger.record("d2h", self._data, what)
        return self._data.copy()

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("stream", None)  # one "device", no streams to order
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._data.__dlpack_device__()

    # ---- array behaviour, all on the device ------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def T(self) -> StrictArray:
        return StrictArray(self._data.T, self._module)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        for row in self._data:
            yield self._module._wrap(row)

    def __repr__(self) -> str:
        return f"StrictArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> Any:
        return self._module._wrap(self._data[self._module._unwrap(key, "an index")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[self._module._unwrap(key, "an index")] = self._module._unwrap(
            value, "an assigned value"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        args = self._module._unwrap(inputs, f"an operand of {ufunc.__name__}")
        kw = self._module._unwrap(kwargs, f"an argument of {ufunc.__name__}")
        result = getattr(ufunc, method)(*args, **kw)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return self._module._wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        # np.concatenate([device arrays]) runs on the device, as with CuPy.
        return self._module._wrap_callable(func, func.__name__)(*args, **kwargs)


class StrictModule:
    """The ``xp`` namespace: NumPy's functions on :class:`StrictArray` (see module docstring)."""

    ndarray = StrictArray
    #: what torch computes on next to this module (its tensors play the device's)
    torch_device = "cpu"
    is_standin = True
    __name__ = "infra.strict_device"

    def __init__(self, ledger: TransferLedger | None = None, namespace: Any = np) -> None:
        self.ledger = ledger if ledger is not None else TransferLedger()
        self._namespace = namespace

    # ---- transfers -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None, *, what: str | None = None) -> StrictArray:
        """Device data as is (cast on the device); host data copied over (recorded)."""
        if isinstance(obj, StrictArray):
            return obj if dtype is None or obj.dtype == np.dtype(dtype) else obj.astype(dtype)
        host = np.array(obj, dtype=dtype)
        self.ledger.record("h2d", host, what)
        return StrictArray(host, self)

    def array(
        self, obj: Any, dtype: Any = None, copy: bool = True, *, what: str | None = None
    ) -> StrictArray:
        if isinstance(obj, StrictArray):
            data = obj._data.astype(dtype) if dtype is not None else obj._data
            return StrictArray(data.copy() if copy and data is obj._data else data, self)
        return self.asarray(obj, dtype, what=what)

    def asnumpy(self, array: Any, *, what: str | None = None) -> np.ndarray:
        if isinstance(array, StrictArray):
            return array.get(what=what)
        return np.asarray(array)

    def from_dlpack(self, obj: Any) -> StrictArray:
        """Zero-copy view of a DLPack producer (a torch tensor): not a transfer."""
        return StrictArray(np.from_dlpack(obj), self)

    # ---- companion libraries, wrapped the same way ----------------------------------------
    def ndimage_module(self) -> StrictModule:
        import scipy.ndimage

        return StrictModule(self.ledger, scipy.ndimage)

    def skimage_module(self) -> StrictModule:
        import skimage

        return StrictModule(self.ledger, skimage)

    # ---- everything else: NumPy's namespace ----------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._namespace, name)
        if isinstance(attr, ModuleType):
            return StrictModule(self.ledger, attr)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes, classes, constants (float32, newaxis, pi)
        return self._wrap_callable(attr, name)

    def _wrap_callable(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            where = f"an argument of {name}"
            return self._wrap(fn(*self._unwrap(args, where), **self._unwrap(kwargs, where)))

        call.__name__ = name
        return call

    def _unwrap(self, value: Any, where: str) -> Any:
        if isinstance(value, StrictArray):
            return value._data
        if isinstance(value, np.ndarray):
            if value.ndim == 0:
                return value
            raise ImplicitTransferError(
                f"a host array {value.dtype}{tuple(value.shape)} used as {where} of a device "
                "operation; copy it over explicitly with asarray()"
            )
        if isinstance(value, tuple):
            return tuple(self._unwrap(v, where) for v in value)
        if isinstance(value, list):
            return [self._unwrap(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self._unwrap(v, where) for k, v in value.items()}
        return value

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return StrictArray(value, self)
        if isinstance(value, np.generic):
            return StrictArray(np.asarray(value), self)  # CuPy reductions give 0-d arrays
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value


def decoded(module: StrictModule, pixels: np.ndarray) -> StrictArray:
    """Pixels a GPU decoder made on the device (not a transfer: see module docstring)."""
    return StrictArray(np.ascontiguousarray(pixels), module)


def decode_into(buffer: StrictArray, pixels: np.ndarray) -> None:
    """A GPU decoder writing its next batch into a buffer it reuses (see :func:`decoded`)."""
    buffer._data[: len(pixels)] = pixels


def module(ledger: TransferLedger | None = None) -> StrictModule:
    """A fresh stand-in module with its own ledger."""
    return StrictModule(ledger)


@contextlib.contextmanager
def installed(ledger: TransferLedger | None = None) -> Iterator[StrictModule]:
    """Make the stand-in this process's device module for the ``with`` block."""
    from infra.arrays import device_module

    xp = module(ledger)
    with device_module(xp):
        yield xp

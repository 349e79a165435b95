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

Streams are simulated the way CuPy exposes them (``xp.cuda.Stream``, ``ExternalStream``,
``Event``, ``get_current_stream``, ``Device().synchronize()``; the current stream is per
thread, as in CuPy). Every device array remembers the stream and the position on it
where it was last written; using it on another stream that has not waited for an event
recorded after that write raises :class:`StreamOrderError` (on a GPU: reading pixels
before the copy that makes them has run). Every synchronisation (device, stream, event,
a blocking ``get``) is recorded with its thread in the ledger (``ledger.syncs``), every
transfer with its stream, whether it was blocking and whether its host side was pinned
(``empty_pinned``), and every pinned allocation (``ledger.pinned_allocations``), so a
test can assert the overlap structure: no device-wide synchronisation, copies on a
non-default stream into reused pinned buffers, waits only where the results are needed.
``get_default_memory_pool()`` keeps the limit it is given against a stand-in device of
:data:`DEVICE_MEMORY` bytes (it records; it does not enforce).

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
    "DEVICE_MEMORY",
    "ImplicitTransferError",
    "StreamOrderError",
    "StrictArray",
    "StrictModule",
    "Sync",
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


#: the stand-in device's memory (what a pool limit given as a fraction is a fraction of)
DEVICE_MEMORY = 16 * 2**30


class StreamOrderError(SlidebankError, RuntimeError):
    """A device array was used on a stream that had not waited for the stream that wrote
    it (on a GPU, a race: the read sees memory the write has not finished)."""


@dataclass(frozen=True)
class Transfer:
    """One explicit copy across the host/device boundary."""

    direction: str  # "h2d" or "d2h"
    what: str  # "pixels", "other", or the caller's tag
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    stream: str = "null"  # the stream it was issued on ("null": the default stream)
    blocking: bool = True  # the host waited for it (a synchronisation)
    pinned: bool = False  # its host side was pinned memory (empty_pinned)
    thread: str = ""


@dataclass(frozen=True)
class Sync:
    """One point where the host waited for the device."""

    kind: str  # "device", "stream", "event" or "get" (a blocking device → host copy)
    target: str  # the stream (or the event's stream) waited for
    thread: str


class TransferLedger:
    """Every explicit transfer, synchronisation and pinned allocation, in order
    (thread-safe: reads run in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Transfer] = []
        self.syncs: list[Sync] = []
        #: bytes of each empty_pinned allocation, in order
        self.pinned_allocations: list[int] = []
        #: the stream of each pixel batch a (simulated) GPU decoder produced
        self.decode_streams: list[str] = []

    def record(
        self,
        direction: str,
        array: np.ndarray,
        what: str | None,
        *,
        stream: str = "null",
        blocking: bool = True,
        pinned: bool = False,
    ) -> None:
        tag = what or _classify(array)
        entry = Transfer(
            direction,
            tag,
            int(array.nbytes),
            tuple(array.shape),
            str(array.dtype),
            stream,
            blocking,
            pinned,
            threading.current_thread().name,
        )
        with self._lock:
            self.records.append(entry)

    def sync(self, kind: str, target: str) -> None:
        with self._lock:
            self.syncs.append(Sync(kind, target, threading.current_thread().name))

    def note_pinned(self, nbytes: int) -> None:
        with self._lock:
            self.pinned_allocations.append(nbytes)

    def note_decode(self, stream: str) -> None:
        with self._lock:
            self.decode_streams.append(stream)

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
            self.syncs.clear()
            self.pinned_allocations.clear()
            self.decode_streams.clear()

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


# ---- streams, events, pinned memory, the pool ------------------------------------------------


class StandInStream:
    """A CUDA stream: work on it is ordered; other streams see it only through events.
    ``ops`` counts the writes issued on it (an array's position on its stream)."""

    _ids = 0

    def __init__(self, state: _DeviceState, name: str | None = None, ptr: int | None = None):
        StandInStream._ids += 1
        self._state = state
        self.name = name or f"stream{StandInStream._ids}"
        self.ptr = ptr if ptr is not None else 0x1000 + StandInStream._ids
        self.ops = 0
        #: for each other stream, how far along it this stream has waited
        self.seen: dict[StandInStream, int] = {}

    def __enter__(self) -> StandInStream:
        self._state.push(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._state.pop(self)

    def use(self) -> StandInStream:
        self._state.push(self)
        return self

    def record(self, event: StandInEvent | None = None) -> StandInEvent:
        event = event or StandInEvent(self._state)
        event.record(self)
        return event

    def wait_event(self, event: StandInEvent) -> None:
        if event.stream is not None and event.stream is not self:
            self.seen[event.stream] = max(self.seen.get(event.stream, 0), event.ticket)

    def synchronize(self) -> None:
        self._state.ledger.sync("device" if self.name == "null" else "stream", self.name)

    def __repr__(self) -> str:
        return f"StandInStream({self.name})"


class StandInEvent:
    """A CUDA event: a position on a stream that other streams and the host can wait for."""

    def __init__(self, state: _DeviceState, *args: Any, **kwargs: Any) -> None:
        self._state = state
        self.stream: StandInStream | None = None
        self.ticket = 0

    def record(self, stream: StandInStream | None = None) -> None:
        self.stream = stream or self._state.current()
        self.ticket = self.stream.ops

    def synchronize(self) -> None:
        self._state.ledger.sync("event", self.stream.name if self.stream else "none")

    def query(self) -> bool:
        return True

    @property
    def done(self) -> bool:
        return True


class _DeviceState:
    """What the module and its companions (ndimage, skimage) share: the ledger, the null
    stream, each thread's current stream, the pinned ranges."""

    def __init__(self, ledger: TransferLedger) -> None:
        self.ledger = ledger
        self.null = StandInStream(self, "null")
        self._local = threading.local()
        self._pinned: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def _stack(self) -> list[StandInStream]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def current(self) -> StandInStream:
        stack = self._stack()
        return stack[-1] if stack else self.null

    def push(self, stream: StandInStream) -> None:
        self._stack().append(stream)

    def pop(self, stream: StandInStream) -> None:
        stack = self._stack()
        if stack and stack[-1] is stream:
            stack.pop()

    def write(self, array: StrictArray) -> None:
        """``array`` was (re)written now, on the current stream."""
        stream = self.current()
        stream.ops += 1
        array._stream, array._ticket = stream, stream.ops

    def check(self, array: StrictArray, stream: StandInStream | None = None) -> None:
        """Refuse to use ``array`` on ``stream`` (the current one) before its write is
        known there (see :class:`StreamOrderError`)."""
        stream = stream or self.current()
        made = array._stream
        if made is None or made is stream or stream.seen.get(made, 0) >= array._ticket:
            return
        raise StreamOrderError(
            f"a device array {array.dtype}{tuple(array.shape)} written on {made.name} is "
            f"used on {stream.name}, which has not waited for an event recorded after "
            "that write"
        )

    def add_pinned(self, array: np.ndarray) -> None:
        start = array.__array_interface__["data"][0]
        with self._lock:
            self._pinned.append((start, start + array.nbytes))

    def is_pinned(self, array: np.ndarray) -> bool:
        start = array.__array_interface__["data"][0]
        with self._lock:
            return any(lo <= start and start + array.nbytes <= hi for lo, hi in self._pinned)


class _StandInDevice:
    def __init__(self, state: _DeviceState, index: int = 0) -> None:
        self._state, self.id = state, index

    def synchronize(self) -> None:
        self._state.ledger.sync("device", "all")

    def __enter__(self) -> _StandInDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class _StandInRuntime:
    def __init__(self, state: _DeviceState) -> None:
        self._state = state

    def deviceSynchronize(self) -> None:
        self._state.ledger.sync("device", "all")

    def getDeviceCount(self) -> int:
        return 1

    def memGetInfo(self) -> tuple[int, int]:
        return DEVICE_MEMORY, DEVICE_MEMORY


class _StandInCuda:
    """``xp.cuda``: the parts of ``cupy.cuda`` the device engine uses."""

    def __init__(self, state: _DeviceState) -> None:
        self._state = state
        self.runtime = _StandInRuntime(state)

    def Stream(self, non_blocking: bool = False, null: bool = False) -> StandInStream:
        return self._state.null if null else StandInStream(self._state)

    def ExternalStream(self, ptr: int, device_id: int = -1) -> StandInStream:
        return StandInStream(self._state, f"external{ptr:#x}", ptr)

    def Event(self, *args: Any, **kwargs: Any) -> StandInEvent:
        return StandInEvent(self._state)

    def Device(self, index: int = 0) -> _StandInDevice:
        return _StandInDevice(self._state, index)

    def get_current_stream(self) -> StandInStream:
        return self._state.current()


class StandInMemoryPool:
    """``xp.get_default_memory_pool()``: keeps the limit it is set to (not enforced)."""

    def __init__(self) -> None:
        self.limit = 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(fraction * DEVICE_MEMORY)
        self.limit = int(size or 0)

    def get_limit(self) -> int:
        return self.limit

    def free_all_blocks(self) -> None:
        return None

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0


class StrictArray(NDArrayOperatorsMixin):
    """A NumPy array that lives "on the device" (see module docstring)."""

    __slots__ = ("_data", "_module", "_stream", "_ticket")
    __array_priority__ = 1000.0

    def __init__(self, data: np.ndarray, module: StrictModule) -> None:
        self._data = data
        self._module = module
        self._stream: StandInStream | None = None
        self._ticket = 0
        module._state.write(self)

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
            self._module._state.check(self)  # a method reads the array on this stream
            return self._module._wrap_callable(attr, name)
        return self._module._wrap(attr)

    # ---- explicit transfers and DLPack ---------------------------------------------------
    def get(
        self,
        stream: StandInStream | None = None,
        order: str = "C",
        out: np.ndarray | None = None,
        blocking: bool = True,
        *,
        what: str | None = None,
    ) -> np.ndarray:
        """An explicit device → host copy on ``stream`` (the current one by default),
        recorded; ``blocking`` waits for it (a synchronisation), as CuPy's does."""
        state = self._module._state
        stream = stream or state.current()
        state.check(self, stream)
        pinned = out is not None and state.is_pinned(out)
        self._module.ledger.record(
            "d2h", self._data, what, stream=stream.name, blocking=blocking, pinned=pinned
        )
        if blocking:
            self._module.ledger.sync("get", stream.name)
        if out is None:
            return self._data.copy()
        if out.shape != self._data.shape or out.dtype != self._data.dtype:
            raise ValueError(f"out is {out.dtype}{out.shape}, the array {self.dtype}{self.shape}")
        out[...] = self._data
        return out

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("stream", None)  # torch reads it on the current stream (its CPU here)
        self._module._state.check(self)
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
        self._module._state.check(self)
        for row in self._data:
            yield self._module._wrap(row)

    def __repr__(self) -> str:
        return f"StrictArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> Any:
        self._module._state.check(self)
        return self._module._wrap(self._data[self._module._unwrap(key, "an index")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._module._state.check(self)  # writing after another stream's write: ordered too
        self._data[self._module._unwrap(key, "an index")] = self._module._unwrap(
            value, "an assigned value"
        )
        self._module._state.write(self)

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

    def __init__(
        self,
        ledger: TransferLedger | None = None,
        namespace: Any = np,
        state: _DeviceState | None = None,
    ) -> None:
        self.ledger = ledger if ledger is not None else TransferLedger()
        self._namespace = namespace
        self._state = state if state is not None else _DeviceState(self.ledger)
        self.cuda = _StandInCuda(self._state)
        self._pool = StandInMemoryPool() if state is None else None

    def get_default_memory_pool(self) -> StandInMemoryPool:
        return self._pool if self._pool is not None else StandInMemoryPool()

    def empty_pinned(self, shape: Any, dtype: Any = np.float32) -> np.ndarray:
        """``cupyx.empty_pinned``: page-locked host memory (recorded, and remembered so
        copies into it count as pinned)."""
        array = np.empty(shape, dtype)
        self._state.add_pinned(array)
        self.ledger.note_pinned(int(array.nbytes))
        return array

    # ---- transfers -------------------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = None, *, what: str | None = None) -> StrictArray:
        """Device data as is (cast on the device); host data copied over (recorded)."""
        if isinstance(obj, StrictArray):
            return obj if dtype is None or obj.dtype == np.dtype(dtype) else obj.astype(dtype)
        host = np.array(obj, dtype=dtype)
        pinned = isinstance(obj, np.ndarray) and self._state.is_pinned(obj)
        stream = self._state.current()
        # CuPy's asarray copies synchronously (pinned or not) on the current stream
        self.ledger.record("h2d", host, what, stream=stream.name, pinned=pinned)
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

        return StrictModule(self.ledger, scipy.ndimage, self._state)

    def skimage_module(self) -> StrictModule:
        import skimage

        return StrictModule(self.ledger, skimage, self._state)

    # ---- everything else: NumPy's namespace ----------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._namespace, name)
        if isinstance(attr, ModuleType):
            return StrictModule(self.ledger, attr, self._state)
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
            self._state.check(value)
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
    """Pixels a GPU decoder made on the device (not a transfer: see module docstring),
    on the current stream."""
    module.ledger.note_decode(module._state.current().name)
    return StrictArray(np.ascontiguousarray(pixels), module)


def decode_into(buffer: StrictArray, pixels: np.ndarray) -> None:
    """A GPU decoder writing its next batch into a buffer it reuses (see :func:`decoded`)."""
    buffer._module.ledger.note_decode(buffer._module._state.current().name)
    buffer._data[: len(pixels)] = pixels
    buffer._module._state.write(buffer)


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

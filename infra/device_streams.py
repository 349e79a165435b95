"""CUDA streams, events and pinned host buffers for a loop that reads on one stream while
it computes on another, and copies results to the host without waiting for them.

:class:`DeviceStreams` holds two streams of one device:

* the **read** stream: decode, host → device copies and resampling of batch ``n + 1``
  (entered with :meth:`DeviceStreams.reading` in the reader thread), ended by an event
  (:meth:`DeviceStreams.mark_read`);
* the **compute** stream, shared by CuPy and PyTorch (a ``torch.cuda.Stream`` that CuPy
  enters as an ``ExternalStream``), which first waits for that event
  (:meth:`DeviceStreams.computing`), so QC, stain and the encoder of batch ``n`` never
  wait for the host and never race the read.

:meth:`DeviceStreams.to_host` issues the one device → host copy of a batch on the compute
stream, non-blocking, into a pinned buffer taken from a small ring, and records an event;
:meth:`HostCopy.result` (called where the host needs the values, the writer thread)
waits for that event only, then hands the buffer back to the ring. Nothing here calls a
device-wide or stream-wide synchronisation.

With NumPy (``device="cpu"``) every step is immediate. With the strict stand-in
(:mod:`infra.strict_device`) the same code runs against its simulated streams, which
check the ordering and record every synchronisation and pinned allocation.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from typing import Any

import numpy as np

from infra.errors import ConfigError

__all__ = [
    "DEFAULT_POOL_FRACTION",
    "DeviceStreams",
    "HostCopy",
    "limit_memory_pool",
    "pinned_empty",
]

#: the share of device memory CuPy's pool may hold by default: pixels of a few batches
#: in flight need 1-2 GB each at 256 tiles; the rest is left to PyTorch's allocator,
#: which holds the model and its activations.
DEFAULT_POOL_FRACTION = 0.25


def limit_memory_pool(xp: Any, fraction: float) -> int | None:
    """Cap ``xp``'s default memory pool at ``fraction`` of the device's memory; returns the
    limit in bytes (None for NumPy, which has no pool). CuPy's pool otherwise grows
    until PyTorch's allocator, on the same card, runs out."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"device_pool_fraction must be in (0, 1], got {fraction!r}")
    if xp is np:
        return None
    pool = xp.get_default_memory_pool()
    pool.set_limit(fraction=fraction)
    return int(pool.get_limit())


def pinned_empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Page-locked host memory for ``xp``'s device (a plain array for NumPy)."""
    if xp is np:
        return np.empty(shape, dtype)
    maker = getattr(xp, "empty_pinned", None)  # the strict stand-in
    if maker is None:
        import cupyx

        maker = cupyx.empty_pinned
    return maker(shape, dtype=dtype)


class HostCopy:
    """A device → host copy in flight: :meth:`result` waits for it (its event only)."""

    def __init__(
        self,
        host: np.ndarray,
        event: Any = None,
        ring: _PinnedRing | None = None,
        slot: int = -1,
        keep: Any = None,
    ) -> None:
        self._host, self._event, self._ring, self._slot = host, event, ring, slot
        self._keep = keep  # device arrays the copy's stream may still read

    def result(self) -> np.ndarray:
        """The values, as a NumPy array the caller owns (the pinned buffer goes back)."""
        if self._ring is None:
            return self._host
        try:
            self._event.synchronize()
            return np.array(self._host, copy=True)
        finally:
            self.release()

    def release(self) -> None:
        """Hand the pinned buffer back without reading it (a failed slide)."""
        if self._ring is not None:
            ring, self._ring, self._keep = self._ring, None, None
            ring.give_back(self._slot)


class _PinnedRing:
    """``size`` pinned buffers, grown (reallocated) only when a batch needs more bytes.
    ``take`` blocks while all are in use: what bounds the copies in flight."""

    def __init__(self, xp: Any, size: int) -> None:
        self._xp = xp
        self._buffers: list[np.ndarray | None] = [None] * size
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(size):
            self._free.put(slot)

    def take(self, shape: tuple[int, ...], dtype: Any, timeout: float | None) -> tuple[int, Any]:
        slot = self._free.get(timeout=timeout)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buffer = self._buffers[slot]
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self._buffers[slot] = pinned_empty(self._xp, (max(nbytes, 1),), np.uint8)
        return slot, buffer[:nbytes].view(dtype).reshape(shape)

    def give_back(self, slot: int) -> None:
        self._free.put(slot)


class DeviceStreams:
    """The read and compute streams of one device (see module docstring).

    ``host_buffers`` pinned buffers are reused for the device → host copies; a copy waits
    for a free one, so at most that many copies are in flight."""

    def __init__(self, xp: Any, *, torch_device: str = "cpu", host_buffers: int = 4) -> None:
        if host_buffers < 1:
            raise ConfigError(f"host_buffers must be >= 1, got {host_buffers}")
        self.xp = xp
        self.enabled = xp is not np
        self._torch_stream: Any = None
        if not self.enabled:
            return
        self.read = xp.cuda.Stream(non_blocking=True)
        if torch_device == "cuda":  # one stream for torch's kernels and CuPy's
            import torch

            self._torch_stream = torch.cuda.Stream()
            self.compute = xp.cuda.ExternalStream(self._torch_stream.cuda_stream)
        else:
            self.compute = xp.cuda.Stream(non_blocking=True)
        self._ring = _PinnedRing(xp, host_buffers)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Work in the block runs on the read stream (in the calling thread)."""
        if not self.enabled:
            yield
            return
        with self.read:
            yield

    def mark_read(self) -> Any:
        """An event after everything issued on the read stream so far (None for NumPy)."""
        if not self.enabled:
            return None
        event = self.xp.cuda.Event(disable_timing=True)
        event.record(self.read)
        return event

    @contextlib.contextmanager
    def computing(self, after: Any = None) -> Iterator[None]:
        """Work in the block runs on the compute stream (CuPy's and torch's), ordered after
        the event ``after`` (a :meth:`mark_read`); the host does not wait."""
        if not self.enabled:
            yield
            return
        if after is not None:
            self.compute.wait_event(after)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.compute)
            if self._torch_stream is not None:
                import torch

                stack.enter_context(torch.cuda.stream(self._torch_stream))
            yield

    def to_host(
        self, array: Any, *, what: str, keep: Any = None, timeout: float | None = None
    ) -> HostCopy:
        """Copy ``array`` to a pinned host buffer on the compute stream without waiting
        (NumPy: the array itself). ``keep`` holds device arrays alive until the copy is
        read: memory freed while the stream may still read it could be handed to the
        read stream's next allocation. ``timeout``: how long to wait for a free buffer
        (``queue.Empty`` past it)."""
        if not self.enabled:
            return HostCopy(np.asarray(array))
        slot, host = self._ring.take(tuple(array.shape), array.dtype, timeout)
        try:
            kwargs: dict[str, Any] = {"stream": self.compute, "out": host, "blocking": False}
            if getattr(self.xp, "is_standin", False):
                kwargs["what"] = what
            array.get(**kwargs)
            event = self.xp.cuda.Event(disable_timing=True)
            event.record(self.compute)
        except BaseException:
            self._ring.give_back(slot)
            raise
        return HostCopy(host, event, self._ring, slot, keep)

"""A GPU-decoding cuCIM for machines without a GPU: tests and ``benchmarks/gpu.py --dry-run``.

:class:`StandInCuImage` answers cuCIM's ``CuImage`` calls the cuCIM backend makes. Asked
for ``device="cuda"``, it decodes with cuCIM's own CPU decoder and hands the pixels back
as arrays of the strict device stand-in (:mod:`infra.strict_device`), as nvImageCodec
would hand back CUDA memory: they come into being on the "device", so no transfer is
recorded, and any later host round trip is. A batched read reuses one device buffer
for every batch, as cuCIM's iterator does, so a reader that keeps a batch without
copying it sees the next batch's pixels.

Use :func:`installed` for a ``with`` block: it installs the stand-in array module and
makes ``CucimReader`` open files with this class.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from infra import strict_device
from infra.strict_device import StrictArray, StrictModule, TransferLedger
from ingest.slides.backends.cucim_reader import CucimReader

__all__ = ["StandInCuImage", "installed"]


class StandInCuImage:
    """cuCIM's ``CuImage`` with a simulated GPU decoder (see module docstring)."""

    def __init__(self, path: str, xp: StrictModule) -> None:
        from cucim import CuImage  # type: ignore[attr-defined]

        self._cpu = CuImage(path)
        self._xp = xp
        self.resolutions = self._cpu.resolutions
        #: batches a batched read handed out (each overwrote the previous one's buffer)
        self.batches = 0

    def read_region(
        self,
        location: Any = (0, 0),
        size: Any = None,
        level: int = 0,
        device: str = "cpu",
        num_workers: int = 1,
        batch_size: int = 1,
        **kwargs: Any,
    ) -> Any:
        batched = isinstance(location, list)
        if device == "cpu":
            if batched:
                return self._cpu.read_region(
                    location,
                    size,
                    level,
                    num_workers=num_workers,
                    batch_size=batch_size,
                    device="cpu",
                    **kwargs,
                )
            return self._cpu.read_region(location, size, level, device="cpu", **kwargs)
        if batched:
            return self._batches(location, tuple(size), level, max(batch_size, 1))
        return strict_device.decoded(self._xp, self._decode(location, tuple(size), level))

    def _decode(self, location: Sequence[int], size: tuple[int, int], level: int) -> np.ndarray:
        region = self._cpu.read_region(
            (int(location[0]), int(location[1])), size, level, device="cpu"
        )
        return np.asarray(region)

    def _batches(
        self, locations: list[Any], size: tuple[int, int], level: int, batch_size: int
    ) -> Iterator[StrictArray]:
        buffer: StrictArray | None = None
        for start in range(0, len(locations), batch_size):
            chunk = np.stack(
                [self._decode(loc, size, level) for loc in locations[start : start + batch_size]]
            )
            if buffer is None:
                buffer = strict_device.decoded(
                    self._xp, np.empty((batch_size, *chunk.shape[1:]), np.uint8)
                )
            strict_device.decode_into(buffer, chunk)
            self.batches += 1
            yield buffer[: len(chunk)]

    def close(self) -> None:
        close = getattr(self._cpu, "close", None)
        if callable(close):
            close()


@contextlib.contextmanager
def installed(ledger: TransferLedger | None = None) -> Iterator[StrictModule]:
    """The strict stand-in as the device and this class as cuCIM's decoder, for the block."""
    with strict_device.installed(ledger) as xp:
        previous = CucimReader.image_type
        CucimReader.image_type = functools.partial(StandInCuImage, xp=xp)
        try:
            yield xp
        finally:
            CucimReader.image_type = previous

"""The reader contract every backend implements.

A backend turns bytes into pixels and pyramid geometry; it does not resolve MPP,
decide what metadata is public, or handle URIs: :mod:`ingest.slides.opener` does that
once for all backends, so results agree whichever backend opened the slide.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar

import numpy as np

__all__ = ["BackendSlide", "SlideReader"]


class BackendSlide(abc.ABC):
    """An open slide in one backend. Coordinates: level-0 (x, y); sizes at the level."""

    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    tile_size: tuple[int, int] | None
    #: backend-specific facts that feed MPP resolution (never exposed downstream)
    vendor_properties: Mapping[str, Any]
    #: how this backend maps a level-0 coordinate to its level grid: "floor" backends
    #: (cuCIM, tiffslide) read exactly level pixel ``lx`` from ``ceil(lx * ds)``; OpenSlide
    #: interpolates fractional positions, so it gets the nearest level-0 coordinate.
    level0_mapping: str = "floor"

    def level0_coordinate(self, level_px: int, level: int) -> int:
        """The level-0 coordinate this backend maps to level pixel ``level_px``."""
        ds = self.level_downsamples[level]
        if self.level0_mapping == "floor":
            value = math.ceil(level_px * ds - 1e-9)
            return value if math.floor(value / ds + 1e-9) == level_px else value + 1
        return int(round(level_px * ds))

    @abc.abstractmethod
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3). The caller guarantees the region is in bounds."""

    def read_regions(
        self,
        locations: Sequence[tuple[int, int]],
        level: int,
        size: tuple[int, int],
        threads: int = 1,
    ) -> np.ndarray:
        """(N, height, width, 3) for in-bounds regions; backends override to batch."""
        from concurrent.futures import ThreadPoolExecutor

        width, height = size
        out = np.empty((len(locations), height, width, 3), np.uint8)

        def one(i: int) -> None:
            x, y = locations[i]
            out[i] = self.read_region(int(x), int(y), level, width, height)

        if threads <= 1 or len(locations) < 2:
            for i in range(len(locations)):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(one, range(len(locations))))
        return out

    def read_region_on(self, xp: Any, x: int, y: int, level: int, width: int, height: int) -> Any:
        """:meth:`read_region` as an ``xp`` array. A backend that decodes on the device
        overrides this to keep the pixels there; this default decodes on the host and
        copies once (a pixel transfer the device engine's ledger counts)."""
        return xp.asarray(self.read_region(x, y, level, width, height))

    def read_regions_on(
        self,
        xp: Any,
        locations: Sequence[tuple[int, int]],
        level: int,
        size: tuple[int, int],
        threads: int = 1,
    ) -> Any:
        """:meth:`read_regions` as an ``xp`` array (see :meth:`read_region_on`)."""
        return xp.asarray(self.read_regions(locations, level, size, threads))

    @abc.abstractmethod
    def close(self) -> None: ...


class SlideReader(abc.ABC):
    """A backend: capability flags, availability, and how to open a slide."""

    name: ClassVar[str]
    #: extension (lower case, with dot) → priority; higher is tried first
    extensions: ClassVar[Mapping[str, int]]
    supports_remote: ClassVar[bool] = False
    supports_gpu_decode: ClassVar[bool] = False
    #: only TIFF-container formats (the shared preflight has vetted the bytes)
    tiff_only: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def is_available(cls) -> bool:
        """True when the backend's library imports and can run here."""

    @abc.abstractmethod
    def open_local(self, path: str) -> BackendSlide:
        """Open a file on the local filesystem."""

    def open_remote(
        self, fileobj: IO[bytes], uri: str, storage_options: Mapping[str, Any]
    ) -> BackendSlide:
        """Open through byte-range reads (only for ``supports_remote`` backends)."""
        raise NotImplementedError(f"{self.name} cannot read remote objects; stage them first")

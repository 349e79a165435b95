"""The public slide object: pixels at a known resolution, from any backend.

Regions are addressed like OpenSlide: (x, y) in level-0 pixels, size in pixels of the
requested level, RGB uint8 out. Parts of a region outside the slide are white (glass),
identically for every backend, because the bounds are handled here and backends only
ever see in-bounds requests.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from infra.arrays import array_module
from infra.errors import ConfigError, MissingMPPError, SlideReadError
from infra.strict_device import ImplicitTransferError
from ingest.slides.geometry import DEFAULT_TOLERANCE, LevelChoice, choose_level, clamp_region
from ingest.slides.handle import SlideHandle
from ingest.slides.limits import SlideBudget, check_thumbnail
from ingest.slides.metadata import SlideMetadata

if TYPE_CHECKING:
    from ingest.slides.base import BackendSlide
    from ingest.slides.staging import ScratchSpace, StagedFile

__all__ = ["RESAMPLING", "Resample", "Slide", "downsample"]

#: How a tile read from a finer level is brought to the target resolution.
#: ``area``: the mean of the source pixels each output pixel covers (an exact k×k box
#: for a whole factor k, as pyramid levels are built; hs2p's default too), about 13×
#: cheaper than ``lanczos`` on a 512² → 256² tile. ``lanczos``: a sharper
#: windowed-sinc filter (the only filter before ``TilingConfig.resample`` existed).
Resample = Literal["area", "lanczos"]
RESAMPLING: tuple[Resample, ...] = ("area", "lanczos")

_THUMB_CHUNK = 1024  # output pixels per side read at once: bounds memory for huge slides
_THUMB_SOURCE_CHUNK = 4096  # level pixels per side read at once, whatever the downsampling
#: A level this small (12 MB of RGB) is decoded whole at its first read and every later
#: read of it is cut from memory. A small slide is read three times (thumbnail, edge
#: refinement, tiles), and on a 1024² slide each decode costs more than the cut.
_WHOLE_LEVEL_PX = 2048 * 2048


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Slide:
    """An open slide. Use as a context manager; pickling reopens it from its handle."""

    def __init__(
        self,
        handle: SlideHandle,
        backend: BackendSlide,
        metadata: SlideMetadata,
        label: str,
        staged: tuple[ScratchSpace, StagedFile] | None = None,
        on_close: Any = None,
    ) -> None:
        self.handle = handle
        self.metadata = metadata
        self.name = label
        self._backend = backend
        self._staged = staged
        self._on_close = on_close
        self._closed = False
        #: set by a pipeline to bound this slide's time and memory (checked between chunks)
        self.budget: SlideBudget | None = None
        self._levels: dict[int, np.ndarray] = {}  # small levels decoded whole (see above)
        self._device_levels: dict[tuple[int, int], Any] = {}  # the same, on a device

    # ---- geometry ------------------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return self.metadata.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.metadata.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.metadata.level_downsamples

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.metadata.level_dimensions[0]

    @property
    def mpp(self) -> float:
        """Level-0 µm/px. Raises MissingMPPError rather than guess."""
        mpp = self.metadata.mpp
        if mpp is None:
            raise MissingMPPError(self.name, "slide has no MPP; pass one explicitly (--mpp)")
        return mpp

    def level_mpp(self, level: int) -> float:
        self._check_level(level)
        return self.mpp * self.level_downsamples[level]

    def best_level(self, target_mpp: float, tolerance: float = DEFAULT_TOLERANCE) -> LevelChoice:
        """Where to read for ``target_mpp``: the coarsest level not coarser than it."""
        mpps = [self.mpp * d for d in self.level_downsamples]
        return choose_level(mpps, target_mpp, tolerance)

    # ---- pixels ----------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB uint8 (height, width, 3) of the region at ``level``; outside the slide is white."""
        self._check_open()
        self._check_level(level)
        width, height = _check_size(size)
        x, y = int(location[0]), int(location[1])
        whole = self._whole_level(level)
        if whole is not None:
            return _cut(whole, *self._level_px(x, y, level), width, height)
        if self._inside(x, y, level, width, height):
            bx, by = self._to_backend(x, y, level)
            return self._backend_read(bx, by, level, width, height)
        return self._read_clamped(x, y, level, width, height)

    def read_regions(
        self,
        locations: Sequence[tuple[int, int]] | np.ndarray,
        level: int,
        size: tuple[int, int],
        threads: int | None = None,
    ) -> np.ndarray:
        """(N, height, width, 3) for N level-0 locations; batched and threaded in the backend."""
        self._check_open()
        self._check_level(level)
        width, height = _check_size(size)
        locs = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
        whole = self._whole_level(level)
        if whole is not None:
            out = np.empty((len(locs), height, width, 3), np.uint8)
            for n, (x, y) in enumerate(locs):
                out[n] = _cut(whole, *self._level_px(int(x), int(y), level), width, height)
            return out
        inside = np.array(
            [self._inside(int(x), int(y), level, width, height) for x, y in locs], dtype=bool
        )
        idx = np.flatnonzero(inside)
        batch = None
        if idx.size:
            try:
                batch = self._backend.read_regions(
                    [self._to_backend(int(x), int(y), level) for x, y in locs[idx]],
                    level,
                    (width, height),
                    threads or _default_threads(),
                )
            except Exception as exc:  # any decoder failure becomes a typed, named error
                raise SlideReadError(self.name, f"batched read at level {level}: {exc}") from exc
            if idx.size == len(locs):
                return batch  # the common case: no copy
        out = np.empty((len(locs), height, width, 3), np.uint8)
        if batch is not None:
            out[idx] = batch
        for i in np.flatnonzero(~inside):
            out[i] = self._read_clamped(int(locs[i, 0]), int(locs[i, 1]), level, width, height)
        return out

    def read_regions_at_mpp(
        self,
        locations: Sequence[tuple[int, int]] | np.ndarray,
        tile_size: int,
        target_mpp: float,
        threads: int | None = None,
        resample: Resample = "area",
        xp: Any = None,
    ) -> Any:
        """(N, tile, tile, 3) tiles at ``target_mpp`` whose top-left is at level-0 ``locations``.

        Reads the best level; when it does not match exactly, reads the larger footprint
        and downsamples it with ``resample`` (see :data:`RESAMPLING`).

        ``xp``: the array module of the result (NumPy by default). With a device module
        (CuPy) the pixels stay on the device where the backend decodes there (cuCIM) and
        are resampled there, identically to the PIL path (:mod:`ingest.slides.resample`).
        """
        if resample not in RESAMPLING:
            raise ConfigError(
                f"{self.name}: resample must be one of {RESAMPLING}, got {resample!r}"
            )
        self._check_budget("tile reading")
        choice = self.best_level(target_mpp)
        read = tile_size if choice.exact else int(round(tile_size * choice.scale))
        if xp is not None and xp is not np:
            from ingest.slides.resample import downsample_batch

            raw = self._read_regions_on(xp, locations, choice.level, (read, read), threads)
            return raw if read == tile_size else downsample_batch(raw, tile_size, resample)
        raw = self.read_regions(locations, choice.level, (read, read), threads)
        if read == tile_size:
            return raw
        out = np.empty((len(raw), tile_size, tile_size, 3), np.uint8)

        def resize(i: int) -> None:
            out[i] = downsample(raw[i], tile_size, resample)

        workers = threads or _default_threads()
        if workers > 1 and len(raw) > 1:
            with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while resampling
                list(pool.map(resize, range(len(raw))))
        else:
            for i in range(len(raw)):
                resize(i)
        return out

    def _read_regions_on(
        self,
        xp: Any,
        locations: Sequence[tuple[int, int]] | np.ndarray,
        level: int,
        size: tuple[int, int],
        threads: int | None,
    ) -> Any:
        """:meth:`read_regions` into ``xp`` arrays (see :meth:`read_regions_at_mpp`)."""
        self._check_open()
        self._check_level(level)
        width, height = _check_size(size)
        locs = np.asarray(locations, dtype=np.int64).reshape(-1, 2)
        if not len(locs):
            return xp.empty((0, height, width, 3), dtype=np.uint8)
        whole = self._whole_level_on(xp, level)
        if whole is not None:
            return xp.stack(
                [
                    _cut(whole, *self._level_px(int(x), int(y), level), width, height)
                    for x, y in locs
                ]
            )
        inside = [self._inside(int(x), int(y), level, width, height) for x, y in locs]
        idx = [i for i, ok in enumerate(inside) if ok]
        tiles: list[Any] = [None] * len(locs)
        if idx:
            try:
                batch = self._backend.read_regions_on(
                    xp,
                    [self._to_backend(int(locs[i, 0]), int(locs[i, 1]), level) for i in idx],
                    level,
                    (width, height),
                    threads or _default_threads(),
                )
            except ImplicitTransferError:
                raise  # a host round trip in slidebank's code, not a decoder failure
            except Exception as exc:  # any decoder failure becomes a typed, named error
                raise SlideReadError(self.name, f"batched read at level {level}: {exc}") from exc
            if len(idx) == len(locs):
                return batch
            for j, i in enumerate(idx):
                tiles[i] = batch[j]
        for i, ok in enumerate(inside):
            if not ok:
                tiles[i] = self._read_clamped(
                    int(locs[i, 0]), int(locs[i, 1]), level, width, height, xp
                )
        return xp.stack(tiles)

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """The whole slide at about ``mpp`` µm/px, and the exact µm/px of the result.

        Built chunk by chunk from the best level with area averaging, so a 100k² slide
        never has more than a chunk of its pixels in memory.
        """
        self._check_open()
        choice = self.best_level(mpp)
        w0, h0 = self.dimensions
        out_w = max(1, int(round(w0 * self.mpp / mpp)))
        out_h = max(1, int(round(h0 * self.mpp / mpp)))
        lw, lh = self.level_dimensions[choice.level]
        check_thumbnail(self.name, (out_w, out_h), (lw, lh), choice.level, mpp)
        fx, fy = lw / out_w, lh / out_h  # level pixels per output pixel, per axis
        # A chunk's source region stays near _THUMB_SOURCE_CHUNK² level pixels even when the
        # chosen level is far finer than the thumbnail (a slide without a matching level).
        chunk = max(16, min(_THUMB_CHUNK, int(_THUMB_SOURCE_CHUNK / max(fx, fy, 1.0))))
        out = np.empty((out_h, out_w, 3), np.uint8)
        for cy in range(0, out_h, chunk):
            for cx in range(0, out_w, chunk):
                self._check_budget("thumbnail")
                cw, ch = min(chunk, out_w - cx), min(chunk, out_h - cy)
                out[cy : cy + ch, cx : cx + cw] = self._thumb_chunk(
                    choice.level, (cx * fx, cy * fy, (cx + cw) * fx, (cy + ch) * fy), (cw, ch)
                )
        return out, w0 * self.mpp / out_w

    def _thumb_chunk(self, level: int, box: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
        lw, lh = self.level_dimensions[level]
        bx0, by0, bx1, by1 = box
        sx0, sy0 = int(math.floor(bx0)), int(math.floor(by0))
        sx1, sy1 = min(int(math.ceil(bx1)), lw), min(int(math.ceil(by1)), lh)
        ds = self.level_downsamples[level]
        region = self.read_region(
            (int(round(sx0 * ds)), int(round(sy0 * ds))), level, (sx1 - sx0, sy1 - sy0)
        )  # round(lx·ds) maps back to lx exactly
        local = (bx0 - sx0, by0 - sy0, min(bx1, sx1) - sx0, min(by1, sy1) - sy0)
        image = Image.fromarray(region).resize(size, Image.Resampling.BOX, box=local)
        return np.asarray(image)

    # ---- internals -------------------------------------------------------------------------
    def _whole_level(self, level: int) -> np.ndarray | None:
        """``level`` decoded whole when it is small (see ``_WHOLE_LEVEL_PX``), else None."""
        whole = self._levels.get(level)
        if whole is None:
            lw, lh = self.level_dimensions[level]
            if lw * lh > _WHOLE_LEVEL_PX:
                return None
            whole = self._levels[level] = self._backend_read(0, 0, level, lw, lh)
        return whole

    def _whole_level_on(self, xp: Any, level: int) -> Any:
        """:meth:`_whole_level` decoded into ``xp`` (kept apart from the host copy)."""
        key = (id(xp), level)
        whole = self._device_levels.get(key)
        if whole is None:
            lw, lh = self.level_dimensions[level]
            if lw * lh > _WHOLE_LEVEL_PX:
                return None
            whole = self._device_levels[key] = self._backend_read(0, 0, level, lw, lh, xp)
        return whole

    def _check_budget(self, stage: str) -> None:
        if self.budget is not None:
            self.budget.check(stage)

    def _level_px(self, x: int, y: int, level: int) -> tuple[int, int]:
        """Nearest level pixel of a level-0 coordinate (exact for coordinates made as lx·ds)."""
        ds = self.level_downsamples[level]
        return int(round(x / ds)), int(round(y / ds))

    def _inside(self, x: int, y: int, level: int, width: int, height: int) -> bool:
        lw, lh = self.level_dimensions[level]
        lx, ly = self._level_px(x, y, level)
        return lx >= 0 and ly >= 0 and lx + width <= lw and ly + height <= lh

    def _to_backend(self, x: int, y: int, level: int) -> tuple[int, int]:
        lx, ly = self._level_px(x, y, level)
        b = self._backend
        return b.level0_coordinate(lx, level), b.level0_coordinate(ly, level)

    def _backend_read(
        self, x: int, y: int, level: int, width: int, height: int, xp: Any = np
    ) -> Any:
        try:
            if xp is np:
                return self._backend.read_region(x, y, level, width, height)
            return self._backend.read_region_on(xp, x, y, level, width, height)
        except ImplicitTransferError:
            raise
        except Exception as exc:  # decoder errors come in many types; name the slide
            raise SlideReadError(
                self.name, f"region ({x}, {y}) {width}x{height} at level {level}: {exc}"
            ) from exc

    def _read_clamped(
        self, x: int, y: int, level: int, width: int, height: int, xp: Any = np
    ) -> Any:
        out = xp.full((height, width, 3), 255, dtype=np.uint8)
        lx, ly = self._level_px(x, y, level)
        box = clamp_region(lx, ly, width, height, self.level_dimensions[level])
        if box is None:
            return out
        bx, by, bw, bh = box
        backend = self._backend
        part = self._backend_read(
            backend.level0_coordinate(bx, level),
            backend.level0_coordinate(by, level),
            level,
            bw,
            bh,
            xp,
        )
        out[by - ly : by - ly + bh, bx - lx : bx - lx + bw] = part
        return out

    def _check_level(self, level: int) -> None:
        if not 0 <= int(level) < self.level_count:
            raise ConfigError(f"{self.name}: level {level} out of range 0..{self.level_count - 1}")

    def _check_open(self) -> None:
        if self._closed:
            raise SlideReadError(self.name, "slide is closed")

    # ---- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._levels.clear()
        self._device_levels.clear()
        try:
            self._backend.close()
        finally:
            if self._on_close is not None:
                self._on_close()
            if self._staged is not None:
                scratch, staged = self._staged
                scratch.release(staged)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown modules may already be gone; closing is best effort there.
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self) -> tuple[Any, tuple[SlideHandle]]:
        # Never pickle file handles or decoders: the receiver reopens from the handle.
        return (_reopen, (self.handle,))

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Slide({self.name!r}, reader={m.reader}, levels={m.level_count}, "
            f"dimensions={self.dimensions}, mpp={m.mpp}, access={m.access})"
        )


def _reopen(handle: SlideHandle) -> Slide:
    return handle.open()


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0 or width * height > 2**28:
        raise ConfigError(f"region size must be positive and below 2^28 pixels, got {size}")
    return width, height


def _cut(level: Any, lx: int, ly: int, width: int, height: int) -> Any:
    """The region at level pixel (lx, ly) of a whole decoded level (NumPy or a device
    array, the result in the same module); white outside it."""
    lh, lw = level.shape[:2]
    if lx >= 0 and ly >= 0 and lx + width <= lw and ly + height <= lh:
        return level[ly : ly + height, lx : lx + width].copy()  # a copy: callers may write to it
    out = array_module(level).full((height, width, 3), 255, dtype=np.uint8)
    box = clamp_region(lx, ly, width, height, (lw, lh))
    if box is not None:
        bx, by, bw, bh = box
        out[by - ly : by - ly + bh, bx - lx : bx - lx + bw] = level[by : by + bh, bx : bx + bw]
    return out


def downsample(image: np.ndarray, size: int, resample: Resample) -> np.ndarray:
    """A square RGB ``image`` brought down to ``size`` × ``size`` px with ``resample``."""
    pil = Image.fromarray(image)
    if resample == "lanczos":
        return np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS))
    side = image.shape[0]
    if side % size == 0 and image.shape[1] == side:
        # A whole factor: PIL's reduce is the exact k×k mean, rounded (BOX resampling
        # comes within one grey level of it, at four times the cost).
        return np.asarray(pil.reduce(side // size))
    return np.asarray(pil.resize((size, size), Image.Resampling.BOX))

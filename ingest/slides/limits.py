"""Bounds on the work one slide may cause, checked before the work is done.

A slide is hostile input: a 530 KB TIFF can declare 10⁶ × 10⁶ pixels by pointing every
tile at one small deflate stream, and a thumbnail of it would allocate gigabytes and decode
for hours. Three cheap checks turn such files into a :class:`SlideLimitError` that names
the slide and the reason:

* declared decoded bytes against the file's size (no real scan compresses beyond
  ``MAX_DECODE_RATIO``: deflate tops out near 1,000:1, JPEG of blank glass near 300:1);
* the thumbnail's own size (``MAX_THUMBNAIL_PIXELS``; a 75 × 50 mm slide at 8 µm/px is
  ~59 M px);
* the source pixels decoded to build it (``MAX_THUMBNAIL_SOURCE_PIXELS``: a slide with no
  pyramid level near the thumbnail resolution is refused rather than decoded whole).

A :class:`SlideBudget` adds a wall-clock budget and a resident-memory ceiling, checked by
:class:`~ingest.slides.slide.Slide` between thumbnail chunks and region batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from infra.errors import SlideLimitError

__all__ = [
    "MAX_DECODE_RATIO",
    "MAX_THUMBNAIL_PIXELS",
    "MAX_THUMBNAIL_SOURCE_PIXELS",
    "SlideBudget",
    "check_declared_size",
    "check_thumbnail",
    "format_bytes",
]

MAX_DECODE_RATIO = 20_000
MAX_THUMBNAIL_PIXELS = 2**26  # 64 M px: 192 MB of RGB, plus the tissue mask's working arrays
MAX_THUMBNAIL_SOURCE_PIXELS = 4 * 10**9  # e.g. one 63k² level; minutes of decoding at most


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # the loop returns on its last unit


def check_declared_size(
    slide: str, shapes: Iterable[tuple[tuple[int, ...], int]], file_size: int
) -> None:
    """Refuse a container whose images (``(shape, itemsize)`` per level) decode to more than
    ``MAX_DECODE_RATIO`` times its file size: a decompression bomb, not a scan."""
    if file_size <= 0:
        return
    declared = 0
    first: tuple[int, ...] | None = None
    for shape, itemsize in shapes:
        first = first or tuple(shape)
        declared += math.prod(int(d) for d in shape) * int(itemsize)
    ratio = declared / file_size
    if ratio > MAX_DECODE_RATIO:
        raise SlideLimitError(
            slide,
            f"declares {_dims(first)} decoding to {format_bytes(declared)} in a file of "
            f"{format_bytes(file_size)} (compression {ratio:,.0f}:1, above the "
            f"{MAX_DECODE_RATIO:,}:1 no real scan reaches): refused as a decompression bomb",
        )


def check_thumbnail(
    slide: str, out_size: tuple[int, int], source_size: tuple[int, int], level: int, mpp: float
) -> None:
    """Refuse a thumbnail too large to hold, or one that would decode too much of a level."""
    out_px = out_size[0] * out_size[1]
    if out_px > MAX_THUMBNAIL_PIXELS:
        raise SlideLimitError(
            slide,
            f"a thumbnail at {mpp:g} µm/px would be {out_size[0]}x{out_size[1]} px "
            f"({format_bytes(3 * out_px)}), above the {MAX_THUMBNAIL_PIXELS:,} px bound; "
            "the declared size or MPP is implausible for a glass slide",
        )
    src_px = source_size[0] * source_size[1]
    if src_px > MAX_THUMBNAIL_SOURCE_PIXELS:
        raise SlideLimitError(
            slide,
            f"no pyramid level near {mpp:g} µm/px: the thumbnail would decode all of level "
            f"{level} ({source_size[0]}x{source_size[1]} px), above the "
            f"{MAX_THUMBNAIL_SOURCE_PIXELS:,} px bound; add a pyramid (e.g. vips tiffsave "
            "--pyramid) to ingest it",
        )


def _dims(shape: tuple[int, ...] | None) -> str:
    if not shape:
        return "no pixels"
    return "x".join(str(d) for d in shape[:2][::-1]) + " px"


@dataclass
class SlideBudget:
    """Wall-clock seconds and resident memory (bytes, of this process) one slide may use.

    ``check`` is called between bounded units of work (a thumbnail chunk, a tile batch);
    one unit is small by construction, so the overshoot past either bound is one unit.
    """

    slide: str
    seconds: float | None = None
    memory_bytes: int | None = None
    started: float = field(default_factory=time.monotonic)

    def check(self, stage: str) -> None:
        if self.seconds is not None:
            elapsed = time.monotonic() - self.started
            if elapsed > self.seconds:
                raise SlideLimitError(
                    self.slide,
                    f"over its time budget: {elapsed:.0f} s > {self.seconds:g} s (during {stage})",
                )
        if self.memory_bytes is not None:
            rss = current_rss()
            if rss > self.memory_bytes:
                raise SlideLimitError(
                    self.slide,
                    f"over the reader's memory ceiling: resident {format_bytes(rss)} "
                    f"> {format_bytes(self.memory_bytes)} (during {stage})",
                )


def current_rss() -> int:
    """Resident memory of this process, bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)

"""Slides the reader tests run on, with what each is known to be (the ground truth)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SlideCase:
    name: str
    path: str
    mpp: float
    mpp_source: str
    objective_power: float | None


@functools.lru_cache(maxsize=8)
def level_array(path: str, level: int) -> np.ndarray:
    """A whole pyramid level decoded by tifffile: the bytes' own truth, no reader involved."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


def reference_region(path: str, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
    return level_array(path, level)[ly:ly + h, lx:lx + w]


def openslide_levels(path: str) -> tuple[tuple[tuple[int, int], ...], tuple[float, ...]]:
    import openslide

    with openslide.OpenSlide(path) as handle:
        return tuple(handle.level_dimensions), tuple(handle.level_downsamples)


def inside_level_pixels(level_size: tuple[int, int], size: tuple[int, int]):
    """Deterministic level-pixel positions of regions fully inside a level (tile seams included)."""
    lw, lh = level_size
    w, h = size
    xs = [0, max(lw // 2 - w // 2, 0), max(lw - w, 0), 250 if lw > 250 + w else 0]
    ys = [0, max(lh // 3, 0), max(lh - h, 0), 250 if lh > 250 + h else 0]
    xs = [min(x, max(lw - w, 0)) for x in xs]
    ys = [min(y, max(lh - h, 0)) for y in ys]
    return list(zip(xs, ys, strict=True))

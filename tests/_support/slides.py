"""Slides the tests run on, with what each is known to be (the ground truth), and a
recorder of which pyramid levels a slide's pixels were read from."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The real sample slide (a dev-tree file; tests that need it skip when it is absent).
CMU_SLIDE = ROOT.parent / "shared" / "data" / "cmu_small_region.svs"


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
    return level_array(path, level)[ly : ly + h, lx : lx + w]


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


@dataclass
class ReadLog:
    """Every pixel read of one slide: its level and how many level pixels it covered."""

    levels: list[int]
    pixels: dict[int, int]


def record_reads(slide: Any, monkeypatch: pytest.MonkeyPatch) -> ReadLog:
    """Wrap the slide's backend so every pixel read records its level and size."""
    log = ReadLog([], {})
    backend = slide._backend  # the one object every read goes through
    single, batch = backend.read_region, backend.read_regions
    in_batch = [False]  # the base class's batch read calls read_region: count it once

    def count(level: int, n: int, width: int, height: int) -> None:
        if not in_batch[0]:
            log.levels.extend([level] * n)
            log.pixels[level] = log.pixels.get(level, 0) + n * width * height

    def read_region(x, y, level, width, height):
        count(level, 1, width, height)
        return single(x, y, level, width, height)

    def read_regions(locations, level, size, threads=1):
        count(level, len(locations), *size)
        in_batch[0] = True
        try:
            return batch(locations, level, size, threads)
        finally:
            in_batch[0] = False

    monkeypatch.setattr(backend, "read_region", read_region)
    monkeypatch.setattr(backend, "read_regions", read_regions)
    return log

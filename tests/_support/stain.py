"""Data builders shared by the stain tests (this module holds no tests).

* real H&E tiles from the CMU sample slide, and synthetic H&E tiles from slidebank's
  Beer-Lambert slide writer (no pen marks), both as ``(N, 256, 256, 3)`` uint8;
* :func:`rerender`: the same tissue with other stain vectors and strengths, made by
  unmixing into H and E concentrations and remixing (Beer-Lambert), keeping the
  residual density so texture and noise are unchanged.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ingest.slides import open_slide
from ingest.stain import tissue_mask

TILE = 256
IO = 240.0


@functools.cache
def cmu_region(path: str) -> np.ndarray:
    """The whole CMU sample slide at level 0 (2967 × 2220 × 3, 20 MB)."""
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions)
    region.flags.writeable = False
    return region


def grid_tiles(image: np.ndarray, min_tissue: float, size: int = TILE) -> np.ndarray:
    """Non-overlapping tiles of ``image`` whose stained share (OD ≥ 0.15 in some channel)
    is at least ``min_tissue``."""
    h, w = image.shape[:2]
    tiles = [
        image[y : y + size, x : x + size]
        for y in range(0, h - size + 1, size)
        for x in range(0, w - size + 1, size)
    ]
    keep = [t for t in tiles if tissue_mask(t, IO, 0.15, every_channel=False).mean() >= min_tissue]
    return np.stack(keep)


@functools.cache
def cmu_tiles(path: str, min_tissue: float = 0.5) -> np.ndarray:
    return grid_tiles(cmu_region(path), min_tissue)


@functools.cache
def synthetic_he(directory: str):
    """A 2048² synthetic H&E slide without pen marks (written once per test session)."""
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    spec = SyntheticSlideSpec(
        width=2048, height=2048, mpp=0.5, style="svs", seed=5, downsamples=(1, 4), n_blobs=3
    )
    return write_synthetic_slide(Path(directory) / "stain_he.svs", spec)


@functools.cache
def synthetic_tiles(directory: str, min_tissue: float = 0.6) -> np.ndarray:
    slide = synthetic_he(directory)
    with open_slide(str(slide.path)) as opened:
        region = opened.read_region((0, 0), 0, opened.dimensions)
    return grid_tiles(region, min_tissue)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def rerender(
    rgb: np.ndarray,
    he_from: np.ndarray,
    he_to: np.ndarray,
    strength: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """``rgb`` (uint8) with its H and E (columns of ``he_from``) replaced by ``he_to``,
    each concentration scaled by ``strength``; what H and E do not explain is kept."""
    od = np.log(IO) - np.log(rgb.astype(np.float64) + 1.0)
    # einsum, not @: OpenBLAS threads tall-skinny products very slowly on a busy host.
    conc = np.einsum("...k,jk->...j", od, np.linalg.pinv(he_from))
    residual = od - np.einsum("...j,kj->...k", conc, he_from)
    od_new = np.einsum("...j,kj->...k", conc * np.asarray(strength), he_to) + residual
    return np.clip(np.rint(IO * np.exp(-od_new) - 1.0), 0, 255).astype(np.uint8)


def _turn(v: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """``v`` rotated by ``degrees`` towards a random direction perpendicular to it."""
    axis = rng.normal(size=3)
    axis = unit(axis - (axis @ v) * v)
    angle = np.radians(degrees)
    return unit(np.cos(angle) * v + np.sin(angle) * axis)


def stain_shifts(n: int, seed: int = 0) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """``n`` other (H, E) matrices and strengths, like different labs and scanners: each
    vector turned by 8-15°, all densities positive, H and E 12-35° apart (as real stains
    are), each stain 0.7-1.35× as strong."""
    from ingest.stain import STANDARD_HE_MATRIX

    rng = np.random.default_rng(seed)
    h0, e0 = (unit(np.asarray(v)) for v in STANDARD_HE_MATRIX)
    out: list[tuple[np.ndarray, tuple[float, float]]] = []
    while len(out) < n:
        h, e = (_turn(v, rng.uniform(8, 15), rng) for v in (h0, e0))
        apart = np.degrees(np.arccos(h @ e))
        if (h > 0.02).all() and (e > 0.02).all() and 12 <= apart <= 35:
            out.append((np.stack([h, e], axis=1), (rng.uniform(0.7, 1.35), rng.uniform(0.7, 1.35))))
    return out

"""Tissue edges re-decided at a finer pyramid level, only in a band along the coarse edge.

The coarse mask is made at ``thumbnail_mpp`` (~8 µm/px): inside a section and on open
glass it is right, but its edge is only placed to the nearest 8 µm pixel, which on a
small biopsy costs several IoU points. Re-reading the whole slide finer would cost
16× the pixels; the edge band is a few percent of them. So:

1. The band: coarse pixels within ``refine_band_um`` of the coarse edge.
2. Square blocks of the coarse grid that hold band pixels are read at ``refine_mpp``
   (with a halo for the morphology), most band pixels first, until
   ``refine_max_read_px`` level pixels have been read: a hard cap on the work.
3. In each block, fine pixels are tissue when their OD (against the coarse glass
   reference, lightly smoothed) reaches the coarse detection threshold; the coarse
   interior is kept solid, then the coarse steps' closing, hole filling and opening
   run at the fine scale. Only band pixels take the fine answer.
4. Pen ink, artifacts and scanner borders stay as the coarse mask found them
   (upsampled), and are cut out again last.

The result is a :class:`TissueMask` on a grid ``factor`` times finer. The grid is kept
to ``refine_max_mask_px`` pixels (the plan's coverage integral and the stored mask are
linear in it), so a large slide's grid refines less or not at all; there the edges
weigh little against the tissue's area anyway. Written against ``xp`` (NumPy or CuPy).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.arrays import asnumpy, get_xp
from ingest.tissue import _morph
from ingest.tissue.color import od_signal

if TYPE_CHECKING:
    from types import ModuleType

    from infra.arrays import Device
    from ingest.slides import Slide
    from ingest.tissue.mask import TissueMask

__all__ = ["EdgeRefinement", "grid_factor", "refine_edges"]

log = logging.getLogger(__name__)
Array = Any

#: coarse pixels per block side (256 µm at 8 µm/px) and halo around it (32 µm): the halo
#: holds the closing and opening radii, so a block's core gets the whole-image answer
_BLOCK = 32
_HALO = 4
#: blocks read per batch (bounds memory: 64 × 320² × 3 bytes ≈ 20 MB at 2 µm from 1 µm)
_BATCH = 64


@dataclass(frozen=True)
class EdgeRefinement:
    """What the edge refinement did (``factor`` 1: nothing, with ``reason``)."""

    factor: int
    mpp: float
    level: int | None = None
    blocks: int = 0
    blocks_total: int = 0
    pixels_read: int = 0
    reason: str = "refined"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grid_factor(
    shape: tuple[int, int], coarse_mpp: float, slide_mpp: float, refine_mpp: float, max_mask_px: int
) -> int:
    """How many times finer than the coarse grid the refined grid is (1: not refined)."""
    want = int(math.floor(coarse_mpp / refine_mpp + 0.1))
    # Never finer than the slide itself (nothing to read there) ...
    want = min(want, int(math.floor(coarse_mpp / slide_mpp + 1e-6)))
    # ... nor than the grid budget allows.
    budget = int(math.floor(math.sqrt(max_mask_px / max(shape[0] * shape[1], 1))))
    return max(1, min(want, budget))


def refine_edges(slide: Slide, coarse: TissueMask, device: Device = "auto") -> TissueMask:
    """``coarse`` with its edge re-decided at ``coarse.config.refine_mpp`` (see module doc)."""
    config = coarse.config
    width, height = (int(v) for v in slide.dimensions)
    factor = grid_factor(
        coarse.mask.shape,
        coarse.mpp,
        float(slide.mpp),
        config.refine_mpp,
        config.refine_max_mask_px,
    )
    fine_mpp = coarse.mpp / factor
    if factor == 1 or not coarse.mask.any():
        reason = "no tissue" if not coarse.mask.any() else "grid budget or slide resolution"
        return replace(coarse, edge=EdgeRefinement(1, coarse.mpp, reason=reason))
    xp = get_xp(device)
    mask = xp.asarray(coarse.mask)
    band_r = max(1, _morph.radius_px(config.refine_band_um, coarse.mpp))
    band = _morph.binary_dilate(mask, band_r, xp) & ~_morph.binary_erode(mask, band_r, xp)
    interior = mask & ~band
    blocks = _blocks(asnumpy(band))
    level = slide.best_level(fine_mpp)
    read = _BLOCK + 2 * _HALO
    read_px = int(round(read * factor * (level.scale if not level.exact else 1.0))) ** 2
    chosen = blocks[: max(0, config.refine_max_read_px // max(read_px, 1))]
    if len(chosen) < len(blocks):
        log.info(
            "%s: edge refinement capped at %d of %d blocks", slide.name, len(chosen), len(blocks)
        )
    fine = _upsample(mask, factor, xp)
    background = _upsample(xp.asarray(coarse.background), factor, xp)
    excluded = _upsample(xp.asarray(coarse.pen | coarse.artifacts), factor, xp)
    fine_interior, fine_band = _upsample(interior, factor, xp), _upsample(band, factor, xp)
    sx, sy = width / coarse.mask.shape[1], height / coarse.mask.shape[0]  # level 0 per coarse px
    side = read * factor
    whole = _whole_slide(slide, fine_mpp, level, len(chosen) * read_px, (sx, sy))
    if whole is not None:
        # The OD signal is per pixel: one pass over the whole read gives each block the
        # numbers its own window would (and the hue measurements are never needed here).
        whole_signal = od_signal(xp.asarray(whole[0]), coarse.glass_rgb, xp)
    for start in range(0, len(chosen), _BATCH):
        batch = chosen[start : start + _BATCH]
        windows = [_window(corner, factor, coarse.mask.shape) for corner in batch]
        locations = [(int(round((c - _HALO) * sx)), int(round((r - _HALO) * sy))) for r, c in batch]
        if whole is not None:  # the same blocks, cut from one read of the whole slide
            _, origin, step = whole
            cuts = [
                (int(round((y - origin) / step)), int(round((x - origin) / step)))
                for x, y in locations
            ]
            signals = [
                whole_signal[i : i + side, j : j + side][fine_window]
                for (i, j), (_, fine_window) in zip(cuts, windows, strict=True)
            ]
        else:
            images = slide.read_regions_at_mpp(locations, side, fine_mpp)
            signals = [
                od_signal(xp.asarray(rgb[fine_window]), coarse.glass_rgb, xp)
                for rgb, (_, fine_window) in zip(images, windows, strict=True)
            ]
        for corner, (coarse_window, _), signal in zip(batch, windows, signals, strict=True):
            _refine_block(
                signal,
                corner,
                coarse_window,
                factor,
                fine,
                background,
                excluded,
                fine_interior,
                fine_band,
                coarse,
                fine_mpp,
                xp,
            )
    fine &= ~_upsample(xp.asarray(coarse.pen), factor, xp)
    fine = _morph.remove_small_objects(fine, config.min_object_area_um2 / fine_mpp**2, xp)
    info = EdgeRefinement(
        factor,
        fine_mpp,
        level.level,
        len(chosen),
        len(blocks),
        len(chosen) * read_px,
        "refined" if len(chosen) == len(blocks) else "refined, capped",
    )
    return replace(
        coarse,
        mask=asnumpy(fine),
        mpp=fine_mpp,
        pen=asnumpy(_upsample(xp.asarray(coarse.pen), factor, xp)),
        pen_by_ink={
            k: asnumpy(_upsample(xp.asarray(v), factor, xp)) for k, v in coarse.pen_by_ink.items()
        },
        artifacts=asnumpy(_upsample(xp.asarray(coarse.artifacts), factor, xp)),
        background=asnumpy(background),
        thumbnail_mpp=coarse.mpp,
        edge=info,
    )


#: a whole-slide read replaces the block reads only below this many level pixels (48 MB
#: of RGB): small slides, where the blocks' halos overlap and cover the slide anyway
_WHOLE_MAX_READ_PX = 16_000_000


def _whole_slide(
    slide: Slide, fine_mpp: float, level: Any, blocks_read_px: int, coarse_px: tuple[float, float]
) -> tuple[np.ndarray, int, float] | None:
    """The whole slide at ``fine_mpp`` with a white margin of ``_HALO`` coarse pixels and
    more, from one read, when that reads fewer level pixels than the blocks would; with
    the level-0 origin of its first pixel and level-0 px per pixel. Else None.

    On a small slide (a biopsy, a 1024² crop) the edge band is most of the slide and the
    blocks' halos overlap, so block reads decode about 1.6× the slide's pixels in several
    calls: 100 ms of a 150 ms mask on a 1024² slide without a pyramid. A block is then cut
    at the pixel nearest its own read's level-0 origin: the same pixels up to half a fine
    pixel of origin and the resampling filter at the block's outer halo (context only).
    """
    step = fine_mpp / float(slide.mpp)  # level-0 px per fine px
    # The origin a whole number of fine px before 0, so that block origins (whole numbers
    # of coarse px = factor fine px) fall on this image's pixel grid.
    pad = int(math.ceil((_HALO * max(coarse_px) + 1) / step))
    origin = int(round(-pad * step))
    side = int(math.ceil(max(slide.dimensions) / step)) + 2 * pad + 1
    scale = 1.0 if level.exact else float(level.scale)
    if int(round(side * scale)) ** 2 > min(blocks_read_px, _WHOLE_MAX_READ_PX):
        return None
    return (
        np.asarray(slide.read_regions_at_mpp([(origin, origin)], side, fine_mpp)[0]),
        origin,
        step,
    )


def _blocks(band: np.ndarray) -> list[tuple[int, int]]:
    """Top-left coarse pixel of each block holding band pixels, most band pixels first
    (then row-major: deterministic), so a capped refinement does the busiest edges."""
    h, w = band.shape
    rows, cols = math.ceil(h / _BLOCK), math.ceil(w / _BLOCK)
    padded = np.zeros((rows * _BLOCK, cols * _BLOCK), bool)
    padded[:h, :w] = band
    counts = padded.reshape(rows, _BLOCK, cols, _BLOCK).sum(axis=(1, 3))
    order = np.lexsort((np.arange(counts.size), -counts.ravel()))
    return [
        (int(i // cols) * _BLOCK, int(i % cols) * _BLOCK) for i in order if counts.ravel()[i] > 0
    ]


def _upsample(mask: Array, factor: int, xp: ModuleType) -> Array:
    return xp.repeat(xp.repeat(mask, factor, axis=0), factor, axis=1)


def _window(
    corner: tuple[int, int], factor: int, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The block at ``corner`` with its halo, clipped to the coarse grid of ``shape``: its
    coarse rows and columns, and the same window in the block read's fine pixels (the
    read starts ``_HALO`` coarse pixels before the corner)."""
    r0, c0 = corner
    h, w = shape
    gr0, gc0 = max(r0 - _HALO, 0), max(c0 - _HALO, 0)
    gr1, gc1 = min(r0 + _BLOCK + _HALO, h), min(c0 + _BLOCK + _HALO, w)
    fr0, fc0 = (gr0 - (r0 - _HALO)) * factor, (gc0 - (c0 - _HALO)) * factor
    fr1, fc1 = fr0 + (gr1 - gr0) * factor, fc0 + (gc1 - gc0) * factor
    return (slice(gr0, gr1), slice(gc0, gc1)), (slice(fr0, fr1), slice(fc0, fc1))


def _refine_block(
    signal: Array,
    corner: tuple[int, int],
    coarse_window: tuple[slice, slice],
    factor: int,
    fine: Array,
    background: Array,
    excluded: Array,
    fine_interior: Array,
    fine_band: Array,
    coarse: TissueMask,
    fine_mpp: float,
    xp: ModuleType,
) -> None:
    """Re-decide the band pixels of one block (in place in ``fine`` and ``background``)
    from ``signal``, the OD signal of its window (:func:`_window`)."""
    config = coarse.config
    r0, c0 = corner
    h, w = coarse.mask.shape
    rows, cols = coarse_window
    gr0, gc0 = rows.start, cols.start
    detected = signal >= np.float32(coarse.thresholds.detect)
    window = (
        slice(rows.start * factor, rows.stop * factor),
        slice(cols.start * factor, cols.stop * factor),
    )
    inner = fine_interior[window]
    candidates = (detected & ~excluded[window]) | inner
    candidates = _clean(candidates, fine_mpp, config, xp)
    # The edge where a pixel is about half covered, as the coarse mask places it: the
    # detection threshold alone puts it where the section's blur fades into glass.
    candidates = (
        _morph.place_edges(
            candidates, signal, fine_mpp, config.edge_fraction, config.edge_window_um, xp
        )
        | inner
    )
    # Only the block's core band pixels take the fine answer; the halo is context.
    core = xp.zeros(candidates.shape, dtype=bool)
    core[
        (r0 - gr0) * factor : (min(r0 + _BLOCK, h) - gr0) * factor,
        (c0 - gc0) * factor : (min(c0 + _BLOCK, w) - gc0) * factor,
    ] = True
    take = core & fine_band[window]
    fine[window] = xp.where(take, candidates, fine[window])
    background[window] = xp.where(take, ~detected, background[window])


def _clean(mask: Array, mpp: float, config: Any, xp: ModuleType) -> Array:
    # The coarse closing (16 µm) would bridge the bays a fine edge should follow; the
    # interior is already solid (seeded from the coarse mask), so a light closing only
    # smooths the fine pixels' noise.
    pixel_area = mpp * mpp
    mask = _morph.binary_close(mask, _morph.radius_px(config.refine_closing_um, mpp), xp)
    mask = _morph.fill_small_holes(mask, config.min_hole_area_um2 / pixel_area, xp)
    return _morph.open_by_reconstruction(mask, _morph.radius_px(config.opening_radius_um, mpp), xp)

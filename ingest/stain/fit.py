"""Fit stain parameters once per slide from tissue sampled across the whole slide.

The tissue mask comes from the caller (the tissue-detection stage) at a known µm/px, so
this module depends on no particular detector. Tiles are drawn from the mask's tissue
cells anywhere on the slide (seeded, so a refit gives the same params), read at the
resolution the slide will be normalized at, and pooled into one fit: a region that is
faint, over-stained or nearly empty cannot dominate the estimate as it does per tile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.arrays import array_module
from infra.errors import ConfigError
from infra.ids import validate_slide_id
from infra.validate import at_least, choice
from ingest.stain._errors import StainFitError
from ingest.stain.macenko import MIN_STAIN_ANGLE_DEG, fit_macenko
from ingest.stain.params import STANDARD_REFERENCE_ID, Method, StainParams
from ingest.stain.reinhard import fit_reinhard

if TYPE_CHECKING:  # reading slides pulls in the reader backends; fitting from arrays does not
    from ingest.slides import Slide
    from ingest.slides.slide import Resample

__all__ = ["FitConfig", "fit_slide", "fit_tiles", "sample_tissue_locations"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """How to fit. ``reference_id`` names the target the params are for (default: the
    published H&E reference); ``max_pixels`` bounds memory by seeded subsampling."""

    method: Method = "macenko"
    reference_id: str = STANDARD_REFERENCE_ID
    io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    max_pixels: int = 1 << 22
    seed: int = 0
    min_stain_angle_deg: float = MIN_STAIN_ANGLE_DEG
    tissue_only: bool = True  # Reinhard: statistics of tissue pixels only

    def __post_init__(self) -> None:
        choice("FitConfig.method", self.method, Method)
        at_least("FitConfig.max_pixels", self.max_pixels, 1000)


def fit_tiles(
    tiles: Any, config: FitConfig | None = None, *, fitted_from: str = "tiles"
) -> StainParams:
    """Fit on uint8 RGB pixels of any shape ``(..., 3)``: tiles, one image, or a pixel list."""
    config = config or FitConfig()
    xp = array_module(tiles)
    if tiles.dtype != np.uint8 or tiles.shape[-1] != 3:
        raise ConfigError(f"expected uint8 RGB (..., 3), got {tiles.dtype} {tiles.shape}")
    pixels = tiles.reshape(-1, 3)
    if pixels.shape[0] > config.max_pixels:
        # Seeded on the host, so CPU and GPU fits see the same pixels.
        keep = np.random.default_rng(config.seed).choice(
            pixels.shape[0], config.max_pixels, replace=False
        )
        pixels = pixels[xp.asarray(np.sort(keep))]
    if config.method == "macenko":
        return fit_macenko(
            pixels,
            reference_id=config.reference_id,
            io=config.io,
            alpha=config.alpha,
            beta=config.beta,
            fitted_from=fitted_from,
            min_stain_angle_deg=config.min_stain_angle_deg,
        )
    return fit_reinhard(
        pixels,
        reference_id=config.reference_id,
        io=config.io,
        beta=config.beta,
        tissue_only=config.tissue_only,
        fitted_from=fitted_from,
    )


def sample_tissue_locations(
    tissue_mask: np.ndarray,
    mask_mpp: float,
    *,
    slide_dimensions: tuple[int, int],
    slide_mpp: float,
    tile_size: int,
    mpp: float,
    n_tiles: int,
    min_tissue: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """(K ≤ n_tiles, 2) level-0 (x, y) of tiles on a grid at ``mpp`` that hold tissue.

    A grid cell qualifies when at least ``min_tissue`` of its mask area is tissue; when no
    cell does (small or fragmented tissue), the cells with the most tissue are used.
    Raises :class:`StainFitError` when the mask has no tissue under any cell.
    """
    mask = _check_mask(tissue_mask, mask_mpp, slide_dimensions, slide_mpp)
    step = tile_size * mpp / slide_mpp  # tile footprint in level-0 pixels
    cols, rows = (max(1, int(d // step)) for d in slide_dimensions)
    xs, ys = np.arange(cols) * step, np.arange(rows) * step
    cover = _cell_coverage(
        mask, xs * slide_mpp / mask_mpp, ys * slide_mpp / mask_mpp, step * slide_mpp / mask_mpp
    )
    order = np.flatnonzero(cover.ravel() >= min_tissue)
    if order.size == 0:
        ranked = np.argsort(-cover.ravel(), kind="stable")
        order = ranked[cover.ravel()[ranked] > 0][:n_tiles]
        if order.size == 0:
            raise StainFitError("the tissue mask holds no tissue: nothing to fit stains on")
        log.info(
            "no cell has %.0f%% tissue; using the %d cells with the most",
            100 * min_tissue,
            order.size,
        )
    if order.size > n_tiles:
        order = np.random.default_rng(seed).choice(order, n_tiles, replace=False)
    order = np.sort(order)  # row-major: reads sweep the slide once
    r, c = np.divmod(order, cols)
    return np.stack([np.round(xs[c]), np.round(ys[r])], axis=1).astype(np.int64)


def fit_slide(
    slide: Slide,
    tissue_mask: np.ndarray,
    mask_mpp: float,
    *,
    mpp: float | None = None,
    tile_size: int = 256,
    n_tiles: int = 64,
    min_tissue: float = 0.5,
    config: FitConfig | None = None,
    slide_id: str | None = None,
    resample: Resample = "area",
) -> StainParams:
    """Fit ``slide``'s stain params from up to ``n_tiles`` tissue tiles read at ``mpp``.

    ``mpp`` should be the resolution tiles will be normalized at (default: level 0), since
    maximum concentrations depend on it (nuclei blur out at coarse resolutions), and
    ``resample`` the way those tiles are brought to ``mpp`` (the same reason).
    """
    config = config or FitConfig()
    mpp = slide.mpp if mpp is None else mpp
    locations = sample_tissue_locations(
        tissue_mask,
        mask_mpp,
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        tile_size=tile_size,
        mpp=mpp,
        n_tiles=n_tiles,
        min_tissue=min_tissue,
        seed=config.seed,
    )
    tiles = slide.read_regions_at_mpp(locations, tile_size, mpp, resample=resample)
    source = f"slide:{validate_slide_id(slide_id)}" if slide_id else "slide"
    params = fit_tiles(tiles, config, fitted_from=source)
    log.info("fitted %s stain params on %d tiles of %s", config.method, len(tiles), slide.name)
    return params


def _check_mask(mask: Any, mask_mpp: float, dims: tuple[int, int], slide_mpp: float) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ConfigError(f"tissue mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
    if not mask_mpp > 0:
        raise ConfigError(f"mask_mpp must be > 0, got {mask_mpp}")
    expected = np.array([dims[1], dims[0]]) * slide_mpp / mask_mpp
    # Thumbnails round each side; anything further off is a mask of another slide or mpp.
    if (np.abs(np.array(mask.shape) - expected) > 2 + 0.02 * expected).any():
        raise ConfigError(
            f"tissue mask {mask.shape} does not cover a {dims[0]}x{dims[1]} slide at "
            f"{mask_mpp} µm/px (expected about {expected.round(1).tolist()})"
        )
    return mask


def _cell_coverage(mask: np.ndarray, x0: np.ndarray, y0: np.ndarray, size: float) -> np.ndarray:
    """Tissue share of each grid cell, from an integral image of the mask."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)

    def bounds(start: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.clip(np.floor(start).astype(np.int64), 0, limit - 1)
        hi = np.clip(np.ceil(start + size).astype(np.int64), lo + 1, limit)  # ≥ 1 mask pixel
        return lo, hi

    c0, c1 = bounds(x0, mask.shape[1])
    r0, r1 = bounds(y0, mask.shape[0])
    total = integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return total / area

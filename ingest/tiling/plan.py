"""Tile planning: which tiles of a slide to read, where, at which level and size.

The plan is computed from the slide's geometry and its tissue mask only: no pixels
beyond the thumbnail are read, so planning a 100k² slide costs about as much as its
thumbnail. Tiles sit on a regular grid *in pixels of the level they are read from*:

* the level is the one :meth:`Slide.best_level` picks for ``target_mpp`` (never
  upsampling), and ``read_size`` the footprint :meth:`Slide.read_regions_at_mpp` reads
  there (``tile_size`` when the level matches, larger when it will be downsampled);
* the stride is ``read_size × (1 − overlap)`` level pixels, and a tile's level-0
  ``(x, y)`` is its level pixel times the level's downsample, rounded: exactly the
  coordinate that maps back to that level pixel, so ``read_regions_at_mpp(x, y)`` reads
  the planned footprint to the pixel;
* only tiles entirely inside the slide are planned;
* with ``config.region``, only tiles covered enough by the slide's annotated region
  (:mod:`ingest.tiling.region`; needs ``slide_id``).

Same inputs, same table: the grid, the order (row-major) and the schema metadata are
functions of the inputs alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from infra.errors import ConfigError
from ingest.slides.geometry import DEFAULT_TOLERANCE, LevelChoice, choose_level
from ingest.tiling._coverage import box_fractions
from ingest.tiling.config import TilingConfig
from ingest.tissue.qc import qc_flags

if TYPE_CHECKING:
    from infra.arrays import Device
    from ingest.slides import Slide
    from ingest.tissue.config import TissueConfig
    from ingest.tissue.mask import TissueMask

__all__ = [
    "TILE_PLAN_SCHEMA",
    "PlanStatus",
    "SlideGeometry",
    "TilePlan",
    "plan_slide",
    "plan_tiles",
]

log = logging.getLogger(__name__)

PlanStatus = Literal[
    "ok", "no_tissue", "smaller_than_tile", "no_tiles_above_threshold", "no_tiles_in_region"
]

TILE_PLAN_SCHEMA = pa.schema(
    [
        pa.field("x", pa.int64(), nullable=False),  # level-0 top-left
        pa.field("y", pa.int64(), nullable=False),
        pa.field("level", pa.int32(), nullable=False),
        pa.field("read_size", pa.int32(), nullable=False),  # pixels read at ``level``
        pa.field("tile_size", pa.int32(), nullable=False),  # pixels delivered at target_mpp
        pa.field("target_mpp", pa.float64(), nullable=False),
        pa.field("tissue_fraction", pa.float32(), nullable=False),
        pa.field("pen_fraction", pa.float32(), nullable=False),
        pa.field("background_fraction", pa.float32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),  # grid position (embedding grids)
        pa.field("col", pa.int32(), nullable=False),
        pa.field("qc_flags", pa.int32(), nullable=False),  # ingest.tissue.qc QC_* bits
    ]
)
_META_KEY = b"slidebank.tile_plan"


@dataclass(frozen=True)
class SlideGeometry:
    """What planning needs to know about a slide (no pixels, no file handle)."""

    width: int
    height: int
    mpp: float
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    @classmethod
    def from_slide(cls, slide: Slide) -> SlideGeometry:
        """Raises MissingMPPError when the slide has no MPP (never a default)."""
        width, height = slide.dimensions
        return cls(
            int(width),
            int(height),
            float(slide.mpp),
            tuple((int(w), int(h)) for w, h in slide.level_dimensions),
            tuple(float(d) for d in slide.level_downsamples),
        )

    def best_level(self, target_mpp: float) -> LevelChoice:
        # Same rule and tolerance as Slide.best_level, so the plan and the reader agree.
        return choose_level(
            [self.mpp * d for d in self.level_downsamples], target_mpp, DEFAULT_TOLERANCE
        )


@dataclass(frozen=True)
class TilePlan:
    """The planned tiles (an Arrow table, row-major) and how the grid was laid out."""

    table: pa.Table
    status: PlanStatus
    level: int
    read_size: int
    stride: int  # level pixels between neighbouring tiles
    grid_shape: tuple[int, int]  # rows, cols of the full grid (kept or not)
    footprint_level0: float  # tile side in level-0 pixels
    config: TilingConfig
    tissue_config_hash: str

    @property
    def tile_count(self) -> int:
        return self.table.num_rows

    def summary(self) -> dict[str, Any]:
        flags = self.table.column("qc_flags").to_numpy() if self.tile_count else np.zeros(0)
        return {
            "status": self.status,
            "tile_count": self.tile_count,
            "tiles_flagged": int(np.count_nonzero(flags)),
            "level": self.level,
            "read_size": self.read_size,
            "tile_size": self.config.tile_size,
            "target_mpp": self.config.target_mpp,
            "stride_level_px": self.stride,
            "grid_shape": list(self.grid_shape),
            "tiling_config_hash": self.config.config_hash(),
            "tissue_config_hash": self.tissue_config_hash,
        }


def _axis_positions(level_extent: int, read: int, stride: int) -> np.ndarray:
    """Level-pixel starts of tiles that fit entirely within ``level_extent``."""
    if level_extent < read:
        return np.zeros(0, np.int64)
    return np.arange(0, level_extent - read + 1, stride, dtype=np.int64)


def plan_tiles(
    geometry: SlideGeometry, tissue: TissueMask, config: TilingConfig, slide_id: str | None = None
) -> TilePlan:
    """Tiles of ``config`` over ``tissue`` (a mask covering the whole slide)."""
    choice = geometry.best_level(config.target_mpp)
    read = config.tile_size if choice.exact else int(round(config.tile_size * choice.scale))
    stride = max(1, int(round(read * (1 - config.overlap))))
    ds = geometry.level_downsamples[choice.level]
    lw, lh = geometry.level_dimensions[choice.level]
    lx, ly = _axis_positions(lw, read, stride), _axis_positions(lh, read, stride)
    x0, y0 = np.rint(lx * ds).astype(np.int64), np.rint(ly * ds).astype(np.int64)
    footprint = read * ds
    mh, mw = tissue.mask.shape
    if mh == 0 or mw == 0:
        raise ConfigError("tissue mask is empty (0 pixels)")
    # Level-0 pixels per mask pixel, per axis: the mask spans the whole slide.
    sx, sy = geometry.width / mw, geometry.height / mh

    def coverage(mask: np.ndarray) -> np.ndarray:
        return box_fractions(mask, x0 / sx, y0 / sy, footprint / sx, footprint / sy)

    tissue_frac = coverage(tissue.mask)
    keep = (tissue_frac >= config.min_tissue_fraction) & (tissue_frac > 0)
    on_tissue = bool(keep.any())
    keep = _in_region(keep, geometry, config, slide_id, x0, y0, footprint)
    rows, cols = np.nonzero(keep)  # row-major: deterministic order
    n = rows.size
    # Most slides carry no ink: their pen coverage is zero without a pass over the mask.
    pen_frac = coverage(tissue.pen)[rows, cols] if rows.size and tissue.pen.any() else np.zeros(n)
    bg_frac = coverage(tissue.background)[rows, cols] if rows.size else np.zeros(0)
    columns: dict[str, np.ndarray] = {
        "x": x0[cols],
        "y": y0[rows],
        "level": np.full(n, choice.level, np.int32),
        "read_size": np.full(n, read, np.int32),
        "tile_size": np.full(n, config.tile_size, np.int32),
        "target_mpp": np.full(n, float(config.target_mpp), np.float64),
        "tissue_fraction": tissue_frac[rows, cols].astype(np.float32),
        "pen_fraction": pen_frac.astype(np.float32),
        "background_fraction": bg_frac.astype(np.float32),
        "row": rows.astype(np.int32),
        "col": cols.astype(np.int32),
        "qc_flags": qc_flags(bg_frac, pen_frac, config.qc),
    }
    status = _status(lx.size * ly.size, tissue, n, on_tissue and config.region is not None)
    meta = {
        "status": status,
        "tiling_config": config.to_dict(),
        "tiling_config_hash": config.config_hash(),
        "tissue_config_hash": tissue.config.config_hash(),
        "slide_mpp": geometry.mpp,
        "level_mpp": choice.level_mpp,
        "scale": choice.scale,
        "footprint_level0": footprint,
        "stride_level_px": stride,
        "grid_shape": [int(ly.size), int(lx.size)],
    }
    schema = TILE_PLAN_SCHEMA.with_metadata({_META_KEY: json.dumps(meta, sort_keys=True)})
    table = pa.Table.from_arrays(
        [_column(columns[f.name], f.type) for f in TILE_PLAN_SCHEMA], schema=schema
    )
    if status != "ok":
        log.info("tile plan: %s (grid %dx%d)", status, ly.size, lx.size)
    return TilePlan(
        table,
        status,
        choice.level,
        read,
        stride,
        (int(ly.size), int(lx.size)),
        footprint,
        config,
        tissue.config.config_hash(),
    )


_NUMPY_TYPES = {
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def _column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    # Built from the NumPy buffer directly: pa.array() would first import pandas to
    # check for pandas objects, a one-off second in a fresh worker.
    data = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[type_])
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(data)])


def _in_region(
    keep: np.ndarray,
    geometry: SlideGeometry,
    config: TilingConfig,
    slide_id: str | None,
    x0: np.ndarray,
    y0: np.ndarray,
    footprint: float,
) -> np.ndarray:
    """``keep`` narrowed to the region's tiles (only the tissue tiles are tested)."""
    from ingest.tiling.region import region_keep

    if config.region is None:
        return keep
    rows, cols = np.nonzero(keep)
    inside = region_keep(
        config.region, slide_id, (geometry.width, geometry.height), x0[cols], y0[rows], footprint
    )
    out = np.zeros_like(keep)
    out[rows, cols] = inside
    return out


def _status(
    grid_tiles: int, tissue: TissueMask, kept: int, region_only: bool = False
) -> PlanStatus:
    if grid_tiles == 0:
        return "smaller_than_tile"
    if not tissue.mask.any():
        return "no_tissue"
    if kept:
        return "ok"
    return "no_tiles_in_region" if region_only else "no_tiles_above_threshold"


def plan_slide(
    slide: Slide,
    tissue_config: TissueConfig | None = None,
    tiling_config: TilingConfig | None = None,
    device: Device = "auto",
    slide_id: str | None = None,
) -> tuple[TissueMask, TilePlan]:
    """Tissue mask and tile plan of an open slide, from its thumbnail alone.

    ``slide_id`` names the slide's annotation file when the tiling is restricted to a
    region; without it, the id a glob ingest derives from the file name is used.
    """
    from infra.ids import slide_id_from_uri
    from ingest.tissue.mask import slide_tissue_mask

    geometry = SlideGeometry.from_slide(slide)  # MissingMPPError before any read
    tiling_config = tiling_config or TilingConfig()
    if tiling_config.region is not None and slide_id is None:
        slide_id = slide_id_from_uri(slide.metadata.uri)
    tissue = slide_tissue_mask(slide, tissue_config, device)
    return tissue, plan_tiles(geometry, tissue, tiling_config, slide_id)

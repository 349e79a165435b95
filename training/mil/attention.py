"""Attention back into the store: a Zarr heatmap per slide, a per-tile table, a PNG overlay.

The heatmap has one pixel per tile on the tiling grid (``grid_from_coords``), so its
mpp is the slide's level-0 mpp times the tile stride. The per-tile values also go to the
store's derived table ``attention/<name>`` (slide_id, x, y, attention; read back with
``store.derived("attention", name)``), written through the store so a rewrite of a
slide replaces its rows and ``delete_slide`` and ``cleanup`` cover them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "attention_grid",
    "attention_mass",
    "render_overlay",
    "top_bottom_tiles",
    "write_attention",
    "write_tile_heatmap",
]

log = logging.getLogger(__name__)


def attention_grid(
    coords: np.ndarray, attention: np.ndarray, tile_size: int
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(grid with NaN where no tile, stride in level-0 px, origin (x0, y0))."""
    from features.store.arrays import grid_from_coords

    coords = np.asarray(coords).reshape(-1, 2)
    attention = np.asarray(attention, dtype=np.float32).reshape(-1)
    if len(coords) != len(attention):
        raise ConfigError(f"{len(coords)} coordinates but {len(attention)} attention values")
    rows, cols, stride, origin, shape = grid_from_coords(coords, tile_size)
    grid = np.full(shape, np.nan, np.float32)
    grid[rows, cols] = attention
    return grid, stride, origin


def attention_mass(coords: np.ndarray, attention: np.ndarray, planted: np.ndarray) -> float:
    """Fraction of the attention on tiles whose (x, y) are in ``planted``."""
    wanted = {tuple(map(int, c)) for c in np.asarray(planted).reshape(-1, 2)}
    hit = np.array([tuple(map(int, c)) in wanted for c in np.asarray(coords).reshape(-1, 2)])
    total = float(np.sum(attention))
    return float(np.sum(np.asarray(attention)[hit]) / total) if total > 0 else 0.0


def top_bottom_tiles(
    coords: np.ndarray, attention: np.ndarray, k: int = 8
) -> dict[str, list[dict[str, Any]]]:
    """The k most- and least-attended tiles as {x, y, attention}, for review panels."""
    attention = np.asarray(attention).reshape(-1)
    order = np.argsort(-attention, kind="stable")

    def rows(idx: np.ndarray) -> list[dict[str, Any]]:
        return [
            {"x": int(coords[i][0]), "y": int(coords[i][1]), "attention": float(attention[i])}
            for i in idx
        ]

    k = min(k, len(order))
    return {"top": rows(order[:k]), "bottom": rows(order[::-1][:k])}


def slide_mpp(store: FeatureStore, slide_id: str) -> float:
    """The slide's level-0 microns per pixel as the store recorded it."""
    table = store.slides(slide_ids=[slide_id], columns=["mpp"])
    values = [v for v in table.column("mpp").to_pylist() if v] if table.num_rows else []
    if not values:
        raise ConfigError(f"slide {slide_id!r} has no mpp in the store; cannot place its heatmap")
    return float(values[0])


def write_tile_heatmap(
    store: FeatureStore,
    slide_id: str,
    name: str,
    coords: np.ndarray,
    values: np.ndarray,
    *,
    tile_size: int = 256,
) -> dict[str, Any]:
    """Per-tile values as the Zarr map ``heatmaps/<name>`` (one pixel per tile; NaN: no tile)."""
    grid, stride, origin = attention_grid(coords, values, tile_size)
    mpp = slide_mpp(store, slide_id) * stride
    store.arrays(slide_id).write_heatmap(name, grid, mpp=mpp)
    return {"heatmap": f"heatmaps/{name}", "stride": stride, "origin": origin, "mpp": mpp}


def write_attention(
    store: FeatureStore,
    slide_id: str,
    coords: np.ndarray,
    attention: np.ndarray,
    *,
    name: str,
    tile_size: int = 256,
) -> dict[str, Any]:
    """Write the heatmap ``heatmaps/<name>`` and replace the slide's rows in the store's
    ``attention/<name>`` table."""
    out = write_tile_heatmap(store, slide_id, name, coords, attention, tile_size=tile_size)
    written = store.write_tile_values("attention", name, slide_id, coords, attention)
    return {**out, "table": written.table.uri}


def render_overlay(
    store: FeatureStore,
    slide_id: str,
    name: str,
    path: str | Path,
    *,
    origin: tuple[int, int],
    stride: int,
    level0_size: tuple[int, int] | None = None,
    alpha: float = 0.6,
    model: str | None = None,
) -> Path:
    """The heatmap ``heatmaps/<name>`` over the slide thumbnail as a PNG fit for a talk:
    axes in mm, a colour bar stating the range (near-uniform attention is called so and
    not stretched), a scale bar and a title naming the model and the slide."""
    from training.figures import draw_tile_map

    arrays = store.arrays(slide_id)
    thumb = np.asarray(arrays.read_image("thumbnail"))
    heat = np.asarray(arrays.read_image(f"heatmaps/{name}"), dtype=np.float32)
    if level0_size is None:
        table = store.slides(slide_ids=[slide_id], columns=["level_dimensions"])
        dims = table.column("level_dimensions")[0].as_py() if table.num_rows else None
        if not dims:
            raise ConfigError(f"slide {slide_id!r} has no level dimensions to place the heatmap")
        level0_size = (int(dims[0][0]), int(dims[0][1]))
    who = f"{model} attention" if model else "attention"
    return draw_tile_map(
        thumb,
        heat,
        path,
        level0_size=level0_size,
        mpp=slide_mpp(store, slide_id),
        origin=origin,
        stride=stride,
        title=f"{slide_id}: {who} (run {name})",
        label=f"{who} per tile",
        alpha=alpha,
    )

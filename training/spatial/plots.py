"""Module maps a pathologist can read: one colour per tissue module, a legend with each
module's share of the slide, and a scale bar in millimetres. Drawn with Pillow from the
module map stored in the slide's Zarr group (``heatmaps/modules-<hash>``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.errors import ConfigError
from training.spatial.modules import ModuleCodebook

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["PALETTE", "apply_modules", "render_module_map"]

# Colour-blind-safe qualitative palette (Okabe-Ito, then Tol's muted).
PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (0, 0, 0),
    (51, 34, 136),
    (136, 204, 238),
    (68, 170, 153),
    (17, 119, 51),
    (153, 153, 51),
    (221, 204, 119),
    (204, 102, 119),
    (136, 34, 85),
]


def apply_modules(
    store: FeatureStore,
    codebook: ModuleCodebook,
    codebook_hash: str,
    slide_ids: Sequence[str],
    *,
    encoder: str | None = None,
) -> dict[str, np.ndarray]:
    """Assign every tile of ``slide_ids`` to its module and write the assignments (table +
    Zarr map) into the store; returns {slide: module counts}."""
    from training.spatial.graphs import grid_edges
    from training.spatial.modules import smooth_embeddings
    from training.spatial.store_io import write_module_assignments

    counts = {}
    for bag in store.iter_bags(list(slide_ids), encoder=encoder):
        emb = np.asarray(bag.embeddings, np.float32)
        if emb.shape[1] != codebook.dim:
            raise ConfigError(
                f"slide {bag.slide_id!r}: embeddings are {emb.shape[1]}-d, codebook {codebook.dim}-d"
            )
        if codebook.spec.smooth > 0:
            emb = smooth_embeddings(emb, *grid_edges(bag.coords), codebook.spec.smooth)
        modules = codebook.assign(emb)
        write_module_assignments(store, codebook_hash, bag.slide_id, bag.coords, modules)
        counts[bag.slide_id] = np.bincount(modules, minlength=codebook.k)
    return counts


def _scale_bar_mm(width_um: float) -> float:
    """A round length (mm) about a fifth of the image width."""
    target = width_um / 5 / 1000
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20):
        if step >= target:
            return step
    return 50.0


def _tissue_under(
    store: FeatureStore,
    slide_id: str,
    codebook_hash: str,
    um_per_cell: float,
    shape: tuple[int, ...],
    size: tuple[int, int],
) -> Any:
    """The thumbnail region under the module map, resized to it (None without a thumbnail)."""
    from PIL import Image

    try:
        thumb = np.asarray(store.arrays(slide_id).read_image("thumbnail"))
        rows = store.derived("modules", codebook_hash, slide_ids=[slide_id], columns=["x", "y"])
        info = store.slides(slide_ids=[slide_id], columns=["mpp", "level_dimensions"]).to_pylist()[
            0
        ]
    except (KeyError, IndexError, FileNotFoundError, OSError, ValueError):
        return None
    if not rows.num_rows or not info.get("mpp") or not info.get("level_dimensions"):
        return None
    scale = thumb.shape[1] / info["level_dimensions"][0][0]  # thumbnail px per level-0 px
    cell = um_per_cell / float(info["mpp"]) * scale  # thumbnail px per map cell
    x0 = min(rows.column("x").to_pylist()) * scale
    y0 = min(rows.column("y").to_pylist()) * scale
    box = (x0, y0, x0 + shape[1] * cell, y0 + shape[0] * cell)
    return Image.fromarray(thumb[..., :3].astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR, box=box
    )


def render_module_map(
    store: FeatureStore,
    slide_id: str,
    codebook_hash: str,
    path: str | Path,
    *,
    names: Mapping[int, str] | None = None,
    px_per_tile: int = 12,
) -> Path:
    """PNG of the slide's module map over its thumbnail (when the store has one), with a
    legend and a scale bar, about 800 px wide (atomic write)."""
    from PIL import Image, ImageDraw

    from training.figures import save_png

    arrays = store.arrays(slide_id)
    try:
        grid = np.asarray(arrays.read_image(f"heatmaps/modules-{codebook_hash}"), dtype=np.float32)
        um_per_cell = float(
            arrays.ome_metadata(f"heatmaps/modules-{codebook_hash}")["multiscales"][0]["datasets"][
                0
            ]["coordinateTransformations"][0]["scale"][-1]
        )
    except (KeyError, IndexError, FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"slide {slide_id!r} has no module map for codebook {codebook_hash!r}: {exc}"
        ) from exc
    finite = np.isfinite(grid)
    modules = grid[finite].astype(int)
    present = np.unique(modules)
    h, w = grid.shape
    px_per_tile = max(px_per_tile, -(-800 // max(w, 1)))  # a map ~800 px wide, readable on a slide
    legend_w, margin = 190, 10
    img = Image.new(
        "RGB",
        (
            w * px_per_tile + legend_w + 2 * margin,
            max(h * px_per_tile, 30 + 18 * len(present)) + 50,
        ),
        "white",
    )
    draw = ImageDraw.Draw(img)
    rgb = np.full((h, w, 3), 245, np.uint8)
    colours = np.array(
        PALETTE * (1 + int(grid[finite].max(initial=0)) // len(PALETTE) + 1), np.uint8
    )
    rgb[finite] = colours[modules]
    tiles = Image.fromarray(rgb).resize(
        (w * px_per_tile, h * px_per_tile), Image.Resampling.NEAREST
    )
    tissue = _tissue_under(store, slide_id, codebook_hash, um_per_cell, grid.shape, tiles.size)
    if tissue is not None:  # modules over the H&E; tiles with no module show the tissue plain
        cover = Image.fromarray((finite * 150).astype(np.uint8)).resize(
            tiles.size, Image.Resampling.NEAREST
        )
        tiles = Image.composite(tiles, tissue, cover)
    img.paste(tiles, (margin, margin))
    x0 = margin * 2 + w * px_per_tile
    draw.text((x0, margin), "tissue modules (share)", fill="black")
    total = max(len(modules), 1)
    for i, m in enumerate(present):
        y = margin + 18 + 18 * i
        draw.rectangle(
            [x0, y, x0 + 12, y + 12], fill=tuple(int(c) for c in colours[m]), outline="black"
        )
        label = (names or {}).get(int(m), f"module {int(m)}")
        draw.text(
            (x0 + 18, y), f"{label} ({np.mean(modules == m):.0%})" if total else label, fill="black"
        )
    # scale bar under the map
    mm = _scale_bar_mm(w * um_per_cell)
    bar_px = int(round(mm * 1000 / um_per_cell * px_per_tile))
    y = margin + h * px_per_tile + 18
    draw.rectangle([margin, y, margin + bar_px, y + 5], fill="black")
    draw.text((margin + bar_px + 6, y - 4), f"{mm:g} mm", fill="black")
    return save_png(img, path)

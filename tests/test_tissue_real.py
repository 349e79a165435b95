"""The real Aperio sample (H&E skin, CMU-1 region): the mask covers the tissue, not the glass.

Sanity figures measured on ../shared/data/cmu_small_region.svs (2220×2967 px, 0.499 µm/px)
and checked by looking at the overlay: about 38% of the image is tissue (one large
section with a thin strand to its left), the glass around it is excluded, the teal
margin-marking dye on the right edge is recognised as ink, and 30-40 tiles of 256 px at
0.5 µm/px are at least half tissue.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ingest.slides import open_slide
from ingest.tiling import plan_slide
from ingest.tissue import (
    iou,
    mask_to_geojson,
    render_overlay,
    resample_nearest,
    saturation_otsu_mask,
    write_png,
)


def _rasterize(collection: dict, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Draw the GeoJSON polygons (level-0 pixels) back onto the mask's grid."""
    h, w = shape
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for feature in collection["features"]:
        for k, ring in enumerate(feature["geometry"]["coordinates"]):
            draw.polygon(
                [(x * w / size[0], y * h / size[1]) for x, y in ring], fill=255 if k == 0 else 0
            )
    return np.asarray(image) > 127


def test_real_slide_mask_covers_tissue_and_excludes_glass(cmu_slide, tmp_path) -> None:
    with open_slide(str(cmu_slide)) as slide:
        tissue, plan = plan_slide(slide, device="cpu")
        size = slide.dimensions
    assert tissue.status == "ok" and plan.status == "ok"
    assert 0.30 <= tissue.tissue_fraction <= 0.45
    assert 25 <= plan.tile_count <= 45
    # The edges were refined at 2 µm/px: the mask's grid is 4× the 8 µm thumbnail's.
    assert tissue.edge is not None and tissue.edge.factor == 4 and tissue.edge.blocks > 0
    assert tissue.mpp == pytest.approx(tissue.thumbnail_grid_mpp / 4)
    grey = tissue.thumbnail.astype(float).mean(axis=2)
    mask = resample_nearest(tissue.mask, grey.shape)
    assert grey[~mask].mean() > 225, "outside the mask is mostly glass"
    assert grey[mask].mean() < 190, "inside the mask is stained"
    glass = grey > 235  # bright pixels: the background, and clefts within the section
    assert (glass & ~mask).sum() > 0.9 * glass.sum()
    assert (mask & glass).sum() < 0.08 * mask.sum()
    assert tissue.pen.mean() < 0.03
    collection = mask_to_geojson(tissue.mask, tissue.mpp, size)
    assert collection["features"], "contours present"
    largest = max(collection["features"], key=lambda f: f["properties"]["area_um2"])
    assert largest["properties"]["area_um2"] > 0.9 * tissue.tissue_area_mm2 * 1e6
    # The outlines, drawn back, are the mask (up to the 8 µm simplification).
    assert iou(_rasterize(collection, tissue.mask.shape, size), tissue.mask) > 0.95
    path = write_png(tmp_path / "overlay.png", render_overlay(tissue, plan, size))
    with Image.open(path) as image:
        assert image.size[1] >= 1024
    baseline = saturation_otsu_mask(tissue.thumbnail, tissue.thumbnail_grid_mpp, device="cpu")
    assert 0.2 < baseline.mean() < 0.5  # the classic method also works on clean H&E

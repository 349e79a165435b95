"""Outputs: QuPath GeoJSON in level-0 pixels, the overlay PNG, and ``slidebank tissue``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import tifffile
from PIL import Image
from typer.testing import CliRunner

from ingest.tissue import mask_to_geojson, render_overlay, write_geojson
from slidebank.cli import app


def _shoelace(ring: list[list[float]]) -> float:
    pts = np.asarray(ring)
    return float(np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1]) / 2)


def test_geojson_rings_in_level0_pixels() -> None:
    mask = np.zeros((40, 60), bool)
    mask[10:30, 10:50] = True  # a 20×40 block with a 6×6 hole
    mask[17:23, 27:33] = False
    mask[2:5, 2:5] = True  # a second, small piece
    collection = mask_to_geojson(mask, 8.0, (600, 400), simplify_um=0)  # 10 level-0 px per pixel
    assert collection["type"] == "FeatureCollection"
    block, small = sorted(collection["features"], key=lambda f: -f["properties"]["area_um2"])
    assert block["geometry"]["type"] == "Polygon"
    assert block["properties"]["objectType"] == "annotation"
    assert block["properties"]["classification"]["name"] == "Tissue"
    outer, hole = block["geometry"]["coordinates"]
    assert outer[0] == outer[-1] and hole[0] == hole[-1], "rings are closed"
    xs, ys = np.asarray(outer)[:, 0], np.asarray(outer)[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (100, 500, 100, 300)  # pixel edges
    assert _shoelace(outer) > 0 > _shoelace(hole), "exterior and hole wind oppositely"
    # Area: 40×20 px minus the 6×6 hole; the 0.5 iso-contour cuts corners by half a pixel².
    area = abs(_shoelace(outer)) - abs(_shoelace(hole))
    assert abs(area - (800 - 36) * 100) < 0.02 * (800 - 36) * 100
    assert block["properties"]["area_um2"] == (800 - 36) * 64
    assert len(small["geometry"]["coordinates"]) == 1


def test_geojson_of_empty_mask_and_atomic_write(tmp_path: Path) -> None:
    collection = mask_to_geojson(np.zeros((5, 5), bool), 8.0, (50, 50))
    assert collection == {"type": "FeatureCollection", "features": []}
    path = write_geojson(tmp_path / "t.geojson", collection)
    assert json.loads(path.read_text()) == collection
    assert not list(tmp_path.glob(".*partial"))


def test_overlay_draws_outline_ink_and_tiles(synthetic_svs) -> None:
    from ingest.slides import open_slide
    from ingest.tiling import plan_slide

    with open_slide(str(synthetic_svs.path)) as slide:
        tissue, plan = plan_slide(slide, device="cpu")
        image = render_overlay(tissue, plan, slide.dimensions)
    assert image.dtype == np.uint8 and max(image.shape[:2]) >= 1024
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert (0, 200, 70) in colours, "mask outline drawn"
    assert (0, 170, 255) in colours or (255, 215, 0) in colours, "tile grid drawn"
    assert tissue.pen.any()


def test_cli_writes_overlay_geojson_tiles_and_summary(synthetic_svs, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["tissue", str(synthetic_svs.path), "--out", str(tmp_path), "--device", "cpu", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    folder = tmp_path / "synthetic"
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert summary["status"] == "ok" and summary["tile_count"] > 0
    assert 0 < summary["tissue_fraction"] < 1
    assert summary["tissue"]["tissue_config_hash"] == summary["plan"]["tissue_config_hash"]
    with Image.open(folder / "overlay.png") as image:
        assert image.mode == "RGB"
    geo = json.loads((folder / "tissue.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    assert pq.read_table(folder / "tiles.parquet").num_rows == summary["tile_count"]


def test_cli_on_an_empty_slide_reports_a_status(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    glass = np.clip(242 + rng.normal(0, 1.0, (700, 900, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "empty.tif"
    tifffile.imwrite(
        path,
        glass,
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    result = CliRunner().invoke(
        app, ["tissue", str(path), "--out", str(tmp_path), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "no_tissue" in result.output and " 0 tiles" in result.output
    summary = json.loads((tmp_path / "empty" / "summary.json").read_text())
    assert summary["tile_count"] == 0 and summary["status"] == "no_tissue"


def test_cli_refuses_a_slide_without_mpp(tmp_path: Path) -> None:
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    slide = write_synthetic_slide(
        tmp_path / "nompp.tif",
        SyntheticSlideSpec(
            width=512, height=512, style="tiff", mpp_metadata=False, downsamples=(1,)
        ),
    )
    result = CliRunner().invoke(app, ["tissue", str(slide.path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "MissingMPPError" in result.output
    ok = CliRunner().invoke(
        app, ["tissue", str(slide.path), "--out", str(tmp_path), "--mpp", "0.5", "--device", "cpu"]
    )
    assert ok.exit_code == 0, ok.output

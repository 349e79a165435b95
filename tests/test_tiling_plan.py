"""Tile planning: schema, grid arithmetic, agreement with the reader, statuses, no level-0 reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tifffile

from infra.errors import ConfigError, MissingMPPError
from ingest.slides import open_slide
from ingest.tiling import TILE_PLAN_SCHEMA, SlideGeometry, TilingConfig, plan_slide, plan_tiles
from ingest.tiling._coverage import box_fractions
from ingest.tissue import QC_BACKGROUND, QC_PEN, TileQCConfig, detect_tissue
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from tests._support.slides import record_reads


def _plan(path: Path, tiling: TilingConfig | None = None, **open_kw):
    with open_slide(str(path), **open_kw) as slide:
        return plan_slide(slide, tiling_config=tiling, device="cpu")


def _blank_slide(path: Path, width: int, height: int, mpp: float = 0.5) -> Path:
    """An all-glass tiled TIFF (what a scan of an empty slide looks like)."""
    rng = np.random.default_rng(1)
    glass = np.clip(241 + rng.normal(0, 1.2, (height, width, 3)), 0, 255).astype(np.uint8)
    per_cm = 1e4 / mpp
    tifffile.imwrite(
        path,
        glass,
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    return path


# ---- the table ------------------------------------------------------------------------------
def test_plan_schema_and_grid(synthetic_svs) -> None:
    tissue, plan = _plan(synthetic_svs.path)
    table = plan.table
    assert table.schema.remove_metadata() == TILE_PLAN_SCHEMA
    assert plan.status == "ok" and plan.tile_count >= 4
    assert plan.level == 0 and plan.read_size == 256 and plan.stride == 256  # 0.5 µm/px slide
    cols = table.to_pydict()
    assert min(cols["tissue_fraction"]) >= 0.5
    assert set(cols["tile_size"]) == {256} and set(cols["target_mpp"]) == {0.5}
    x, y = np.array(cols["x"]), np.array(cols["y"])
    assert np.array_equal(x, np.array(cols["col"]) * 256)
    assert np.array_equal(y, np.array(cols["row"]) * 256)
    order = np.lexsort((x, y))
    assert np.array_equal(order, np.arange(len(x))), "row-major order"
    assert (x + 256 <= 2304).all() and (y + 256 <= 1792).all(), "tiles lie inside the slide"
    assert plan.summary()["tissue_config_hash"] == tissue.config.config_hash()


def test_plan_is_deterministic(synthetic_svs) -> None:
    _, a = _plan(synthetic_svs.path)
    _, b = _plan(synthetic_svs.path)
    assert a.table.equals(b.table, check_metadata=True)


@pytest.mark.parametrize(
    ("target", "level", "read"), [(0.5, 1, 256), (0.75, 1, 384), (0.25, 0, 256)]
)
def test_plan_footprint_is_what_read_regions_at_mpp_reads(
    synthetic_tiff, monkeypatch, target, level, read
) -> None:
    """The planned level, read size and level pixel are exactly the reader's."""
    config = TilingConfig(tile_size=256, target_mpp=target, min_tissue_fraction=0.1)
    with open_slide(str(synthetic_tiff.path)) as slide:
        _, plan = plan_slide(slide, tiling_config=config, device="cpu")
        assert plan.status == "ok" and (plan.level, plan.read_size) == (level, read)
        ds = slide.level_downsamples[level]
        cols = plan.table.to_pydict()
        locations = list(zip(cols["x"], cols["y"], strict=True))[:4]
        calls: list[tuple] = []
        original = slide.read_regions

        def spy(locs, lvl, size, threads=None):
            calls.append((np.asarray(locs).tolist(), lvl, size))
            return original(locs, lvl, size, threads)

        monkeypatch.setattr(slide, "read_regions", spy)
        tiles = slide.read_regions_at_mpp(locations, 256, target)
    assert tiles.shape == (len(locations), 256, 256, 3)
    ((_, used_level, size),) = calls
    assert used_level == level and size == (read, read)
    for (x, y), row, col in zip(locations, cols["row"], cols["col"], strict=False):
        # The level pixel the reader maps (x, y) to is the planned grid position.
        assert int(round(x / ds)) == col * plan.stride
        assert int(round(y / ds)) == row * plan.stride


def test_overlap_shrinks_the_stride(synthetic_svs) -> None:
    _, plain = _plan(synthetic_svs.path)
    _, half = _plan(synthetic_svs.path, TilingConfig(overlap=0.5))
    assert half.stride == 128 and half.tile_count > 2 * plain.tile_count
    xs = np.unique(half.table.column("x").to_numpy())
    assert set(np.diff(xs)) == {128}


def test_tissue_fraction_is_exact_coverage(synthetic_svs) -> None:
    tissue, plan = _plan(synthetic_svs.path, TilingConfig(min_tissue_fraction=0.0))
    mask = tissue.mask
    sx = 2304 / mask.shape[1]
    sy = 1792 / mask.shape[0]
    # Supersample each footprint finely and compare with the planned fraction.
    t = plan.table.to_pydict()
    for i in range(0, plan.tile_count, max(1, plan.tile_count // 15)):
        xs = t["x"][i] + (np.arange(256) + 0.5)
        ys = t["y"][i] + (np.arange(256) + 0.5)
        sub = mask[np.ix_((ys / sy).astype(int), (xs / sx).astype(int))]
        assert abs(sub.mean() - t["tissue_fraction"][i]) < 1e-3


def test_box_fractions_on_known_boxes() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # left half
    fr = box_fractions(mask, np.array([0.0, 2.5, 5.0, 4.0]), np.array([0.0, 3.25]), 2.0, 2.0)
    assert np.allclose(fr, [[1.0, 1.0, 0.0, 0.5], [1.0, 1.0, 0.0, 0.5]])
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(bool)
    assert np.allclose(
        box_fractions(checker, np.array([0.0, 1.0, 0.5]), np.array([0.0]), 4.0, 4.0), 0.5
    )
    assert box_fractions(mask, np.array([]), np.array([0.0]), 1.0, 1.0).shape == (1, 0)


def test_qc_flags_from_planning(synthetic_svs) -> None:
    config = TilingConfig(
        min_tissue_fraction=0.05,
        qc=TileQCConfig(max_background_fraction=0.5, max_pen_fraction=0.01),
    )
    _, plan = _plan(synthetic_svs.path, config)
    t = plan.table.to_pydict()
    for bg, pen, flags in zip(
        t["background_fraction"], t["pen_fraction"], t["qc_flags"], strict=True
    ):
        assert bool(flags & QC_BACKGROUND) == (bg > 0.5)
        assert bool(flags & QC_PEN) == (pen > 0.01)
    assert any(f & QC_BACKGROUND for f in t["qc_flags"])


# ---- statuses, not errors --------------------------------------------------------------------
def test_all_glass_slide_gives_zero_tiles_and_a_status(tmp_path: Path) -> None:
    path = _blank_slide(tmp_path / "blank.tif", 1536, 1024)
    tissue, plan = _plan(path)
    assert tissue.status == "no_tissue" and plan.status == "no_tissue"
    assert plan.tile_count == 0 and plan.table.schema.remove_metadata() == TILE_PLAN_SCHEMA


def test_slide_smaller_than_a_tile(tmp_path: Path) -> None:
    slide = write_synthetic_slide(
        tmp_path / "small.tif",
        SyntheticSlideSpec(width=200, height=150, mpp=0.5, style="tiff", seed=3, downsamples=(1,)),
    )
    _, plan = _plan(slide.path)
    assert plan.status == "smaller_than_tile" and plan.tile_count == 0
    assert plan.grid_shape == (0, 0)


def test_no_tile_reaches_the_threshold(synthetic_svs) -> None:
    _, plan = _plan(synthetic_svs.path, TilingConfig(tile_size=1536, min_tissue_fraction=1.0))
    assert plan.status == "no_tiles_above_threshold" and plan.tile_count == 0


def test_missing_mpp_is_refused_unless_overridden(tmp_path: Path) -> None:
    slide = write_synthetic_slide(
        tmp_path / "nompp.tif",
        SyntheticSlideSpec(
            width=1024, height=768, style="tiff", seed=4, mpp_metadata=False, downsamples=(1,)
        ),
    )
    with pytest.raises(MissingMPPError):
        _plan(slide.path, require_mpp=False)
    _, plan = _plan(slide.path, mpp=0.5)
    assert plan.status in ("ok", "no_tiles_above_threshold")


def test_upsampling_is_refused(synthetic_svs) -> None:
    with pytest.raises(ConfigError):
        _plan(synthetic_svs.path, TilingConfig(target_mpp=0.25))


@pytest.mark.parametrize(
    "bad",
    [
        {"tile_size": 0},
        {"tile_size": 256.0},
        {"overlap": 1.0},
        {"min_tissue_fraction": 1.5},
        {"target_mpp": -1},
    ],
)
def test_invalid_tiling_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TilingConfig(**bad)


def test_tiling_config_hash() -> None:
    assert TilingConfig().config_hash() == TilingConfig().config_hash()
    assert TilingConfig(overlap=0.25).config_hash() != TilingConfig().config_hash()
    assert (
        TilingConfig(qc=TileQCConfig(max_pen_fraction=0.2)).config_hash()
        != TilingConfig().config_hash()
    )


# ---- planning reads the thumbnail level only --------------------------------------------------
def test_planning_reads_no_level0_pixels(synthetic_svs, monkeypatch) -> None:
    with open_slide(str(synthetic_svs.path)) as slide:
        assert slide.level_count == 2
        levels = record_reads(slide, monkeypatch).levels
        _, plan = plan_slide(slide, device="cpu")
    assert plan.tile_count > 0
    assert levels and set(levels) == {1}, f"planning read levels {sorted(set(levels))}"


def test_plan_from_geometry_alone() -> None:
    """plan_tiles needs no slide: geometry plus a mask (here: left half tissue)."""
    glass = np.full((64, 64, 3), 240, np.uint8)
    tissue = detect_tissue(glass, 8.0, device="cpu")
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    tissue = dataclasses.replace(tissue, mask=half, background=~half)
    geometry = SlideGeometry(1024, 1024, 0.5, ((1024, 1024), (256, 256)), (1.0, 4.0))
    plan = plan_tiles(geometry, tissue, TilingConfig(tile_size=128, target_mpp=0.5))
    t = plan.table.to_pydict()
    assert plan.grid_shape == (8, 8) and plan.tile_count == 32
    assert set(t["col"]) == set(range(4)) and set(t["tissue_fraction"]) == {1.0}
    coarse = plan_tiles(geometry, tissue, TilingConfig(tile_size=64, target_mpp=3.0))
    assert (coarse.level, coarse.read_size) == (1, 96)  # 2 µm/px level, ×1.5 larger read
    assert isinstance(coarse.table, pa.Table)

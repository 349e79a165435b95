"""The synthetic slide writer: deterministic, pyramidal, realistic enough, with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infra.errors import ConfigError
from ingest.slides import open_slide
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    spec = SyntheticSlideSpec(width=700, height=500, seed=5, downsamples=(1, 2), pen_marks=True)
    a = write_synthetic_slide(tmp_path / "a.svs", spec)
    b = write_synthetic_slide(tmp_path / "b.svs", spec)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert np.array_equal(a.tissue_mask, b.tissue_mask)
    c = write_synthetic_slide(
        tmp_path / "c.svs", SyntheticSlideSpec(width=700, height=500, seed=6, downsamples=(1, 2))
    )
    assert not np.array_equal(a.tissue_mask, c.tissue_mask)


def test_ground_truth_matches_pixels(synthetic_svs) -> None:
    """Tissue in the mask is stained (darker than glass); outside it, glass or ink."""
    with open_slide(str(synthetic_svs.path)) as slide:
        thumb, _ = slide.thumbnail(synthetic_svs.mask_mpp)
    mask, pen = synthetic_svs.tissue_mask, synthetic_svs.pen_mask
    h, w = min(thumb.shape[0], mask.shape[0]), min(thumb.shape[1], mask.shape[1])
    grey = thumb[:h, :w].mean(axis=2)
    tissue, glass = mask[:h, :w], ~(mask[:h, :w] | pen[:h, :w])
    assert 0.05 < tissue.mean() < 0.8
    assert grey[glass].mean() > 230 and grey[tissue].mean() < 215
    glass_rgb = thumb[:h, :w][glass].astype(float)
    chroma = np.abs(glass_rgb - glass_rgb.mean(axis=1, keepdims=True)).max(axis=1)
    # 99th percentile: pixels on the mask's edge legitimately mix glass with stain or ink.
    assert np.percentile(chroma, 99) < 6, "glass is neutral grey"
    assert pen.any(), "pen marks requested but none drawn"
    assert not (pen & mask).any(), "ground truth never counts ink as tissue"


def test_stain_colours_are_h_and_e(synthetic_svs) -> None:
    with open_slide(str(synthetic_svs.path)) as slide:
        thumb, _ = slide.thumbnail(synthetic_svs.mask_mpp)
    mask = synthetic_svs.tissue_mask[: thumb.shape[0], : thumb.shape[1]]
    r, g, b = (thumb[..., k][mask].mean() for k in range(3))
    assert r > g and b > g, "H&E tissue is pink/purple: green is absorbed most"


def test_pyramid_levels_and_artifacts(tmp_path: Path) -> None:
    spec = SyntheticSlideSpec(
        width=1536,
        height=1024,
        mpp=0.25,
        style="tiff",
        seed=2,
        blur=True,
        fold=True,
        faint=True,
        n_blobs=2,
    )
    slide = write_synthetic_slide(tmp_path / "x.tif", spec)
    assert slide.level_dimensions == ((1536, 1024),)  # < 1024 px after ×4: one level
    big = SyntheticSlideSpec(width=4096, height=1024, seed=2)
    assert big.resolved_downsamples() == (1, 4)


@pytest.mark.parametrize(
    "bad",
    [
        {"width": 10},
        {"mpp": 0.0},
        {"tile_size": 100},
        {"downsamples": (1, 2, 8)},
    ],
)
def test_invalid_specs_are_refused(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ConfigError):
        write_synthetic_slide(tmp_path / "bad.svs", SyntheticSlideSpec(**bad))
    assert not list(tmp_path.iterdir()), "nothing half-written"


@pytest.mark.slow
def test_large_slide_streams_tile_by_tile(tmp_path: Path) -> None:
    import resource

    spec = SyntheticSlideSpec(width=20_000, height=20_000, seed=3, mask_max_side=512)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    slide = write_synthetic_slide(tmp_path / "big.svs", spec)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert slide.level_dimensions[0] == (20_000, 20_000)
    assert grown_mb < 400, f"writer held {grown_mb:.0f} MB: it must not buffer the image"

"""Per-slide fitting: tissue tiles sampled across the slide from a caller's mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from infra.errors import ConfigError
from ingest.slides import open_slide
from ingest.stain import (
    FitConfig,
    StainFitError,
    StainNormalizer,
    fit_slide,
    fit_tiles,
    sample_tissue_locations,
)
from synthetic.slides.content import E_OD, H_OD
from tests._support.stain import cmu_tiles, unit


def _angle(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(unit(np.asarray(a)) @ unit(np.asarray(b)), -1, 1))))


def _mask_from_thumbnail(slide, mpp: float) -> tuple[np.ndarray, float]:
    """A stand-in for the tissue detector: stained pixels of a thumbnail."""
    thumb, thumb_mpp = slide.thumbnail(mpp)
    return thumb.min(axis=-1) < 215, thumb_mpp


def test_locations_lie_in_tissue_and_are_seeded() -> None:
    mask = np.zeros((100, 150), bool)
    mask[20:60, 30:90] = True  # at 8 µm/px on a 2400 x 1600 px slide at 0.5 µm/px
    kwargs: dict[str, Any] = {
        "slide_dimensions": (2400, 1600),
        "slide_mpp": 0.5,
        "tile_size": 128,
        "mpp": 0.5,
    }
    locs = sample_tissue_locations(mask, 8.0, n_tiles=10, **kwargs)
    assert locs.shape == (10, 2) and locs.dtype == np.int64
    cells = (locs + 64) * 0.5 / 8.0  # tile centres in mask pixels
    assert mask[cells[:, 1].astype(int), cells[:, 0].astype(int)].all()
    np.testing.assert_array_equal(locs, sample_tissue_locations(mask, 8.0, n_tiles=10, **kwargs))
    assert not np.array_equal(
        locs, sample_tissue_locations(mask, 8.0, n_tiles=10, seed=1, **kwargs)
    )
    everything = sample_tissue_locations(mask, 8.0, n_tiles=10_000, **kwargs)
    # 8-px cells at ≥ 50 % tissue: columns 32..80 (7), rows 16..56 (6, edges exactly half).
    assert len(everything) == len(np.unique(everything, axis=0)) == 7 * 6


def test_small_tissue_falls_back_to_the_best_cells() -> None:
    mask = np.zeros((100, 150), bool)
    mask[50, 70] = True  # one mask pixel: no cell is half tissue
    locs = sample_tissue_locations(
        mask, 8.0, slide_dimensions=(2400, 1600), slide_mpp=0.5, tile_size=256, mpp=0.5, n_tiles=4
    )
    assert len(locs) == 1


@pytest.mark.parametrize(
    ("mask", "error"),
    [
        (np.zeros((100, 150), bool), StainFitError),
        (np.ones((100, 150), np.uint8), ConfigError),
        (np.ones((60, 150), bool), ConfigError),  # another slide's or another mpp's mask
    ],
)
def test_bad_masks_raise(mask: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        sample_tissue_locations(
            mask,
            8.0,
            slide_dimensions=(2400, 1600),
            slide_mpp=0.5,
            tile_size=256,
            mpp=0.5,
            n_tiles=4,
        )


def test_fit_slide_on_the_real_slide(cmu_slide) -> None:
    with open_slide(str(cmu_slide)) as slide:
        mask, mask_mpp = _mask_from_thumbnail(slide, 8.0)
        params = fit_slide(slide, mask, mask_mpp, n_tiles=24, slide_id="CMU-1-small")
        again = fit_slide(slide, mask, mask_mpp, n_tiles=24, slide_id="CMU-1-small")
        coarse = fit_slide(slide, mask, mask_mpp, mpp=1.0, n_tiles=24)
    assert params.to_json() == again.to_json()  # reproducible: seeded sampling
    assert params.fitted_from == "slide:CMU-1-small"
    whole = fit_tiles(cmu_tiles(str(cmu_slide)))  # every tissue tile of the slide
    for a, b in zip(params.he_matrix.T, whole.he_matrix.T, strict=True):
        assert _angle(a, b) < 3.0
    # At 1 µm/px nuclei blur into stroma, so the extreme hematoxylin angle moves a little.
    assert _angle(coarse.he_matrix[:, 0], params.he_matrix[:, 0]) < 10.0
    tiles = cmu_tiles(str(cmu_slide))[:8]
    result = StainNormalizer(params)(tiles)
    assert not result.flagged.any()


def test_fit_slide_avoids_pen_and_finds_the_writers_stains(synthetic_svs) -> None:
    """The synthetic slide has pen marks; the ground-truth mask excludes them, so the sampled
    tiles hold H&E only and hematoxylin comes out along the writer's own vector. (Its eosin
    is pale: most stroma fails the OD ≥ beta test, so E is estimated less precisely.)"""
    with open_slide(str(synthetic_svs.path)) as slide:
        params = fit_slide(
            slide,
            synthetic_svs.tissue_mask,
            synthetic_svs.mask_mpp,
            n_tiles=16,
            config=FitConfig(seed=3),
        )
        locs = sample_tissue_locations(
            synthetic_svs.tissue_mask,
            synthetic_svs.mask_mpp,
            slide_dimensions=slide.dimensions,
            slide_mpp=slide.mpp,
            tile_size=256,
            mpp=slide.mpp,
            n_tiles=16,
            seed=3,
        )
    pen = synthetic_svs.pen_mask
    scale = slide.mpp / synthetic_svs.mask_mpp
    for x, y in locs:
        window = pen[
            int(y * scale) : int((y + 256) * scale) + 1, int(x * scale) : int((x + 256) * scale) + 1
        ]
        assert window.mean() < 0.5
    assert _angle(params.he_matrix[:, 0], H_OD) < 5.0
    assert _angle(params.he_matrix[:, 1], E_OD) < 25.0

"""The ambiguous-tile cohort through pixels (``synthetic.tile_slides``): what the slides
plant, and the context head's gain after the real ingestion (issue 31)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from features.annotations.coverage import class_coverage, tile_boxes
from synthetic.tile_slides import (
    AmbiguousSlideSpec,
    ambiguous_content,
    ambiguous_regions,
    make_pixel_tile_cohort,
)
from training.tiles import TileClassifierConfig, TileTask, run_tile_classifier

SPEC = AmbiguousSlideSpec(side_tiles=8)


def test_tumour_lies_inside_the_tissue_frame():
    for seed in range(5):
        region = ambiguous_regions(SPEC, seed)
        t = SPEC.tile_size
        assert region.area > 0
        assert shapely.box(t, t, SPEC.side - t, SPEC.side - t).contains(region)
        assert ambiguous_regions(SPEC, seed).equals(region)  # seeded


def test_crowding_is_one_offset_per_tile_around_the_class_level():
    spec = AmbiguousSlideSpec(side_tiles=8, jitter=0.1)
    content = ambiguous_content(spec, 3)
    um = spec.tile_size * spec.mpp
    # Points of one grid tile share its offset: crowding differs only by class there.
    xs = np.array([2.1, 2.5, 2.9]) * um
    ys = np.array([3.2, 3.5, 3.8]) * um
    values = content.crowd(xs, ys)
    inside = shapely.contains_xy(content.tumour, xs, ys)
    if inside.all() or not inside.any():
        assert np.ptp(values) == 0
    offsets = content.tile_offset(np.arange(500), np.zeros(500, np.int64))
    assert abs(offsets.mean()) < 0.02 and offsets.std() == pytest.approx(0.1, rel=0.15)
    plain = ambiguous_content(AmbiguousSlideSpec(side_tiles=8, jitter=0.0), 3)
    region = plain.tumour
    pt = region.representative_point()
    assert plain.crowd(np.array([pt.x]), np.array([pt.y]))[0] == pytest.approx(0.65)
    assert plain.crowd(np.array([um * 1.01]), np.array([um * 1.01]))[0] == pytest.approx(0.35)


def test_the_frame_is_glass_and_the_rest_tissue():
    content = ambiguous_content(SPEC, 0)
    um = SPEC.tile_size * SPEC.mpp
    assert content.is_glass(0, 0, um, um)
    assert not content.is_glass(um, um, um, um)
    x, y = np.meshgrid(np.linspace(0, 8 * um, 40), np.linspace(0, 8 * um, 40))
    tissue = content.tissue_mask(x, y)
    frame = (x < um) | (y < um) | (x > 7 * um) | (y > 7 * um)
    assert not tissue[frame].any() and tissue[~frame & (x > um + 1) & (y > um + 1)].all()


def test_tumour_tiles_render_more_nuclei_without_jitter():
    from features.encoders.handcrafted import FEATURE_NAMES, handcrafted_features

    spec = AmbiguousSlideSpec(side_tiles=12, jitter=0.0)
    content = ambiguous_content(spec, 1)
    t = spec.tile_size
    xs, ys = np.meshgrid(np.arange(1, 11) * t, np.arange(1, 11) * t)
    xs, ys = xs.ravel(), ys.ravel()
    cover = class_coverage(tile_boxes(xs, ys, t), ambiguous_regions(spec, 1))
    tumour, other = np.flatnonzero(cover == 1), np.flatnonzero(cover == 0)
    assert len(tumour) >= 2 and len(other) >= 2
    pick = np.concatenate([tumour[:2], other[:2]])
    tiles = np.stack(
        [content.render(xs[i] * spec.mpp, ys[i] * spec.mpp, t, t, spec.mpp) for i in pick]
    )
    density = handcrafted_features(tiles)[:, FEATURE_NAMES.index("nuclear_area_fraction")]
    assert density[:2].min() > density[2:].max()


@pytest.mark.slow
def test_context_beats_single_tiles_through_pixels_and_shuffling_erases_it(tmp_path):
    cohort = make_pixel_tile_cohort(
        tmp_path, 6, spec=AmbiguousSlideSpec(side_tiles=12), seed=4, processes=1
    )
    assert cohort.encoder == "handcrafted-he-v1"

    def dice(**kw):
        config = TileClassifierConfig(TileTask("tumour"), folds=3, n_boot=20, seed=0, **kw)
        return run_tile_classifier(cohort.store, config, write=False).dice

    single, context = dice(), dice(context_hops=1)
    shuffled = dice(context_hops=1, shuffle_coords=True)
    assert context - single >= 0.05
    assert shuffled - single < 0.05


@pytest.mark.parametrize(
    ("head", "slides", "side"),
    [("tile_gnn", 5, 12), pytest.param("region_transformer", 6, 16, marks=pytest.mark.slow)],
)
def test_spatial_models_tile_heads_use_the_neighbourhood(tmp_path, head, slides, side):
    """Issue 31 item 4: the spatial models' tile-level heads, trained on tile labels, beat
    their own run on shuffled coordinates on an ambiguous embedding-level cohort."""
    from synthetic.tiles import make_tile_cohort

    cohort = make_tile_cohort(
        str(tmp_path / "store"), n_slides=slides, side=side, dim=8, separation=1.35, seed=2
    )

    def dice(**kw):
        config = TileClassifierConfig(TileTask("tumour"), folds=3, n_boot=10, head=head, **kw)
        return run_tile_classifier(cohort.store, config, write=False)

    placed, shuffled = dice(), dice(shuffle_coords=True)
    assert not np.isnan(placed.probs).any()
    assert placed.dice - shuffled.dice >= 0.05

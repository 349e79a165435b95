"""Edge refinement: real H&E pasted on glass, its outline known exactly.

A piece of the real sample slide, cut along an irregular outline, is pasted on glass
beside a pen stroke (``synthetic.slides.pasted``, the small 0.5 µm/px version of the
benchmark slide). The coarse mask follows the 8 µm/px thumbnail; the refined one
re-decides the edge band at 2 µm/px from the ×4 level and must fit the outline better,
keep the pen out, read only that level's edge blocks, and feed the tile plan.
"""

from __future__ import annotations

import numpy as np
import pytest

from ingest.slides import open_slide
from ingest.tiling import plan_slide
from ingest.tissue import TissueConfig, iou, resample_nearest
from ingest.tissue.refine import grid_factor
from tests._support.slides import record_reads


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory):
    from tests._support.slides import CMU_SLIDE

    if not CMU_SLIDE.exists():
        pytest.skip(f"real sample slide not present at {CMU_SLIDE}")
    from synthetic.slides.pasted import PastedSlideSpec, write_pasted_slide

    spec = PastedSlideSpec(source=str(CMU_SLIDE), mpp=0.5, downsamples=(1, 4), canvas_um=900.0)
    return write_pasted_slide(tmp_path_factory.mktemp("pasted") / "pasted.tif", spec)


def _plan(path, config, monkeypatch=None):
    with open_slide(str(path)) as slide:
        reads = record_reads(slide, monkeypatch) if monkeypatch is not None else None
        tissue, plan = plan_slide(slide, config, device="cpu")
    return tissue, plan, reads


def test_refined_edge_fits_the_outline_better_than_the_coarse_one(pasted, monkeypatch):
    coarse, coarse_plan, _ = _plan(pasted.path, TissueConfig(refine_edges=False))
    fine, fine_plan, reads = _plan(pasted.path, TissueConfig(), monkeypatch)
    truth, pen = pasted.tissue_mask, pasted.pen_mask  # 1 µm grid
    coarse_iou = iou(resample_nearest(coarse.mask, truth.shape), truth)
    fine_mask = resample_nearest(fine.mask, truth.shape)
    fine_iou = iou(fine_mask, truth)
    assert coarse.mask.shape == (112, 112) and fine.mask.shape == (448, 448)
    assert fine.edge is not None and fine.edge.factor == 4 and fine.edge.reason == "refined"
    assert fine_iou > coarse_iou + 0.005, (coarse_iou, fine_iou)
    assert fine_iou > 0.985
    assert not (fine_mask & pen).any(), "the pen stroke stays out"
    # Level 1 (2 µm/px) for the thumbnail and the edge blocks; never level 0.
    assert reads is not None and set(reads.pixels) == {1}
    level1 = 450 * 450
    assert reads.pixels[1] <= level1 + fine.edge.pixels_read
    # The plan is made from the refined mask: its tiles' tissue fractions are nearer
    # the truth's than the coarse plan's.
    assert _fraction_error(fine_plan, truth) < _fraction_error(coarse_plan, truth)
    assert fine.tissue_area_mm2 == pytest.approx(truth.sum() / 1e6, rel=0.02)


def _fraction_error(plan, truth) -> float:
    """Mean |planned − true| tissue fraction over the planned tiles (truth on 1 µm = 2 px)."""
    side = int(round(plan.footprint_level0 / 2))
    xs, ys = plan.table.column("x").to_numpy() // 2, plan.table.column("y").to_numpy() // 2
    true = np.array([truth[y : y + side, x : x + side].mean() for x, y in zip(xs, ys, strict=True)])
    planned = plan.table.column("tissue_fraction").to_numpy()
    return float(np.abs(planned - true).mean())


def test_refinement_read_cap_and_grid_budget(pasted):
    capped, _, _ = _plan(pasted.path, TissueConfig(refine_max_read_px=2 * 160 * 160))
    assert capped.edge is not None and capped.edge.reason == "refined, capped"
    assert 0 < capped.edge.blocks < capped.edge.blocks_total
    # A grid that would outgrow the budget is refined less, or not at all.
    assert grid_factor((3125, 3125), 8.0, 0.25, 2.0, 16_000_000) == 1
    assert grid_factor((1000, 1000), 8.0, 0.25, 2.0, 16_000_000) == 4
    assert grid_factor((1500, 1500), 8.0, 0.25, 2.0, 16_000_000) == 2
    assert grid_factor((100, 100), 8.0, 4.0, 2.0, 16_000_000) == 2  # never finer than the slide


def test_small_slide_read_whole_refines_exactly_as_block_reads(tmp_path, monkeypatch):
    """A small slide's edge blocks are cut from one whole-slide read (fewer pixels decoded
    than the overlapping blocks: here a 1024² slide without a pyramid, as in the
    1,000-slide benchmark); the refined mask is the one block reads give."""
    from ingest.tissue import refine
    from synthetic.slides.cohort import write_small_cohort

    (path,) = write_small_cohort(tmp_path, 1, processes=1)

    calls = []
    whole_slide = refine._whole_slide

    def spy(*args, **kwargs):
        calls.append(whole_slide(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(refine, "_whole_slide", spy)
    whole, _, _ = _plan(path, TissueConfig())
    assert calls and calls[0] is not None, "the small slide took the whole-slide read"
    monkeypatch.setattr(refine, "_whole_slide", lambda *a, **k: None)
    blocks, _, _ = _plan(path, TissueConfig())
    assert whole.edge.blocks == blocks.edge.blocks > 0
    np.testing.assert_array_equal(whole.mask, blocks.mask)
    np.testing.assert_array_equal(whole.background, blocks.background)


def test_od_signal_is_the_colour_features_signal_to_the_bit():
    """The refinement takes each block's OD signal from one pass over the whole read (or
    over the block's window): the same numbers as color_features', pixel for pixel, so
    cutting the signal instead of the pixels changes no mask."""
    from ingest.tissue.color import color_features, od_signal

    rgb = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    glass = (231.0, 224.0, 240.0)
    whole = od_signal(rgb, glass, np)
    np.testing.assert_array_equal(whole, color_features(rgb, np, glass=glass).signal)
    window = (slice(13, 70), slice(40, 131))
    np.testing.assert_array_equal(whole[window], color_features(rgb[window], np, glass).signal)

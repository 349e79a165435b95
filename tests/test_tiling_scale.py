"""Planning a 100k × 100k slide reads only the coarse level it needs, each pixel once.

The slide is 100,000² px at 0.25 µm/px (2.5 cm square, a 40x scan) with an Aperio-style
×4 pyramid (0.25, 1, 4, 16 µm/px). Its two finest levels are written without pixel
data, so the file takes seconds to write; the levels a plan may read (4 and 16 µm/px)
hold real rendered tissue and pen marks. A planner that read level 0 or 1 would both
be slow and see black.

The test asserts the work done (which levels, how many pixels), not the time it took: a
time limit fails on slower hardware. Planning speed is measured in benchmarks/tissue.py.
"""

from __future__ import annotations

import pytest

from ingest.slides import open_slide
from ingest.tiling import plan_slide
from ingest.tissue import iou, resample_nearest
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from tests._support.slides import record_reads

SIDE = 100_000


@pytest.fixture(scope="module")
def huge_slide(tmp_path_factory: pytest.TempPathFactory):
    spec = SyntheticSlideSpec(
        width=SIDE,
        height=SIDE,
        mpp=0.25,
        style="tiff",
        seed=5,
        n_blobs=2,
        pen_marks=True,
        downsamples=(1, 4, 16, 64),
        empty_levels=2,
        mask_max_side=512,
    )
    return write_synthetic_slide(tmp_path_factory.mktemp("huge") / "huge.tif", spec)


@pytest.mark.slow  # writes a huge synthetic slide first (about 15 s)
def test_huge_slide_plans_reading_only_the_coarse_level(huge_slide, monkeypatch) -> None:
    with open_slide(str(huge_slide.path)) as slide:
        assert slide.dimensions == (SIDE, SIDE)
        reads = record_reads(slide, monkeypatch)
        tissue, plan = plan_slide(slide, device="cpu")
        level2 = slide.level_dimensions[2]
    assert reads.levels and set(reads.pixels) == {2}, f"read levels {sorted(reads.pixels)}"
    # Each level-2 pixel at most once (the whole level is 6250² = 39 Mpx; level 0 is 10 Gpx).
    assert reads.pixels[2] <= level2[0] * level2[1], f"read {reads.pixels[2]:,} level-2 pixels"
    assert plan.status == "ok" and plan.tile_count > 1000
    assert tissue.mask.shape == (3125, 3125)  # 8 µm/px
    truth = resample_nearest(huge_slide.tissue_mask, tissue.mask.shape)
    assert iou(tissue.mask, truth) > 0.95, "the plan saw the real tissue"

"""The QC overlay explains itself: a legend strip, a scale bar, dye told apart from pen."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.tissue._legend import _rows, nice_scale_um
from ingest.tissue.overlay import margin_dye, render_overlay

_COLOURS = {
    "outline": (0, 200, 70),
    "pen": (230, 0, 200),
    "dye": (30, 60, 255),
    "artifact": (255, 140, 0),
    "tile": (0, 170, 255),
    "flagged": (255, 215, 0),
}
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_small_region.svs"


def _plan(path: str):
    from ingest.slides import open_slide
    from ingest.tiling.plan import plan_slide

    with open_slide(path) as slide:
        tissue, plan = plan_slide(slide, device="cpu")
        return tissue, plan, slide.dimensions


def test_legend_strip_and_scale_bar_are_drawn(tmp_path):
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    path = tmp_path / "pen.tif"
    write_synthetic_slide(
        path,
        SyntheticSlideSpec(
            width=3072,
            height=2304,
            mpp=0.5,
            seed=100,
            pen_marks=True,
            downsamples=(1, 4),
            style="tiff",
            empty_levels=1,
        ),
    )  # masks never read level 0
    tissue, plan, size = _plan(str(path))
    bare = render_overlay(tissue, plan, size, legend=False)
    full = render_overlay(tissue, plan, size)
    assert full.shape[1] == bare.shape[1] and full.shape[0] > bare.shape[0] + 100
    strip = full[bare.shape[0] :]
    colours = {tuple(c) for c in strip.reshape(-1, 3)}
    for swatch in [(230, 0, 200), (30, 60, 255), (255, 140, 0), (0, 200, 70)]:
        assert swatch in colours, f"legend swatch {swatch} missing"
    # The scale bar: a solid black run in the image's lower-left corner.
    corner = full[bare.shape[0] - 40 : bare.shape[0] - 10, 10:200]
    assert (corner.sum(axis=2) == 0).sum() > 100
    # Pen strokes crossing the section are pen, not margin dye.
    assert tissue.pen.any() and not margin_dye(tissue).any()


def test_nice_scale_lengths():
    assert nice_scale_um(8.0, 1000) == 1000  # 125 px of 200 allowed
    assert nice_scale_um(0.5, 1000) == 100
    assert nice_scale_um(0.001, 100) == 10  # never zero, even when nothing fits


@pytest.mark.skipif(not REAL.exists(), reason="the real sample slide is not in ../shared/data")
def test_real_slide_margin_dye_is_shown_apart_from_pen():
    """The sample's only ink is teal margin dye (granules along its right edge, in its
    bays and on loose fragments): all of it is dye, none of it is drawn as pen."""
    tissue, plan, _ = _plan(str(REAL))
    dye = margin_dye(tissue)
    assert dye.any(), "the sample slide's teal margin dye is recognised"
    assert not (tissue.pen & ~dye).any(), "no part of the margin dye is drawn as pen"
    assert not (dye & tissue.mask).any()
    rows = {
        text.split(":")[0]: text
        for _, _, text in _rows(tissue, plan, tissue.pen & ~dye, dye, _COLOURS)
    }
    assert rows["pen ink"].startswith("pen ink: none found")
    assert (
        rows["margin dye"].startswith("margin dye: removed")
        and "resection margin" in rows["margin dye"]
    )


def test_pen_strokes_beside_and_across_sections_stay_pen(tmp_path):
    """Strokes hugging a section's edge or crossing it, and a dot on bare glass, are pen."""
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    for seed in (1001, 1002):
        path = tmp_path / f"pen{seed}.tif"
        write_synthetic_slide(
            path,
            SyntheticSlideSpec(
                width=3072,
                height=2304,
                mpp=0.5,
                seed=seed,
                pen_marks=True,
                downsamples=(1, 4),
                style="tiff",
                empty_levels=1,
            ),
        )
        tissue, plan, _ = _plan(str(path))
        assert tissue.pen.any() and not margin_dye(tissue).any(), f"seed {seed}"
        pen_row = _rows(tissue, plan, tissue.pen, margin_dye(tissue), _COLOURS)[1][2]
        assert pen_row.startswith("pen ink: removed") and "marker strokes (" in pen_row

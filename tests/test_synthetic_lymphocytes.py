"""Planted lymphocyte infiltrates in synthetic slides: the share asked for, a ground-truth
mask that matches the pixels, nothing else changed, and visible to the default encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from infra.errors import ConfigError
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from synthetic.slides.content import H_OD, TissueContent
from synthetic.slides.design import make_design, plant_lymphocytes

SPEC = SyntheticSlideSpec(
    width=1536, height=1536, seed=21, n_blobs=3, downsamples=(1, 4), lymphocyte_fraction=0.3
)


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_slide(tmp_path_factory.mktemp("lymph") / "lymph.svs", SPEC)


def test_share_and_mask(slide) -> None:
    assert slide.lymphocyte_mask is not None
    assert 0.2 <= slide.lymphocyte_fraction <= 0.4
    assert not (slide.lymphocyte_mask & ~slide.tissue_mask).any()  # infiltrate lies on tissue
    # Per-tile coverage in level-0 px agrees with the mask.
    full = slide.lymphocyte_coverage(0, 0, max(SPEC.width, SPEC.height))
    assert full == pytest.approx(slide.lymphocyte_mask.mean(), rel=1e-6)


def test_pixels_are_darker_hematoxylin_inside(slide) -> None:
    import tifffile

    with tifffile.TiffFile(slide.path) as tf:
        rgb = tf.pages[0].asarray().astype(float)
    od = -np.log(np.clip(rgb, 1, 255) / 241.0)
    h = od @ H_OD  # projection on the hematoxylin direction
    # Sample the image at the mask's pixel centres (the mask grid is coarser).
    scale = slide.mask_mpp / SPEC.mpp
    rows, cols = (
        np.floor((np.arange(n) + 0.5) * scale).astype(int) for n in slide.tissue_mask.shape
    )
    h = h[np.ix_(rows, cols)]
    inside = h[slide.lymphocyte_mask].mean()
    outside = h[slide.tissue_mask & ~slide.lymphocyte_mask].mean()
    assert inside > 1.5 * outside


def test_planting_changes_only_the_aggregates() -> None:
    design = make_design(768.0, 768.0, seed=21, n_blobs=3)
    planted = plant_lymphocytes(design, 0.3, seed=21)
    assert planted.lymphocytes and dataclasses.replace(planted, lymphocytes=()) == design
    plain, with_lymph = TissueContent(design), TissueContent(planted)
    a, b = plain.render(0, 0, 768, 768, 1.0), with_lymph.render(0, 0, 768, 768, 1.0)
    xs = np.arange(768) + 0.5
    x, y = np.meshgrid(xs, xs)
    far = with_lymph.lymphocyte_field(x, y) < -0.1  # clear of every aggregate's edge
    assert far.any() and np.array_equal(a[far], b[far])
    assert not np.array_equal(a, b)
    assert plant_lymphocytes(design, 0.0, seed=21) is design


def test_default_encoder_sees_the_infiltrate() -> None:
    from features.encoders.handcrafted import FEATURE_NAMES, handcrafted_features

    content = TissueContent(
        plant_lymphocytes(make_design(1024.0, 1024.0, seed=4, n_blobs=3), 0.35, seed=4)
    )
    inside, outside = [], []
    for ty in range(0, 1024 - 112, 56):
        for tx in range(0, 1024 - 112, 56):
            xs = tx + (np.arange(8) + 0.5) * 14
            x, y = np.meshgrid(xs, ty + (np.arange(8) + 0.5) * 14)
            tissue = content.tissue_mask(x, y).mean()
            share = content.lymphocyte_mask(x, y).mean()
            if tissue < 0.9:
                continue
            tile = content.render(tx, ty, 224, 224, 0.5)
            (inside if share > 0.9 else outside if share == 0 else []).append(tile)
    assert inside and outside
    feats = handcrafted_features(np.stack(inside + outside))
    h = FEATURE_NAMES.index("h_tissue_mean")
    assert feats[: len(inside), h].min() > feats[len(inside) :, h].max()


@pytest.mark.parametrize(
    "bad",
    [{"lymphocyte_fraction": 1.0}, {"lymphocyte_fraction": -0.1}, {"lymphocyte_background": 1.5}],
)
def test_invalid_options(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ConfigError):
        write_synthetic_slide(tmp_path / "x.svs", dataclasses.replace(SPEC, **bad))

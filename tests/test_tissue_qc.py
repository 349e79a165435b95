"""Read-time tile QC: blur (variance of the Laplacian), background and pen fractions, flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from infra.errors import ConfigError
from ingest.slides import open_slide
from ingest.tissue import (
    QC_BACKGROUND,
    QC_BLUR,
    QC_PEN,
    TileQCConfig,
    blur_scores,
    describe_flags,
    qc_flags,
    tile_qc,
)
from synthetic.slides.content import TissueContent
from synthetic.slides.design import make_design

MPP = 0.5


@pytest.fixture(scope="module")
def tiles() -> dict[str, np.ndarray]:
    """128² tiles at 0.5 µm/px: sharp tissue, the same tissue out of focus, glass, ink."""
    design = make_design(1024.0, 1024.0, seed=3, blur=True, n_blobs=1)
    cx, cy, _ = design.blobs[0][:3]
    b = design.blobs[0][3]
    content = TissueContent(design)
    bx, by, _ = design.blur  # the out-of-focus disc (3 µm point spread)
    sharp = content.render(cx - 32, cy + 0.75 * b - 32, 128, 128, MPP)
    blurred = content.render(bx - 32, by - 32, 128, 128, MPP)
    line = np.array([[cx - 40, cy + 0.75 * b], [cx + 40, cy + 0.75 * b]])
    inked = TissueContent(dataclasses.replace(design, pen=(("blue", line, 30.0),)))
    ink = inked.render(cx - 32, cy + 0.75 * b - 32, 128, 128, MPP)
    return {"sharp": sharp, "blurred": blurred, "glass": content.render_glass(128, 128), "ink": ink}


def test_flags_sharp_blurred_glass_and_ink(tiles) -> None:
    batch = np.stack([tiles["sharp"], tiles["blurred"], tiles["glass"], tiles["ink"]])
    qc = tile_qc(batch, MPP, device="cpu")
    sharp, blurred, glass, ink = range(4)
    assert qc.blur_score[sharp] > 5 * qc.blur_score[blurred]
    assert qc.flags[sharp] == 0 and qc.passed[sharp]
    assert qc.flags[blurred] & QC_BLUR and not qc.flags[blurred] & QC_BACKGROUND
    assert qc.background_fraction[glass] > 0.99 and qc.flags[glass] & QC_BACKGROUND
    assert qc.background_fraction[sharp] < 0.05
    assert qc.pen_fraction[ink] > 0.1 and qc.flags[ink] & QC_PEN
    assert qc.pen_fraction[sharp] == 0
    assert "pen" in describe_flags(int(qc.flags[ink]))


def test_real_tissue_tiles_are_sharp_and_ink_free(cmu_slide) -> None:
    with open_slide(str(cmu_slide)) as slide:
        batch = slide.read_regions_at_mpp([(1000, 2000), (800, 800), (1200, 1200)], 256, 0.5)
    qc = tile_qc(batch, 0.5, device="cpu")
    assert (qc.blur_score > 500).all()
    assert (qc.pen_fraction < 0.02).all(), qc.pen_fraction
    blurred = np.stack([ndimage.gaussian_filter(t, sigma=(6, 6, 0)) for t in batch])
    assert (tile_qc(blurred, 0.5, device="cpu").flags & QC_BLUR).all()


def test_blur_score_is_per_tile() -> None:
    """A sharp tile next to a flat one in the batch does not leak into it."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 200, np.uint8)
    scores = blur_scores(np.stack([flat, noisy, flat]).astype(np.uint8), np)
    assert scores[0] == 0 and scores[2] == 0 and scores[1] > 1000


def test_qc_inputs_and_thresholds() -> None:
    empty = tile_qc(np.zeros((0, 32, 32, 3), np.uint8), MPP, device="cpu")
    assert empty.flags.shape == (0,)
    with pytest.raises(ConfigError):
        tile_qc(np.zeros((32, 32, 3), np.uint8), MPP, device="cpu")
    with pytest.raises(ConfigError):
        tile_qc(np.zeros((1, 32, 32, 3), np.uint8), 0.0, device="cpu")
    with pytest.raises(ConfigError):
        TileQCConfig(max_pen_fraction=2.0)
    flags = qc_flags(
        np.array([0.9, 0.1]),
        np.array([0.0, 0.5]),
        TileQCConfig(),
        blur_score=np.array([1000.0, 1.0]),
    )
    assert flags.tolist() == [QC_BACKGROUND, QC_PEN | QC_BLUR]


@pytest.mark.gpu
def test_gpu_and_cpu_qc_agree(tiles) -> None:
    batch = np.stack(list(tiles.values()))
    cpu = tile_qc(batch, MPP, device="cpu")
    gpu = tile_qc(batch, MPP, device="cuda")
    assert np.array_equal(cpu.flags, gpu.flags)
    assert np.allclose(cpu.blur_score, gpu.blur_score, rtol=1e-3)
    assert np.allclose(cpu.background_fraction, gpu.background_fraction, atol=1e-6)


def test_fast_qc_kernels_equal_the_reference_filters() -> None:
    """The shifted-view Laplacian and the reduceat block means (NumPy fast paths) compute
    what scipy's 3×3 convolution and a float box filter compute."""
    from ingest.tissue.color import color_features
    from ingest.tissue.config import TissueConfig
    from ingest.tissue.pen import ink_pixels
    from ingest.tissue.qc import _pen_fraction, blur_scores

    rng = np.random.default_rng(3)
    # Blocks of random colours (some ink-like) with pixel noise, cut off-grid (64×48 tiles
    # hold 16×12 blocks of 4 px shifted by 2), so wrong block bounds change the answer.
    colours = rng.integers(0, 256, (5, 18, 14, 3)).repeat(4, 1).repeat(4, 2)[:, 2:66, 2:50]
    tiles = np.clip(colours + rng.integers(-40, 41, colours.shape), 0, 255).astype(np.uint8)
    grey = tiles.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = ndimage.convolve(grey, np.array([[[0, 1, 0], [1, -4, 1], [0, 1, 0]]], np.float32))
    np.testing.assert_allclose(
        blur_scores(tiles, np), lap[:, 1:-1, 1:-1].reshape(5, -1).var(axis=1), rtol=1e-4
    )
    config = TissueConfig()
    k = 4  # thumbnail_mpp / mpp
    pen = _pen_fraction(tiles, config.thumbnail_mpp / k, config, (240.0, 240.0, 240.0), np)
    means = np.rint(
        tiles[:, :64, :48].reshape(5, 16, k, 12, k, 3).astype(np.float32).mean(axis=(2, 4))
    )
    features = color_features(
        means.astype(np.uint8).reshape(5 * 16, 12, 3), np, glass=(240.0, 240.0, 240.0)
    )
    expected = ink_pixels(features, config, np).reshape(5, -1).mean(axis=1)
    assert expected.min() > 0 and expected.max() < 1, "the tiles must hold some ink and some not"
    np.testing.assert_array_equal(pen, expected.astype(np.float32))

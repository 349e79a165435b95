"""The weight-free default encoder: fixed, deterministic, finite, and it separates tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.encoders import Encoder
from features.encoders._stain import deconvolve
from features.encoders.handcrafted import FEATURE_NAMES, handcrafted_features

# Ruifrok & Johnston optical-density vectors (unit norm) for hematoxylin and eosin.
H_OD = np.array([0.650, 0.704, 0.286])
E_OD = np.array([0.072, 0.990, 0.105])


def synthetic_he_tile(rng: np.random.Generator, dense_small: bool, size: int = 224) -> np.ndarray:
    """An H&E-like tile by Beer-Lambert: eosin stroma with elliptical hematoxylin nuclei.

    Class ``dense_small``: many small round nuclei (lymphocyte-rich); otherwise few large,
    elongated nuclei. Both cover a similar share of the tile, and stain strength, stroma
    texture and noise vary per tile, so colour alone does not tell the classes apart.
    """
    eosin = 0.25 + 0.5 * ndi.gaussian_filter(rng.random((size, size)), rng.uniform(2, 6))
    eosin = (eosin - eosin.min()) / max(np.ptp(eosin), 1e-6) * rng.uniform(0.3, 0.7) + 0.15
    hema = np.zeros((size, size))
    count = rng.integers(40, 60) if dense_small else rng.integers(8, 13)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(count):
        radius = rng.uniform(4.0, 5.5) if dense_small else rng.uniform(8.0, 11.0)
        stretch = rng.uniform(1.0, 1.2) if dense_small else rng.uniform(1.2, 1.8)
        cy, cx, angle = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / (radius * stretch)
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius / stretch)
        inside = np.clip(1.5 * (1.0 - (u * u + v * v)), 0, 1)  # soft edge
        hema = np.maximum(hema, inside * rng.uniform(0.9, 1.5))
    hema *= rng.uniform(0.8, 1.2)
    od = hema[..., None] * H_OD + eosin[..., None] * E_OD * (1 - 0.6 * (hema[..., None] > 0.3))
    rgb = 250.0 * np.exp(-od) + rng.normal(0, 3.0, od.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def test_feature_vector_is_fixed_and_named() -> None:
    assert len(FEATURE_NAMES) == 64
    assert len(set(FEATURE_NAMES)) == 64
    encoder = Encoder()
    assert encoder.embed_dim == 64
    assert encoder.provenance["weights"] == {"origin": "built-in", "file": None, "sha256": None}


def test_deconvolution_matches_scikit_image() -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(1, 256, (2, 32, 32, 3), np.uint8)  # no zeros: there the floors differ
    hed, _ = deconvolve(tiles)
    expected = np.clip(rgb2hed(tiles) * np.log(1e6), 0, 4.0)
    np.testing.assert_allclose(hed, expected, atol=2e-4)


def test_blank_and_extreme_tiles_are_finite() -> None:
    tiles = np.stack(
        [
            np.full((224, 224, 3), 255, np.uint8),  # glass
            np.zeros((224, 224, 3), np.uint8),  # black
            np.full((224, 224, 3), 128, np.uint8),  # grey
        ]
    )
    features = handcrafted_features(tiles)
    assert features.shape == (3, 64)
    assert np.isfinite(features).all()
    white = dict(zip(FEATURE_NAMES, features[0], strict=True))
    assert white["tissue_fraction"] == 0
    assert white["nuclei_density"] == 0
    assert white["h_mean"] == 0


def test_deterministic_and_independent_of_batching() -> None:
    rng = np.random.default_rng(5)
    tiles = np.stack([synthetic_he_tile(rng, bool(i % 2), size=160) for i in range(20)])
    whole = handcrafted_features(tiles)
    pieces = np.concatenate([handcrafted_features(tiles[i : i + 3]) for i in range(0, 20, 3)])
    np.testing.assert_array_equal(whole, pieces)
    np.testing.assert_array_equal(whole, Encoder(batch_size=7)(tiles))


def test_probe_separates_two_synthetic_tissue_classes() -> None:
    rng = np.random.default_rng(42)
    labels = np.arange(120) % 2
    tiles = np.stack([synthetic_he_tile(rng, bool(label)) for label in labels])
    features = Encoder()(tiles)
    accuracy = _probe_accuracy(features[:60], labels[:60], features[60:], labels[60:])
    assert accuracy >= 0.9, accuracy


def _slide_tiles(path: Path, size: int = 224) -> np.ndarray:
    tiffslide = pytest.importorskip("tiffslide")
    with tiffslide.TiffSlide(str(path)) as slide:
        width, height = slide.dimensions
        region = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    return np.stack(
        [
            region[y : y + size, x : x + size]
            for y in range(0, height - size + 1, size)
            for x in range(0, width - size + 1, size)
        ]
    )


def test_probe_separates_real_tissue_from_background(cmu_slide: Path) -> None:
    tiles = _slide_tiles(cmu_slide)
    pixels = tiles.reshape(len(tiles), -1, 3).astype(np.float32)
    brightness = pixels.mean(axis=(1, 2))
    saturation = ((pixels.max(-1) - pixels.min(-1)) / np.maximum(pixels.max(-1), 1)).mean(axis=1)
    tissue = (brightness < 215) & (saturation > 0.12)
    background = (brightness > 228) & (saturation < 0.06)
    keep = tissue | background
    assert tissue.sum() >= 15 and background.sum() >= 15

    features = Encoder()(tiles[keep])
    labels = tissue[keep].astype(int)
    # Tiles are in row-major order, so the first half of them is the top of the slide: a
    # spatial split, where neighbouring (near-duplicate) tiles cannot sit on both sides.
    half = len(labels) // 2
    train, test = np.arange(half), np.arange(half, len(labels))
    assert set(labels[train]) == {0, 1} and set(labels[test]) == {0, 1}
    accuracy = _probe_accuracy(features[train], labels[train], features[test], labels[test])
    assert accuracy >= 0.9, accuracy

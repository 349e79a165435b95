"""Small levels are decoded once and cut from memory; tiles reach the target resolution
by area (the default) or Lanczos downsampling, and the choice is part of the tiling hash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ingest.slides.slide as slide_module
from infra.errors import ConfigError
from ingest.slides import open_slide
from ingest.slides.slide import downsample
from ingest.tiling.config import TilingConfig
from tests._support.slides import record_reads, reference_region

#: level-pixel regions fully inside, across the edge, and wholly outside a level
REGIONS = [
    (0, 0, 64, 64),
    (300, 210, 200, 90),
    (-40, -10, 128, 64),
    (1950, 1480, 128, 96),
    (5000, 5000, 32, 32),
]


def _regions(slide, level: int) -> list[np.ndarray]:
    ds = slide.level_downsamples[level]
    return [
        slide.read_region((round(x * ds), round(y * ds)), level, (w, h)) for x, y, w, h in REGIONS
    ]


@pytest.mark.parametrize("level", [0, 2])
def test_cut_from_a_whole_level_equals_reading_the_region(
    synthetic_tiff, monkeypatch, level
) -> None:
    with open_slide(str(synthetic_tiff.path)) as slide:
        cut = _regions(slide, level)
        assert level in slide._levels  # 2000×1502 and 500×375 are both below the limit
        batch = slide.read_regions(
            [(0, 0), (round(300 * slide.level_downsamples[level]), 0)], level, (64, 64)
        )
    monkeypatch.setattr(slide_module, "_WHOLE_LEVEL_PX", 0)  # every read goes to the backend
    with open_slide(str(synthetic_tiff.path)) as slide:
        direct = _regions(slide, level)
        direct_batch = slide.read_regions(
            [(0, 0), (round(300 * slide.level_downsamples[level]), 0)], level, (64, 64)
        )
        assert not slide._levels
    for a, b in zip(cut, direct, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert np.array_equal(batch, direct_batch)
    assert (cut[-1] == 255).all()  # outside the slide is glass


def test_a_small_level_is_decoded_once_and_a_cut_is_a_copy(synthetic_tiff, monkeypatch) -> None:
    with open_slide(str(synthetic_tiff.path)) as slide:
        reads = record_reads(slide, monkeypatch)
        first = slide.read_region((0, 0), 0, (64, 64))
        first[:] = 0  # the caller owns its pixels; the decoded level must not change
        again = slide.read_region((0, 0), 0, (64, 64))
        slide.read_regions([(64, 64), (640, 640)], 0, (128, 128))
        assert reads.levels == [0]  # one whole-level decode served all three reads
        assert reads.pixels[0] == 2000 * 1502
    assert np.array_equal(again, reference_region(str(synthetic_tiff.path), 0, 0, 0, 64, 64))


def test_a_level_above_the_limit_is_read_by_region(synthetic_tiff, monkeypatch) -> None:
    monkeypatch.setattr(slide_module, "_WHOLE_LEVEL_PX", 500 * 375)  # only level 2 fits
    with open_slide(str(synthetic_tiff.path)) as slide:
        reads = record_reads(slide, monkeypatch)
        slide.read_region((0, 0), 0, (64, 64))
        slide.read_region((0, 0), 2, (64, 64))
        assert set(slide._levels) == {2}
        assert reads.pixels == {0: 64 * 64, 2: 500 * 375}


def test_area_downsampling_is_the_block_mean() -> None:
    rng = np.random.default_rng(3)
    for k in (2, 4):
        image = rng.integers(0, 256, (128 * k, 128 * k, 3), dtype=np.uint8)
        mean = image.reshape(128, k, 128, k, 3).astype(np.float64).mean(axis=(1, 3))
        assert np.abs(downsample(image, 128, "area") - mean).max() <= 0.5
    odd = rng.integers(0, 256, (253, 253, 3), dtype=np.uint8)  # not a whole factor: PIL's BOX
    box = np.asarray(Image.fromarray(odd).resize((128, 128), Image.Resampling.BOX))
    assert np.array_equal(downsample(odd, 128, "area"), box)
    lanczos = np.asarray(Image.fromarray(image).resize((128, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(downsample(image, 128, "lanczos"), lanczos)


def test_tiles_at_a_coarser_mpp_follow_the_resampling(synthetic_tiff) -> None:
    with open_slide(str(synthetic_tiff.path)) as slide:
        # 0.25 µm/px level 0, 0.5 µm/px level 1: 1.0 µm/px is level 2 exactly, 0.75 is not
        area = slide.read_regions_at_mpp([(400, 300)], 64, 0.75)[0]
        lanczos = slide.read_regions_at_mpp([(400, 300)], 64, 0.75, resample="lanczos")[0]
        with pytest.raises(ConfigError, match="resample"):
            slide.read_regions_at_mpp([(0, 0)], 64, 0.75, resample="cubic")  # type: ignore[arg-type]
        choice = slide.best_level(0.75)
        read = round(64 * choice.scale)
    ds = 2**choice.level
    source = reference_region(
        str(synthetic_tiff.path), choice.level, round(400 / ds), round(300 / ds), read, read
    )
    assert np.array_equal(area, downsample(source, 64, "area"))
    assert np.array_equal(lanczos, downsample(source, 64, "lanczos"))
    assert not np.array_equal(area, lanczos)


def test_the_resampling_is_validated_and_hashed() -> None:
    assert TilingConfig().resample == "area"
    assert TilingConfig(resample="lanczos").config_hash() != TilingConfig().config_hash()
    with pytest.raises(ConfigError, match="resample"):
        TilingConfig(resample="bicubic")  # type: ignore[arg-type]

"""Tissue masks from thumbnails: config, pen inks, faint tissue, artifacts, empty slides.

Thumbnails here are rendered straight from synthetic designs at 8 µm/px (no file), so
each case controls exactly what is on the glass; end-to-end accuracy through written
slides is in test_tissue_accuracy.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from infra.arrays import gpu_available
from infra.errors import ConfigError
from ingest.tissue import INKS, TissueConfig, detect_tissue, iou, saturation_otsu_mask
from synthetic.slides.content import ArtifactDesign, TissueContent
from synthetic.slides.design import make_design

MPP = 8.0
SIDE_UM = 2048.0


def _render(design) -> tuple[np.ndarray, np.ndarray, TissueContent]:
    """Thumbnail and ground truth of a design at MPP, on the same pixel grid."""
    content = TissueContent(design)
    n = int(SIDE_UM / MPP)
    thumb = content.render(0.0, 0.0, n, n, MPP)
    centres = (np.arange(n) + 0.5) * MPP
    x, y = np.meshgrid(centres, centres)
    return thumb, content.tissue_mask(x, y), content


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(n) + 0.5) * MPP
    return np.meshgrid(centres, centres)


# ---- config -----------------------------------------------------------------------------
def test_config_hash_is_stable_across_processes_and_changes_with_parameters() -> None:
    here = TissueConfig().config_hash()
    code = "from ingest.tissue import TissueConfig; print(TissueConfig().config_hash())"
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there and len(here) == 16
    assert TissueConfig(min_od=0.031).config_hash() != here
    assert (
        TissueConfig(pen_inks=("red", "blue")).config_hash()
        == TissueConfig(pen_inks=("blue", "red")).config_hash()
    )  # order does not matter


@pytest.mark.parametrize(
    "bad",
    [
        {"thumbnail_mpp": 0},
        {"min_od": -1},
        {"edge_fraction": 1.5},
        {"pen_inks": ("purple",)},
        {"min_object_area_um2": float("nan")},
        {"noise_k": True},
    ],
)
def test_invalid_config_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TissueConfig(**bad)


def test_invalid_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        detect_tissue(np.zeros((8, 8), np.uint8), MPP, device="cpu")
    with pytest.raises(ConfigError):
        detect_tissue(np.zeros((8, 8, 3), np.uint8), 0.0, device="cpu")


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU refusal")
def test_cuda_without_gpu_is_refused() -> None:
    with pytest.raises(ConfigError):
        detect_tissue(np.full((8, 8, 3), 240, np.uint8), MPP, device="cuda")


# ---- what the mask contains ---------------------------------------------------------------
def test_faint_and_dark_sections_are_both_found() -> None:
    design = make_design(SIDE_UM, SIDE_UM, seed=4, n_blobs=2, faint=True)
    thumb, truth, _ = _render(design)
    result = detect_tissue(thumb, MPP, device="cpu")
    assert result.status == "ok"
    assert iou(result.mask, truth) > 0.95
    # The faint section alone: its pixels are found as well as the dark one's.
    x, y = _grid(truth.shape[0])
    _, stain = TissueContent(design).blob_field(x, y)
    faint = truth & (stain < 0.5)
    assert faint.sum() > 500 and result.mask[faint].mean() > 0.97
    baseline = saturation_otsu_mask(thumb, MPP, device="cpu")
    assert iou(baseline, truth) < iou(result.mask, truth)


@pytest.mark.parametrize("ink", INKS)
def test_each_ink_is_removed_on_glass_and_on_tissue(ink: str) -> None:
    design = make_design(SIDE_UM, SIDE_UM, seed=6, n_blobs=1)
    cx, cy, a = design.blobs[0][:3]
    # One stroke from glass straight across the section, as pens cross tissue in practice.
    line = np.array([[cx - 2.2 * a, cy - 0.3 * a], [cx + 2.2 * a, cy + 0.3 * a]])
    design = dataclasses.replace(design, pen=((ink, line, 24.0),))
    thumb, truth, content = _render(design)
    result = detect_tissue(thumb, MPP, device="cpu")
    pen = content.pen_od(*_grid(truth.shape[0]))[1]
    assert pen.sum() > 100
    assert result.pen_by_ink[ink][pen].mean() > 0.95, f"{ink} ink not recognised"
    assert (result.mask & pen).sum() <= 0.02 * pen.sum(), f"{ink} ink counted as tissue"
    assert iou(result.mask, truth) > 0.93
    # Where a stroke crosses stain the mixture may read as another ink (green + pink is
    # grey-dark, "black"), but no ink is reported away from the stroke.
    near = ndimage.binary_dilation(pen, iterations=2)
    for other, found in result.pen_by_ink.items():
        assert not (found & ~near).any(), f"{other} ink reported away from the {ink} stroke"


def test_scanner_border_coverslip_edge_and_bubbles_are_rejected() -> None:
    design = make_design(
        SIDE_UM, SIDE_UM, seed=8, n_blobs=2, scanner_border=True, glass_edge=True, bubbles=True
    )
    assert design.artifacts.border and design.artifacts.glass_edge and design.artifacts.bubbles
    thumb, truth, content = _render(design)
    artifacts = content.artifact_od(*_grid(truth.shape[0]))[1] & ~truth  # those on glass
    result = detect_tissue(thumb, MPP, device="cpu")
    assert (result.mask & artifacts).sum() <= 0.01 * artifacts.sum()
    assert result.artifacts[artifacts].mean() > 0.8
    assert iou(result.mask, truth) > 0.95
    assert not result.pen.any(), "artifacts are not ink"


def test_bubble_rim_that_is_tinted_is_still_not_tissue() -> None:
    # A rim with some stain colour (mounting medium) escapes the colourless rule and
    # must be caught by shape: thin and hollow.
    design = make_design(SIDE_UM, SIDE_UM, seed=9, n_blobs=1)
    design = dataclasses.replace(
        design, artifacts=ArtifactDesign(bubbles=((300.0, 300.0, 200.0, 14.0),))
    )
    thumb, truth, content = _render(design)
    rim = content.artifact_od(*_grid(truth.shape[0]))[1]
    tinted = thumb.copy()
    tinted[rim] = (np.array([200, 150, 190]) * 0.9).astype(np.uint8)  # pinkish ring
    result = detect_tissue(tinted, MPP, device="cpu")
    assert (result.mask & rim).sum() <= 0.02 * rim.sum()


def test_all_glass_is_no_tissue_not_an_error() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(241 + rng.normal(0, 1.5, (300, 400, 3)), 0, 255).astype(np.uint8)
    result = detect_tissue(glass, MPP, device="cpu")
    assert result.status == "no_tissue" and not result.mask.any()
    assert result.summary()["tissue_fraction"] == 0.0
    tiny = detect_tissue(np.full((1, 1, 3), 240, np.uint8), MPP, device="cpu")
    assert tiny.status == "no_tissue"


def test_mask_is_deterministic_and_summarised() -> None:
    thumb, _, _ = _render(make_design(SIDE_UM, SIDE_UM, seed=10, pen_marks=True))
    a = detect_tissue(thumb, MPP, device="cpu")
    b = detect_tissue(thumb, MPP, device="cpu")
    assert np.array_equal(a.mask, b.mask) and a.summary() == b.summary()
    summary = a.summary()
    assert summary["tissue_config_hash"] == TissueConfig().config_hash()
    assert summary["inks"] and 0 < summary["tissue_fraction"] < 1
    arrays = a.store_arrays()
    assert arrays["mask"][0].dtype == np.uint8 and arrays["thumbnail"][0].shape[-1] == 3
    assert arrays["mask"][1] == MPP


def test_areas_are_physical_not_pixels() -> None:
    """The same slide at 8 and 16 µm/px keeps the same pieces (areas are in µm²)."""
    design = make_design(SIDE_UM, SIDE_UM, seed=12, n_blobs=3, pen_marks=True)
    content = TissueContent(design)
    fine = detect_tissue(content.render(0, 0, 256, 256, 8.0), 8.0, device="cpu")
    coarse = detect_tissue(content.render(0, 0, 128, 128, 16.0), 16.0, device="cpu")
    assert abs(fine.tissue_area_mm2 - coarse.tissue_area_mm2) < 0.05 * fine.tissue_area_mm2


@pytest.mark.gpu
def test_gpu_and_cpu_masks_agree() -> None:
    for seed in range(6):
        design = make_design(
            SIDE_UM,
            SIDE_UM,
            seed=seed,
            pen_marks=True,
            faint=True,
            blur=True,
            scanner_border=seed % 2 == 1,
            glass_edge=seed % 2 == 1,
            bubbles=seed % 2 == 1,
        )
        thumb, _, _ = _render(design)
        cpu = detect_tissue(thumb, MPP, device="cpu")
        gpu = detect_tissue(thumb, MPP, device="cuda")
        assert gpu.device == "cuda"
        assert iou(cpu.mask, gpu.mask) >= 0.99
        assert iou(cpu.pen, gpu.pen) >= 0.99

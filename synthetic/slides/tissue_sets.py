"""Synthetic slide sets that are hard for tissue detection, and scoring a detector on them
(tests and benchmarks share them)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.tissue.config import TissueConfig
from ingest.tissue.evaluate import iou, resample_nearest

if TYPE_CHECKING:
    from infra.arrays import Device
    from synthetic.slides import SyntheticSlide, SyntheticSlideSpec

__all__ = ["accuracy_specs", "score_slide", "write_slides"]


def accuracy_specs(
    count: int = 20,
    *,
    side: int = 2048,
    mpp: float = 0.5,
    seed: int = 1000,
    artifacts_every: int = 2,
    mask_mpp: float = 8.0,
    empty_level0: bool = False,
) -> list[SyntheticSlideSpec]:
    """Synthetic slides that are hard for tissue detection: every one has pen marks, one
    faint section (30% stain; the only one on single-section slides) and an out-of-focus
    area; every ``artifacts_every``-th one also a scanner border, a coverslip edge and
    air bubbles (0: none). Ground truth comes on a ``mask_mpp`` grid.

    ``empty_level0`` writes level 0 without pixels, five times faster: masks are made
    from the ×4 level and never read level 0 (a mask that did would see black)."""
    from synthetic.slides import SyntheticSlideSpec

    specs = []
    for i in range(count):
        artifacts = bool(artifacts_every) and i % artifacts_every == artifacts_every - 1
        specs.append(
            SyntheticSlideSpec(
                width=side,
                height=side,
                mpp=mpp,
                style="tiff",
                seed=seed + i,
                downsamples=(1, 4),
                pen_marks=True,
                faint=True,
                blur=True,
                scanner_border=artifacts,
                glass_edge=artifacts,
                bubbles=artifacts,
                empty_levels=int(empty_level0),
                mask_max_side=max(1, int(round(side * mpp / mask_mpp))),
            )
        )
    return specs


def _write_one(job: tuple[SyntheticSlideSpec, str]) -> SyntheticSlide:
    from synthetic.slides import write_synthetic_slide

    spec, path = job
    return write_synthetic_slide(path, spec)


def write_slides(
    specs: list[SyntheticSlideSpec], directory: str | os.PathLike, workers: int = 1
) -> list[SyntheticSlide]:
    """Write ``specs`` as ``directory/synthetic_<seed>.tif``, in ``workers`` processes."""
    jobs = [(spec, str(Path(directory) / f"synthetic_{spec.seed}.tif")) for spec in specs]
    if workers <= 1:
        return [_write_one(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (decoders, BLAS) a fork would copy
    # mid-operation.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_write_one, jobs))


def score_slide(
    slide: SyntheticSlide,
    config: TissueConfig | None = None,
    device: Device = "cpu",
    *,
    refined: bool = False,
) -> dict[str, Any]:
    """slidebank's mask and the saturation-Otsu baseline on the same thumbnail, scored
    against the slide's ground truth: IoU, share of ink pixels left out, seconds.

    ``refined`` also scores the edge-refined slide mask (``refined_iou``, on the ground
    truth's own grid, which should then be finer than the thumbnail)."""
    from ingest.slides import open_slide
    from ingest.tissue.baseline import saturation_otsu_mask
    from ingest.tissue.mask import detect_tissue

    config = config or TissueConfig()
    with open_slide(str(slide.path)) as opened:
        start = time.perf_counter()
        thumbnail, mpp = opened.thumbnail(config.thumbnail_mpp)
        read_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = detect_tissue(thumbnail, mpp, config, device).mask
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline = saturation_otsu_mask(thumbnail, mpp, config, device)
    baseline_s = time.perf_counter() - start
    truth = resample_nearest(slide.tissue_mask, ours.shape)
    pen = resample_nearest(slide.pen_mask, ours.shape)
    out: dict[str, Any] = {
        "slide": slide.path.name,
        "seed": slide.spec.seed,
        "mask_shape": list(ours.shape),
        "tissue_fraction_truth": round(float(truth.mean()), 6),
        "iou": iou(ours, truth),
        "baseline_iou": iou(baseline, truth),
        "pen_outside": _outside(ours, pen),
        "baseline_pen_outside": _outside(baseline, pen),
        "thumbnail_s": read_s,
        "seconds": ours_s,
        "baseline_seconds": baseline_s,
    }
    if refined:
        from ingest.tissue.mask import slide_tissue_mask

        start = time.perf_counter()
        with open_slide(str(slide.path)) as opened:
            fine = slide_tissue_mask(opened, config.replace(refine_edges=True), device)
        out["refined_seconds"] = time.perf_counter() - start
        out["refined_iou"] = iou(
            resample_nearest(fine.mask, slide.tissue_mask.shape), slide.tissue_mask
        )
        out["coarse_iou_truth_grid"] = iou(
            resample_nearest(ours, slide.tissue_mask.shape), slide.tissue_mask
        )
        out["refined_pen_outside"] = _outside(
            resample_nearest(fine.mask, slide.pen_mask.shape), slide.pen_mask
        )
    if slide.artifact_mask is not None:
        # Artifacts on glass: a bubble rim or coverslip edge over a section lies on
        # tissue that is still there (the ground truth counts it).
        artifacts = resample_nearest(slide.artifact_mask, ours.shape) & ~truth
        out["artifact_outside"] = _outside(ours, artifacts)
        out["baseline_artifact_outside"] = _outside(baseline, artifacts)
    return out


def _outside(mask: np.ndarray, marked: np.ndarray) -> float | None:
    """Share of ``marked`` pixels the mask leaves out (None when nothing is marked)."""
    total = int(marked.sum())
    return None if total == 0 else 1.0 - float((mask & marked).sum()) / total

"""The pasted-H&E case of benchmarks/tissue.py: slidebank (coarse and edge-refined) and
LazySlide on the same slide, IoU against the exact ground truth on one 1 µm grid."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ingest.slides import open_slide
from ingest.tiling import plan_slide
from ingest.tissue import TissueConfig, iou, resample_nearest
from synthetic.slides.pasted import PastedSlideSpec, write_pasted_slide

HERE = Path(__file__).resolve().parent
LAZYSLIDE = HERE / ".peers" / "lazyslide" / "bin" / "python"


def rasterize(polygons: list[dict], shape: tuple[int, int], scale: float) -> np.ndarray:
    """Polygons in level-0 pixels drawn on a grid ``scale`` grid pixels per level-0 pixel."""
    image = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(image)
    for poly in polygons:
        draw.polygon([(x * scale, y * scale) for x, y in poly["exterior"]], fill=255)
        for hole in poly["holes"]:
            draw.polygon([(x * scale, y * scale) for x, y in hole], fill=0)
    return np.asarray(image) > 127


def _scores(mask: np.ndarray, truth: np.ndarray, pen: np.ndarray) -> dict[str, Any]:
    return {
        "iou": iou(mask, truth),
        "pen_outside": 1.0 - float((mask & pen).sum()) / max(int(pen.sum()), 1),
        "false_pos_um2": int((mask & ~truth).sum()),
        "false_neg_um2": int((~mask & truth).sum()),
    }


def slidebank_side(path: str, truth: np.ndarray, pen: np.ndarray, refine: bool) -> dict[str, Any]:
    config = TissueConfig(refine_edges=refine)
    with open_slide(path) as slide:
        start = time.perf_counter()
        tissue, plan = plan_slide(slide, config, device="cpu")
        seconds = time.perf_counter() - start
    mask = resample_nearest(tissue.mask, truth.shape)
    out = _scores(mask, truth, pen)
    out.update(
        seconds=seconds,
        mask_mpp=tissue.mpp,
        tile_count=plan.tile_count,
        edge=tissue.edge.to_dict() if tissue.edge else None,
    )
    return out


def lazyslide_side(
    path: str, truth: np.ndarray, pen: np.ndarray, truth_mpp: float, slide_mpp: float
) -> dict[str, Any]:
    if not LAZYSLIDE.exists():
        return {"error": f"LazySlide venv missing at {LAZYSLIDE}"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lazyslide.json"
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        start = time.perf_counter()
        done = subprocess.run(
            [str(LAZYSLIDE), str(HERE / "_lazyslide_tissue.py"), path, str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            return {"error": done.stderr[-2000:]}
        result = json.loads(out.read_text())
    mask = rasterize(result["polygons"], truth.shape, slide_mpp / truth_mpp)
    scores = _scores(mask, truth, pen)
    scores.update(
        seconds=result["seconds"],
        process_wall_s=wall,
        version=result["lazyslide"],
        n_tissues=result["n_tissues"],
        level_shapes=result["level_shapes"],
    )
    return scores


def run_pasted(
    source: Path, workdir: Path, *, mpp: float, downsamples: tuple[int, ...]
) -> dict[str, Any]:
    spec = PastedSlideSpec(source=str(source), mpp=mpp, downsamples=downsamples)
    path = workdir / f"pasted_{mpp}.tif"
    print(f"writing real H&E pasted on glass at {mpp} µm/px ...", flush=True)
    slide = write_pasted_slide(path, spec)
    truth, pen = slide.tissue_mask, slide.pen_mask
    return {
        "slide": {
            "mpp": mpp,
            "size_px": list(slide.level_dimensions[0]),
            "downsamples": list(downsamples),
            "truth_mpp": slide.mask_mpp,
            "tissue_um2": int(truth.sum()),
            "source": source.name,
            "cut_radius_um": spec.cut_radius_um,
            "pen": spec.pen_ink,
        },
        "slidebank_coarse": slidebank_side(str(path), truth, pen, refine=False),
        "slidebank_refined": slidebank_side(str(path), truth, pen, refine=True),
        "lazyslide": lazyslide_side(str(path), truth, pen, slide.mask_mpp, mpp),
    }

"""Tissue detection: slidebank vs the classic saturation-Otsu mask, same slides, same run.

Cases:
  accuracy   synthetic slides (fully rendered pyramids) with pen marks, a faint section
             and an out-of-focus area; every other one also a black scanner border, a
             coverslip edge and air bubbles. Both methods run on the same thumbnail at
             8 µm/px; IoU against ground truth, share of ink (and of artifacts on glass)
             left out of the mask, and seconds per slide (mask only, and with the
             thumbnail read).
  real       the real Aperio sample (../shared/data/cmu_small_region.svs) when present:
             tissue fraction of both methods and slidebank's tile count (no ground truth),
             its ink split into margin dye and pen.
  pasted     real H&E (a piece of the sample slide cut along a known irregular outline)
             pasted on glass beside a pen stroke, at 0.25 µm/px (×4 pyramid) and 0.5 µm/px:
             IoU against the exact outline on a 1 µm grid for slidebank's coarse 8 µm/px
             mask, its edge-refined mask (2 µm/px band) and LazySlide 0.13.0's
             find_tissues (defaults; run in its own venv benchmarks/.peers/lazyslide).
  plan_100k  planning a 100,000² px slide (0.25 µm/px, ×4 pyramid) from scratch: wall and
             CPU seconds, tiles planned, pyramid levels read.

Usage: python -m benchmarks.tissue --out tissue.json [--quick] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DATA, ROOT, machine, print_table, write_json
from benchmarks._tissue_pasted import run_pasted
from ingest.slides import open_slide
from ingest.tiling import plan_slide
from ingest.tissue import TissueConfig, saturation_otsu_mask, slide_tissue_mask
from ingest.tissue.overlay import margin_dye
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from synthetic.slides.tissue_sets import accuracy_specs, score_slide, write_slides

REAL_SLIDE = ROOT.parent / "shared" / "data" / "cmu_small_region.svs"


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def run_accuracy(count: int, side: int, workdir: Path, workers: int, device: str) -> dict[str, Any]:
    # Ground truth on a 2 µm grid, so the edge-refined mask's gain can show (the coarse
    # and baseline IoUs stay on the 8 µm thumbnail grid, as before).
    specs = accuracy_specs(count, side=side, mpp=0.5, mask_mpp=2.0)
    print(f"writing {count} synthetic slides of {side}² px ...", flush=True)
    slides = write_slides(specs, workdir, workers)
    rows = [
        score_slide(slide, TissueConfig(), device, refined=True)  # type: ignore[arg-type]
        for slide in slides
    ]
    summary = {
        "slides": len(rows),
        "side_px": side,
        "mpp": 0.5,
        "mask_mpp": 8.0,
        "slidebank_mean_iou": _mean(rows, "iou"),
        "baseline_mean_iou": _mean(rows, "baseline_iou"),
        "slidebank_refined_mean_iou_2um": _mean(rows, "refined_iou"),
        "slidebank_coarse_mean_iou_2um": _mean(rows, "coarse_iou_truth_grid"),
        "slidebank_refined_pen_outside": _mean(rows, "refined_pen_outside"),
        "slidebank_refined_s_per_slide": _mean(rows, "refined_seconds"),
        "slidebank_min_iou": min(r["iou"] for r in rows),
        "baseline_min_iou": min(r["baseline_iou"] for r in rows),
        "slidebank_pen_outside": _mean(rows, "pen_outside"),
        "baseline_pen_outside": _mean(rows, "baseline_pen_outside"),
        "slidebank_artifacts_outside": _mean(rows, "artifact_outside"),
        "baseline_artifacts_outside": _mean(rows, "baseline_artifact_outside"),
        "slidebank_mask_s_per_slide": _mean(rows, "seconds"),
        "baseline_mask_s_per_slide": _mean(rows, "baseline_seconds"),
        "thumbnail_s_per_slide": _mean(rows, "thumbnail_s"),
    }
    return {"summary": summary, "rows": rows}


def run_real(device: str) -> dict[str, Any] | None:
    if not REAL_SLIDE.exists():
        return None
    with open_slide(str(REAL_SLIDE)) as slide:
        start = time.perf_counter()
        tissue, plan = plan_slide(slide, device=device)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
    dye = margin_dye(tissue)
    start = time.perf_counter()
    baseline = saturation_otsu_mask(tissue.thumbnail, tissue.thumbnail_grid_mpp, device=device)  # type: ignore[arg-type]
    return {
        "slide": REAL_SLIDE.name,
        "slidebank_tissue_fraction": tissue.tissue_fraction,
        "baseline_tissue_fraction": float(baseline.mean()),
        "tile_count": plan.tile_count,
        "inks": tissue.summary()["inks"],
        "plan_seconds": seconds,
        "baseline_mask_seconds": time.perf_counter() - start,
        "margin_dye_mm2": float(dye.sum()) * tissue.mpp**2 / 1e6,
        "pen_not_dye_mm2": float((tissue.pen & ~dye).sum()) * tissue.mpp**2 / 1e6,
        "edge_refinement": tissue.edge.to_dict() if tissue.edge else None,
    }


def run_plan_100k(workdir: Path, device: str, repeats: int = 3) -> dict[str, Any]:
    side = 100_000
    spec = SyntheticSlideSpec(
        width=side,
        height=side,
        mpp=0.25,
        style="tiff",
        seed=5,
        n_blobs=2,
        pen_marks=True,
        downsamples=(1, 4, 16, 64),
        empty_levels=2,
        mask_max_side=512,
    )
    print("writing the 100k² slide (levels 0 and 1 without pixels) ...", flush=True)
    slide_file = write_synthetic_slide(workdir / "huge.tif", spec)
    walls, cpus, levels = [], [], set()
    for _ in range(repeats):
        with open_slide(str(slide_file.path)) as slide:
            backend = slide._backend
            single, batch = backend.read_region, backend.read_regions

            def read_region(x, y, level, w, h, single=single):
                levels.add(level)
                return single(x, y, level, w, h)

            def read_regions(locs, level, size, threads=1, batch=batch):
                levels.add(level)
                return batch(locs, level, size, threads)

            backend.read_region, backend.read_regions = read_region, read_regions  # type: ignore[method-assign]
            wall, cpu = time.perf_counter(), time.process_time()
            tissue, plan = plan_slide(slide, device=device)  # type: ignore[arg-type]
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    start = time.perf_counter()
    with open_slide(str(slide_file.path)) as slide:
        mask_only = slide_tissue_mask(slide, device=device)  # type: ignore[arg-type]
    return {
        "side_px": side,
        "mpp": 0.25,
        "levels_read": sorted(levels),
        "wall_s_best": min(walls),
        "wall_s_first": walls[0],
        "cpu_s_best": min(cpus),
        "tile_count": plan.tile_count,
        "mask_shape": list(tissue.mask.shape),
        "tissue_fraction": tissue.tissue_fraction,
        "thumbnail_and_mask_s": time.perf_counter() - start,
        "status": plan.status,
        "mask_device": mask_only.device,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="tissue.json", help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="20 small slides (about a minute)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--workers", type=int, default=2, help="processes writing slides")
    parser.add_argument(
        "--only-pasted",
        action="store_true",
        help="run only the pasted-H&E case (slidebank vs LazySlide)",
    )
    args = parser.parse_args(argv)
    count, side = (20, 2048) if args.quick else (40, 4096)
    DATA.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tissue_", dir=DATA))
    accuracy = real = plan = None
    try:
        pasted = _pasted(workdir)
        if not args.only_pasted:
            accuracy = run_accuracy(count, side, workdir, args.workers, args.device)
            real = run_real(args.device)
            plan = run_plan_100k(workdir, args.device)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "tissue",
        "quick": args.quick,
        "device": args.device,
        "machine": machine(),
        "tissue_config_hash": TissueConfig().config_hash(),
        "pasted": pasted,
        "accuracy": accuracy,
        "real": real,
        "plan_100k": plan,
    }
    write_json(args.out, result)
    _print_pasted(pasted)
    if accuracy is None or plan is None:
        print(f"wrote {args.out}")
        return
    rows = [
        {
            "case": r["slide"],
            "iou": r["iou"],
            "baseline_iou": r["baseline_iou"],
            "ms": 1000 * r["seconds"],
            "baseline_ms": 1000 * r["baseline_seconds"],
        }
        for r in accuracy["rows"]
    ]
    print_table(rows, ["case", "iou", "baseline_iou", "ms", "baseline_ms"])
    s = accuracy["summary"]
    print(
        f"mean IoU  slidebank {s['slidebank_mean_iou']:.4f}   saturation-Otsu {s['baseline_mean_iou']:.4f}"
    )
    print(
        f"mean IoU on the 2 µm truth grid  coarse {s['slidebank_coarse_mean_iou_2um']:.4f}   "
        f"edge-refined {s['slidebank_refined_mean_iou_2um']:.4f}"
    )
    print(
        f"ink left out  slidebank {s['slidebank_pen_outside']:.4f}   "
        f"saturation-Otsu {s['baseline_pen_outside']:.4f}"
    )
    if real:
        print(
            f"{real['slide']}: tissue {real['slidebank_tissue_fraction']:.3f} "
            f"(baseline {real['baseline_tissue_fraction']:.3f}), {real['tile_count']} tiles"
        )
    print(
        f"100k² plan: {plan['wall_s_best']:.2f} s wall (first {plan['wall_s_first']:.2f} s), "
        f"{plan['cpu_s_best']:.2f} s CPU, {plan['tile_count']} tiles, levels read {plan['levels_read']}"
    )
    print(f"wrote {args.out}")


def _pasted(workdir: Path) -> dict[str, Any] | None:
    if not REAL_SLIDE.exists():
        return None
    return {
        "0.25": run_pasted(REAL_SLIDE, workdir, mpp=0.25, downsamples=(1, 4, 16)),
        "0.5": run_pasted(REAL_SLIDE, workdir, mpp=0.5, downsamples=(1, 4)),
    }


def _print_pasted(pasted: dict[str, Any] | None) -> None:
    if pasted is None:
        print("pasted: the real sample slide is not in ../shared/data")
        return
    rows = []
    for mpp, case in pasted.items():
        for side in ("lazyslide", "slidebank_coarse", "slidebank_refined"):
            r = case[side]
            rows.append(
                {
                    "slide_mpp": mpp,
                    "tool": side,
                    "iou": r.get("iou"),
                    "pen_outside": r.get("pen_outside"),
                    "s": r.get("seconds"),
                    "error": (r.get("error") or "")[-60:],
                }
            )
    print_table(rows, ["slide_mpp", "tool", "iou", "pen_outside", "s", "error"])


if __name__ == "__main__":
    main()

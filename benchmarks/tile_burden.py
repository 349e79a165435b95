"""Tumour burden and nuclear purity against planted truth, at the embedding level and
through pixels.

1. Embedding level (``synthetic.tiles.make_burden_cohort``): tumour regions
   covering 3-60 % of each slide, nuclei planted per tile in the handcrafted encoder's
   ``nuclei_density``; the true purity is the planted tumour nuclei over all nuclei.
2. Pixels: small slides with one tumour nest of varied radius in stroma, with a
   lymphocyte aggregate and scattered lymphocytes (``synthetic.slides.nests``), rendered
   tile by tile by the same tissue renderer the synthetic TIFF writer streams, and
   encoded by ``handcrafted-he-v1``: nuclei are found by its hematoxylin thresholding
   on real pixels, not planted. The true purity counts the nuclei the renderer drew
   (its nucleus lattices: tumour, stroma and lymphocyte nuclei on tissue); the tumour
   annotation is the planted nest rasterised at 2 µm. Not through TIFF/JPEG decoding
   or the Ray ingest (the tiles are the renderer's output directly).

Both: tile classifier (linear head, patient-level CV) on the tumour annotation, its
out-of-fold map into ``predictions/<name>``, :func:`training.tiles.tumour_burden`, then
Pearson r of the estimated purity against the true purity, and of the predicted tumour
fraction against the true area fraction. CPU only, no Ray.

Usage: python -m benchmarks.tile_burden [--quick] [--out benchmarks/results/tile_burden.json]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import ROOT, machine, print_table, write_json

FULL = {"slides": 60, "pixel_slides": 60, "folds": 5}
QUICK = {"slides": 40, "pixel_slides": 40, "folds": 4}

SIDE_PX = 1024  # 512 µm square slides at 0.5 µm/px
MPP = 0.5
TILE_PX = 128  # 64 µm tiles: an 8 × 8 grid
RASTER_UM = 2.0  # truth rasters (nest annotation, area fraction)


@dataclass(frozen=True)
class PixelSlide:
    slide_id: str
    coords: np.ndarray  # (N, 2) level-0 x, y of the kept (tissue) tiles
    embeddings: np.ndarray  # (N, 64) handcrafted-he-v1
    tissue_fraction: np.ndarray
    nest: Any  # tumour geometry in level-0 px
    purity: float  # rendered tumour nuclei / all rendered nuclei on tissue
    fraction: float  # tumour area / tissue area


def _content(seed: int, radius_um: float, inflamed: bool) -> Any:
    from synthetic.slides.nests import NestedSlideSpec, _content, nest_layout

    spec = NestedSlideSpec(
        side=SIDE_PX,
        mpp=MPP,
        nest_radius_um=radius_um,
        aggregate_radius_um=20.0,
        cuff_um=20.0,
        gap_um=(25.0, 50.0),
        aggregates_per_nest=1,
    )
    return _content(spec, nest_layout(spec, inflamed, seed), seed)


def planted_nuclei(content: Any, side_um: float) -> tuple[int, int]:
    """(tumour, all) nuclei the renderer draws on tissue: its two nucleus lattices
    (tumour/stroma nuclei and lymphocytes), with the draws ``TissueContent._nuclei`` and
    ``_lymphocytes`` make, counted at each nucleus centre."""
    from synthetic.slides.content import _CELL_UM, _LYMPH_CELL_UM, _LYMPH_PRESENT, _hash01

    seed = content.design.seed
    n = int(math.ceil(side_um / _CELL_UM))
    ii, jj = np.meshgrid(np.arange(-1, n + 1), np.arange(-1, n + 1))
    cx = (ii + 0.15 + 0.7 * _hash01(ii, jj, seed, 1)) * _CELL_UM
    cy = (jj + 0.15 + 0.7 * _hash01(ii, jj, seed, 2)) * _CELL_UM
    present = (_hash01(ii, jj, seed, 3) < 0.35 + 0.5 * content.crowd(cx, cy)) & content.tissue_mask(
        cx, cy
    )
    tumour = present & (content.nest_field(cx, cy) > 0)
    m = int(math.ceil(side_um / _LYMPH_CELL_UM))
    li, lj = np.meshgrid(np.arange(-1, m + 1), np.arange(-1, m + 1))
    lx = (li + 0.2 + 0.6 * _hash01(li, lj, seed, 11)) * _LYMPH_CELL_UM
    ly = (lj + 0.2 + 0.6 * _hash01(li, lj, seed, 12)) * _LYMPH_CELL_UM
    draw = _hash01(li, lj, seed, 13)
    lymph = (
        (draw < content.design.lymphocyte_background)
        | ((draw < _LYMPH_PRESENT) & (content.lymphocyte_field(lx, ly) > 0))
    ) & content.tissue_mask(lx, ly)
    return int(tumour.sum()), int(present.sum() + lymph.sum())


def _truth_rasters(content: Any, side_um: float) -> tuple[Any, float]:
    """The nest (tumour, on tissue) as a polygon in level-0 px, and its area fraction."""
    import shapely

    from features.annotations.masks import mask_geometries

    n = int(side_um / RASTER_UM)
    centres = (np.arange(n) + 0.5) * RASTER_UM
    x, y = np.meshgrid(centres, centres)
    tissue = content.tissue_mask(x, y)
    nest = (content.nest_field(x, y) > 0) & tissue
    geometry = mask_geometries(nest.astype(np.uint8)).get(1)
    scale = RASTER_UM / MPP
    polygon = shapely.transform(geometry, lambda xy: xy * scale)
    return polygon, float(nest.sum() / max(tissue.sum(), 1))


def pixel_slide(slide_id: str, seed: int, radius_um: float, inflamed: bool) -> PixelSlide:
    """Render, encode and keep the tissue tiles (≥ 50 % tissue) of one nested slide."""
    from features.encoders.handcrafted import FEATURE_NAMES, handcrafted_features

    content = _content(seed, radius_um, inflamed)
    side_um, tile_um = SIDE_PX * MPP, TILE_PX * MPP
    coords, tiles = [], []
    for y in range(0, SIDE_PX, TILE_PX):
        for x in range(0, SIDE_PX, TILE_PX):
            if content.is_glass(x * MPP, y * MPP, tile_um, tile_um):
                continue
            coords.append((x, y))
            tiles.append(content.render(x * MPP, y * MPP, TILE_PX, TILE_PX, MPP))
    emb = handcrafted_features(np.stack(tiles))
    tissue = emb[:, FEATURE_NAMES.index("tissue_fraction")]
    keep = tissue >= 0.5
    tumour, total = planted_nuclei(content, side_um)
    nest, fraction = _truth_rasters(content, side_um)
    return PixelSlide(
        slide_id,
        np.asarray(coords, np.int64)[keep],
        emb[keep],
        tissue[keep],
        nest,
        tumour / max(total, 1),
        fraction,
    )


def make_pixel_cohort(root: str, n_slides: int, seed: int = 0) -> tuple[Any, list[PixelSlide]]:
    """A store of ``n_slides`` pixel slides (one patient each, nest radius 60-150 µm,
    inflamed or excluded alternately) with their nest annotations (set ``default``)."""
    from features.annotations import Annotation, AnnotationSet, store_annotations
    from features.encoders.handcrafted import HANDCRAFTED_VERSION
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

    rng = np.random.default_rng(seed)
    store = FeatureStore.open(root, create=True)
    slides, pending = [], []
    for i in range(n_slides):
        slide = pixel_slide(
            f"N{seed:02d}-{i:03d}",
            seed * 1000 + i,
            float(rng.uniform(60.0, 150.0)),
            inflamed=bool(i % 2),
        )
        info = SlideInfo(
            source_uri=f"synthetic://nested/{slide.slide_id}",
            mpp=MPP,
            mpp_source="metadata",
            level_dimensions=((SIDE_PX, SIDE_PX),),
            patient_id=f"P{slide.slide_id}",
        )
        batch = tile_batch(
            slide.coords[:, 0],
            slide.coords[:, 1],
            slide.embeddings,
            tile_size=TILE_PX,
            read_mpp=MPP,
            tissue_fraction=slide.tissue_fraction,
        )
        pending.append(
            store.write_slide(
                SlideKey(slide.slide_id, HANDCRAFTED_VERSION, "nested1"), info, [batch]
            )
        )
        slides.append(slide)
    store.commit(pending)
    for slide in slides:
        store_annotations(
            store,
            slide.slide_id,
            AnnotationSet((Annotation(0, "tumour", slide.nest),), slide.slide_id),
            clip=True,
        )
    return store, slides


def evaluate(
    store: Any, purity: dict[str, float], fraction: dict[str, float], folds: int
) -> dict[str, Any]:
    """Tile classifier → map → burden; Pearson r against the truth."""
    from scipy import stats

    from training.tiles import (
        BurdenConfig,
        TileClassifierConfig,
        TileTask,
        run_tile_classifier,
        tumour_burden,
        write_predictions,
    )

    t0 = time.perf_counter()
    result = run_tile_classifier(
        store, TileClassifierConfig(TileTask("tumour"), folds=folds, n_boot=100), write=False
    )
    write_predictions(store, result)
    burden = tumour_burden(store, BurdenConfig(result.name))
    true_p = np.array([purity[s] for s in burden["slide_id"]])
    true_f = np.array([fraction[s] for s in burden["slide_id"]])
    out = {
        "slides": len(burden),
        "tiles": len(result.data),
        "seconds": time.perf_counter() - t0,
        "tile_auroc": result.metrics["auroc"]["value"],
        "map_dice": result.dice,
        "true_purity_range": [float(true_p.min()), float(true_p.max())],
        "true_fraction_range": [float(true_f.min()), float(true_f.max())],
    }
    for column, truth in (("purity", true_p), ("purity_soft", true_p), ("tumour_fraction", true_f)):
        estimate = burden[column].to_numpy(np.float64)
        r = stats.pearsonr(truth, estimate)
        slope, intercept = np.polyfit(truth, estimate, 1)
        out[column] = {
            "pearson_r": float(r.statistic),
            "p_value": float(r.pvalue),
            "slope": float(slope),
            "intercept": float(intercept),
            "mean_abs_error": float(np.abs(estimate - truth).mean()),
        }
    return out


def embedding_level(root: Path, size: dict[str, Any]) -> dict[str, Any]:
    from synthetic.tiles import make_burden_cohort

    t0 = time.perf_counter()
    cohort = make_burden_cohort(str(root / "emb"), n_slides=size["slides"], seed=7)
    built = time.perf_counter() - t0
    return {
        "build_seconds": built,
        **evaluate(cohort.store, cohort.purity, cohort.fraction, size["folds"]),
    }


def pixel_level(root: Path, size: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    store, slides = make_pixel_cohort(str(root / "pix"), size["pixel_slides"], seed=3)
    built = time.perf_counter() - t0
    purity = {s.slide_id: s.purity for s in slides}
    fraction = {s.slide_id: s.fraction for s in slides}
    return {"build_seconds": built, **evaluate(store, purity, fraction, size["folds"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tile_burden.json"))
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        emb = embedding_level(Path(tmp), size)
        pix = pixel_level(Path(tmp), size)
    rows = [
        {
            "level": level,
            "slides": r["slides"],
            "purity_r": r["purity"]["pearson_r"],
            "purity_soft_r": r["purity_soft"]["pearson_r"],
            "fraction_r": r["tumour_fraction"]["pearson_r"],
            "tile_auroc": r["tile_auroc"],
            "seconds": r["build_seconds"] + r["seconds"],
        }
        for level, r in (("embedding", emb), ("pixels", pix))
    ]
    print_table(
        rows,
        ["level", "slides", "purity_r", "purity_soft_r", "fraction_r", "tile_auroc", "seconds"],
    )
    write_json(
        args.out,
        {
            "machine": machine(),
            "quick": args.quick,
            "size": size,
            "note": "2-core machine shared with other jobs while measured",
            "embedding_level": emb,
            "pixel_level": pix,
            "total_seconds": time.perf_counter() - started,
        },
    )


if __name__ == "__main__":
    main()

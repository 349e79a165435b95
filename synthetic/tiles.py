"""Synthetic tumour/non-tumour cohorts at the embedding level, with their annotations.

Each slide is a grid of 256-px tiles (0.5 µm/px) with one or two irregular tumour
regions (star-shaped polygons with a wavy border). A tile's embedding is Gaussian
noise plus ``separation × coverage`` along one tumour direction, so border tiles are
in between, as real ones are. ``separation`` sets single-tile separability: at
coverage 0 vs 1 the best single-tile accuracy is Φ(separation / 2) (≈ 0.75 at 1.35;
≈ 1 at 6). The polygons go into the store through the annotation importer's checks.

:func:`make_burden_cohort` adds nuclei: slides whose tumour covers a known, varied
share of the tissue, written as ``handcrafted-he-v1`` tiles whose ``nuclei_density``
holds each tile's planted nuclei (tumour nuclei denser than stromal ones), so a
slide's true purity (tumour nuclei over all nuclei) is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.annotations import Annotation, AnnotationSet, store_annotations
from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch
from infra.errors import ConfigError

__all__ = [
    "TILE",
    "BurdenCohort",
    "TileCohort",
    "make_burden_cohort",
    "make_tile_cohort",
    "tumour_polygon",
]

TILE = 256
MPP = 0.5
ENCODER = "synthetic-tiles"
CLASS = "tumour"


@dataclass(frozen=True)
class TileCohort:
    store: FeatureStore
    slide_ids: list[str]
    truth: dict[str, Any]  # slide -> tumour geometry (level-0 px)
    separation: float


def tumour_polygon(rng: np.random.Generator, side_px: float, radius: float | None = None) -> Any:
    """An irregular star-shaped region inside a ``side_px`` square (mean ``radius`` in
    px; default 15-28 % of the side)."""
    from shapely.geometry import Polygon

    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    radius = side_px * rng.uniform(0.15, 0.28) if radius is None else radius
    wobble = sum(
        rng.uniform(0.03, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        for k in (2, 3, 5, 7)
    )
    cx, cy = rng.uniform(0.3, 0.7, size=2) * side_px
    r = radius * (1 + wobble)
    return Polygon(np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta)]))


def _slide(
    rng: np.random.Generator, side: int, dim: int, separation: float, direction: np.ndarray
) -> tuple[Any, Any, np.ndarray]:
    import shapely

    from features.annotations.coverage import class_coverage, tile_boxes

    extent = side * TILE
    regions = [tumour_polygon(rng, extent) for _ in range(int(rng.integers(1, 3)))]
    truth = shapely.union_all(regions).intersection(shapely.box(0, 0, extent, extent))
    gx, gy = np.meshgrid(np.arange(side) * TILE, np.arange(side) * TILE)
    x, y = gx.ravel(), gy.ravel()
    cover = class_coverage(tile_boxes(x, y, TILE), truth)
    emb = rng.normal(size=(len(x), dim)) + separation * cover[:, None] * direction[None, :]
    batch = tile_batch(x, y, emb.astype(np.float32), tile_size=TILE, read_mpp=MPP)
    return truth, batch, cover


def make_tile_cohort(
    root: str,
    *,
    n_slides: int = 8,
    side: int = 24,
    dim: int = 16,
    separation: float = 6.0,
    seed: int = 0,
) -> TileCohort:
    """A store at ``root`` with ``n_slides`` slides (one patient each) and their
    tumour annotations imported as set ``default``."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    store = FeatureStore.open(root, create=True)
    pending, truth = [], {}
    for i in range(n_slides):
        sid = f"T{seed:02d}-{i:03d}"
        geometry, batch, _ = _slide(rng, side, dim, separation, direction)
        info = SlideInfo(
            source_uri=f"synthetic://tiles/{sid}",
            mpp=MPP,
            mpp_source="metadata",
            level_dimensions=((side * TILE, side * TILE),),
            patient_id=f"P{sid}",
        )
        pending.append(store.write_slide(SlideKey(sid, ENCODER, "tiles1"), info, [batch]))
        truth[sid] = geometry
    store.commit(pending)
    for sid, geometry in truth.items():
        anns = AnnotationSet((Annotation(0, CLASS, geometry, color=(200, 30, 30)),), sid)
        store_annotations(store, sid, anns)
    return TileCohort(store, list(truth), truth, separation)


# Planted nuclei per 256-px tile (128 µm at 0.5 µm/px): tumour is about 2.5x as cellular.
TUMOUR_NUCLEI = 90.0
OTHER_NUCLEI = 35.0


@dataclass(frozen=True)
class BurdenCohort:
    store: FeatureStore
    slide_ids: list[str]
    truth: dict[str, Any]  # slide -> tumour geometry (level-0 px)
    purity: dict[str, float]  # slide -> planted tumour nuclei / all nuclei
    fraction: dict[str, float]  # slide -> tumour area / slide (all tissue) area


def _nuclei_embeddings(
    rng: np.random.Generator, cover: np.ndarray, separation: float, direction: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """handcrafted-he-v1-shaped embeddings carrying planted nuclei; (emb, tumour, all)."""
    from features.encoders.handcrafted import FEATURE_NAMES

    tumour = rng.poisson(TUMOUR_NUCLEI * cover)
    other = rng.poisson(OTHER_NUCLEI * (1 - cover))
    emb = (
        rng.normal(size=(len(cover), len(FEATURE_NAMES)))
        + separation * cover[:, None] * direction[None, :]
    )
    emb[:, FEATURE_NAMES.index("tissue_fraction")] = 1.0
    emb[:, FEATURE_NAMES.index("nuclei_density")] = np.log1p((tumour + other) / TILE**2 * 1e4)
    return emb.astype(np.float32), float(tumour.sum()), float((tumour + other).sum())


def make_burden_cohort(
    root: str,
    *,
    n_slides: int = 40,
    side: int = 10,
    separation: float = 4.0,
    seed: int = 0,
    slide_ids: list[str] | None = None,
) -> BurdenCohort:
    """A store at ``root`` of ``n_slides`` slides (one patient each) whose tumour covers
    3-60 % of the slide, as ``handcrafted-he-v1`` tiles, with tumour annotations (set
    ``default``) and the planted purity and tumour fraction of every slide.
    ``slide_ids`` names the slides (default ``B<seed>-<i>``)."""
    import shapely

    from features.annotations.coverage import class_coverage, tile_boxes
    from features.encoders.handcrafted import FEATURE_NAMES, HANDCRAFTED_VERSION

    if slide_ids is not None and len(slide_ids) != n_slides:
        raise ConfigError(f"{len(slide_ids)} slide_ids for {n_slides} slides")
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=len(FEATURE_NAMES))
    direction[[FEATURE_NAMES.index("tissue_fraction"), FEATURE_NAMES.index("nuclei_density")]] = 0
    direction /= np.linalg.norm(direction)
    store = FeatureStore.open(root, create=True)
    extent = side * TILE
    gx, gy = np.meshgrid(np.arange(side) * TILE, np.arange(side) * TILE)
    x, y = gx.ravel(), gy.ravel()
    pending, cohort = [], BurdenCohort(store, [], {}, {}, {})
    for i in range(n_slides):
        sid = slide_ids[i] if slide_ids else f"B{seed:02d}-{i:03d}"
        radius = extent * float(np.sqrt(rng.uniform(0.03, 0.6) / np.pi))
        shape = tumour_polygon(rng, extent, radius)
        truth = shape.intersection(shapely.box(0, 0, extent, extent))
        cover = class_coverage(tile_boxes(x, y, TILE), truth)
        emb, tumour, total = _nuclei_embeddings(rng, cover, separation, direction)
        info = SlideInfo(
            source_uri=f"synthetic://burden/{sid}",
            mpp=MPP,
            mpp_source="metadata",
            level_dimensions=((extent, extent),),
            patient_id=f"P{sid}",
        )
        batch = tile_batch(x, y, emb, tile_size=TILE, read_mpp=MPP, tissue_fraction=1.0)
        pending.append(
            store.write_slide(SlideKey(sid, HANDCRAFTED_VERSION, "burden1"), info, [batch])
        )
        cohort.slide_ids.append(sid)
        cohort.truth[sid] = truth
        cohort.purity[sid] = tumour / total
        cohort.fraction[sid] = float(truth.area) / extent**2
    store.commit(pending)
    for sid, geometry in cohort.truth.items():
        store_annotations(store, sid, AnnotationSet((Annotation(0, CLASS, geometry),), sid))
    return cohort

"""The ambiguous-tile cohort made from pixels: pyramidal TIFFs, the real ingestion, and
tumour annotations, for tile heads with and without context (issue 31).

The pixel counterpart of :func:`synthetic.tiles.make_tile_cohort` at low separation.
Each slide is tissue but for a one-tile frame of glass, with one or two irregular tumour
regions (:func:`synthetic.tiles.tumour_polygon`, a wavy border). Tumour and other tissue
differ only in "crowding" (:meth:`synthetic.slides.content.TissueContent.crowd`: how
many nuclei there are and how large): ``tumour_crowd`` inside a region, ``other_crowd``
outside. Every tile's crowding is then moved by its own random offset (Gaussian, sd
``jitter``, one draw per tile of the ingest grid), so a crowded stroma tile and a sparse
tumour tile look alike: a single tile is ambiguous, while the region around it is not.

The slides are written by the same tile renderer as :mod:`synthetic.slides.nests` and
ingested by :func:`ingest.pipeline.runner.run_ingest` with the default weight-free
encoder (``handcrafted-he-v1``: nuclei found by thresholding real pixels). The planted
polygons are stored as annotation set ``default`` (class ``tumour``) through the
importer's checks, so tile coverage is exact.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.errors import ConfigError
from synthetic.slides.content import TissueContent, TissueDesign, _hash01

__all__ = [
    "AmbiguousSlideSpec",
    "PixelTileCohort",
    "ambiguous_content",
    "ambiguous_regions",
    "make_pixel_tile_cohort",
    "write_ambiguous_slide",
]

log = logging.getLogger(__name__)

PREFIX = "AMB"
CLASS = "tumour"


@dataclass(frozen=True)
class AmbiguousSlideSpec:
    """``side_tiles`` × ``side_tiles`` tiles of ``tile_size`` px at ``mpp`` µm/px.

    At ``jitter`` 0.22 with crowding 0.65 vs 0.35 a linear head on the weight-free
    encoder's features separates pure tumour from pure other tiles about 77% of the
    time (``benchmarks/results/tile_tasks.json``, ``pixels.single_tile_accuracy``).
    """

    side_tiles: int = 16
    tile_size: int = 256
    mpp: float = 0.5
    tumour_crowd: float = 0.65
    other_crowd: float = 0.35
    jitter: float = 0.22
    max_regions: int = 2
    jpeg_quality: int = 90

    @property
    def side(self) -> int:
        return self.side_tiles * self.tile_size

    def validate(self) -> None:
        if not 4 <= self.side_tiles <= 128:
            raise ConfigError(f"side_tiles must be in [4, 128], not {self.side_tiles}")
        for name in ("tumour_crowd", "other_crowd"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if self.jitter < 0 or not math.isfinite(self.jitter):
            raise ConfigError(f"jitter must be finite and >= 0, not {self.jitter}")
        if self.max_regions < 1:
            raise ConfigError(f"max_regions must be >= 1, not {self.max_regions}")


def ambiguous_regions(spec: AmbiguousSlideSpec, seed: int) -> Any:
    """The planted tumour (a shapely geometry in level-0 px), inside the tissue."""
    import shapely
    from shapely import affinity

    from synthetic.tiles import tumour_polygon

    rng = np.random.default_rng([seed, 0x7A3B])
    inner = float(spec.side - 2 * spec.tile_size)
    n = int(rng.integers(1, spec.max_regions + 1))
    shapes = [tumour_polygon(rng, inner) for _ in range(n)]
    region = shapely.union_all(shapes).intersection(shapely.box(0, 0, inner, inner))
    return affinity.translate(region, spec.tile_size, spec.tile_size)


class AmbiguousContent(TissueContent):
    """Tissue everywhere but a one-tile frame of glass (tissue detection measures
    against the slide's own glass); crowding from the planted region plus one offset
    per tile."""

    def __init__(
        self, design: TissueDesign, spec: AmbiguousSlideSpec, tumour: Any, seed: int
    ) -> None:
        import shapely
        from shapely import affinity

        super().__init__(design)
        self.spec = spec
        self.seed = seed
        # Region membership is asked in µm; the geometry is in level-0 px.
        self.tumour = affinity.scale(tumour, spec.mpp, spec.mpp, origin=(0, 0))
        shapely.prepare(self.tumour)
        self.tile_um = spec.tile_size * spec.mpp
        self.side_um = spec.side * spec.mpp

    def blob_field(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """> 0 inside the frame: distance to the glass (µm) over the tile side."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        inset = np.minimum(np.minimum(x, self.side_um - x), np.minimum(y, self.side_um - y))
        return (inset - self.tile_um) / self.tile_um, np.ones(x.shape)

    def is_glass(self, x0: float, y0: float, w_um: float, h_um: float) -> bool:
        t, far = self.tile_um, self.side_um - self.tile_um
        return x0 + w_um <= t or y0 + h_um <= t or x0 >= far or y0 >= far

    def tile_offset(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The Gaussian crowding offset of grid tile (column i, row j) (Box-Muller)."""
        u1 = np.maximum(_hash01(i, j, self.seed, 41), 1e-12)
        u2 = _hash01(i, j, self.seed, 42)
        return self.spec.jitter * np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)

    def crowd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        import shapely

        x, y = np.asarray(x, float), np.asarray(y, float)
        inside = shapely.contains_xy(self.tumour, x, y)
        base = np.where(inside, self.spec.tumour_crowd, self.spec.other_crowd)
        i = np.floor(x / self.tile_um).astype(np.int64)
        j = np.floor(y / self.tile_um).astype(np.int64)
        return np.clip(base + self.tile_offset(i, j), 0.0, 1.0)


def ambiguous_content(spec: AmbiguousSlideSpec, seed: int) -> AmbiguousContent:
    from synthetic.slides.design import make_design

    spec.validate()
    side_um = spec.side * spec.mpp
    design = make_design(side_um, side_um, seed=seed, n_blobs=1)
    return AmbiguousContent(design, spec, ambiguous_regions(spec, seed), seed)


def write_ambiguous_slide(path: str | os.PathLike, spec: AmbiguousSlideSpec, seed: int) -> Any:
    """Write a pyramidal tiled-JPEG TIFF (levels 1 and 4, MPP in the resolution tags);
    returns the planted tumour geometry (level-0 px)."""
    from synthetic.slides.writer import write_content_tiff

    write_content_tiff(
        path,
        ambiguous_content(spec, seed),
        side=spec.side,
        mpp=spec.mpp,
        tile_size=spec.tile_size,
        jpeg_quality=spec.jpeg_quality,
        seed=seed,
    )
    return ambiguous_regions(spec, seed)


def _write(job: tuple[str, AmbiguousSlideSpec, int]) -> str:
    path, spec, seed = job
    if not Path(path).exists():  # a slide written once is reused (it is seeded)
        write_ambiguous_slide(path, spec, seed)
    return path


@dataclass(frozen=True)
class PixelTileCohort:
    store: Any  # FeatureStore
    slide_ids: list[str]
    truth: dict[str, Any]  # slide -> tumour geometry (level-0 px)
    spec: AmbiguousSlideSpec
    encoder: str
    seconds: dict[str, float]


def make_pixel_tile_cohort(
    root: str | os.PathLike,
    n_slides: int = 12,
    *,
    spec: AmbiguousSlideSpec | None = None,
    seed: int = 0,
    processes: int | None = None,
    ingest_options: Any = None,
) -> PixelTileCohort:
    """Write ``n_slides`` slides under ``root/slides``, ingest them into ``root/store``
    with the default :class:`ingest.pipeline.config.IngestConfig` (one patient per
    slide), and store each slide's planted tumour as annotation set ``default``."""
    import time

    from features.annotations import Annotation, AnnotationSet, store_annotations
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    spec = spec or AmbiguousSlideSpec()
    spec.validate()
    if n_slides < 2:
        raise ConfigError(f"n_slides must be >= 2 (patient-level folds), got {n_slides}")
    root = Path(root)
    (root / "slides").mkdir(parents=True, exist_ok=True)
    seeds = [seed * 100_000 + i for i in range(n_slides)]
    jobs = [
        (str(root / "slides" / f"{PREFIX}{seed:02d}-{i:03d}.tif"), spec, s)
        for i, s in enumerate(seeds)
    ]
    t0 = time.perf_counter()
    workers = max(1, min(processes or os.cpu_count() or 1, n_slides))
    if workers == 1:
        paths = [_write(job) for job in jobs]
    else:  # spawn, not fork: the caller may hold Ray or PyTorch threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            paths = list(pool.map(_write, jobs))
    written = time.perf_counter() - t0
    store = FeatureStore.open(str(root / "store"), None, create=True)
    config = IngestConfig()
    ids = [Path(p).stem for p in paths]
    sources = [SlideSource(p, sid, patient_id=f"P{sid}") for p, sid in zip(paths, ids, strict=True)]
    t0 = time.perf_counter()
    result = run_ingest(
        sources, store, config, ingest_options or RunOptions(progress=False), dashboard=False
    )
    ingested = time.perf_counter() - t0
    if result.failed:
        first = result.failed[0]
        raise ConfigError(
            f"{len(result.failed)} ambiguous-tile slides failed to ingest, e.g. "
            f"{first.slide_id}: {first.error_type} {first.error_message}"
        )
    store = store.latest()
    truth = {}
    for sid, s in zip(ids, seeds, strict=True):
        truth[sid] = ambiguous_regions(spec, s)
        anns = AnnotationSet((Annotation(0, CLASS, truth[sid], color=(200, 30, 30)),), sid)
        store_annotations(store, sid, anns)
    store = store.latest()
    log.info(
        "ambiguous pixel cohort: %d slides written in %.0f s, ingested in %.0f s",
        n_slides,
        written,
        ingested,
    )
    return PixelTileCohort(
        store, ids, truth, spec, config.encoder_id, {"write": written, "ingest": ingested}
    )

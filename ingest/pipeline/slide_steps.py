"""The per-slide steps every engine runs, written once.

A slide goes through the same steps whichever engine drives it (:mod:`ingest.pipeline.engines`):
open it within its budget (:func:`slide_budget`, :func:`describe`), plan it and store its
thumbnail and mask (:func:`plan_and_store`), read its planned tiles in batches
(:func:`read_tiles`, :func:`batch_slices`), then QC and stain-normalize each batch
(:func:`qc_and_normalize`) on the host or on the device. The stage metrics are recorded
here too (:func:`record_stage`), so every engine records the same ones and the slide row's
``timings`` holds the same stages.

Work items travel between the driver and the workers as :class:`SlideItem`: plain
columns (``patient_id`` ``""`` and ``mpp`` NaN when unknown) that Ray Data can put in
Arrow blocks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from infra import metrics
from infra.errors import SlideCorruptError, SlideNotFoundError, SlideReadError

if TYPE_CHECKING:
    from features.store.location import StoreLocation
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.sources import SlideSource
    from ingest.slides import Slide
    from ingest.slides.limits import SlideBudget
    from ingest.slides.slide import Resample
    from ingest.tiling.plan import TilePlan
    from ingest.tissue import TissueMask

__all__ = [
    "ITEM_KEYS",
    "QC_STAIN",
    "SlideItem",
    "SlidePlan",
    "batch_slices",
    "describe",
    "item_mpp",
    "new_info",
    "plan_and_store",
    "qc_and_normalize",
    "read_tiles",
    "record_stage",
    "slide_budget",
    "slide_item",
    "slide_items",
]

log = logging.getLogger(__name__)

#: qc_flags bit (beside ingest.tissue.qc's background=1, blur=2, pen=4): the tile was
#: not stain-normalized (too little tissue to normalize, or clipped colours).
QC_STAIN = 8
_READ_ATTEMPTS = 3


class SlideItem(TypedDict):
    """One slide to ingest, as the driver hands it to a worker."""

    uri: str
    slide_id: str
    patient_id: str  # "" when the manifest names none
    mpp: float  # NaN: the slide's own resolution
    write_id: str


ITEM_KEYS: tuple[str, ...] = tuple(SlideItem.__annotations__)


def slide_items(todo: Sequence[SlideSource], write_ids: Mapping[str, str]) -> list[SlideItem]:
    """The run's work items, one per slide, each with the slide's ``write_id``."""
    return [
        SlideItem(
            uri=s.uri,
            slide_id=s.slide_id,
            patient_id=s.patient_id or "",
            mpp=float(s.mpp) if s.mpp else float("nan"),
            write_id=write_ids[s.slide_id],
        )
        for s in todo
    ]


def slide_item(row: Mapping[str, Any]) -> SlideItem:
    """The item's fields out of a larger mapping (a runner item, a Ray Data row) as Python
    scalars."""

    def plain(value: Any) -> Any:
        return value.item() if isinstance(value, np.generic) else value

    return SlideItem(
        uri=str(plain(row["uri"])),
        slide_id=str(plain(row["slide_id"])),
        patient_id=str(plain(row["patient_id"]) or ""),
        mpp=float(plain(row["mpp"])) if plain(row["mpp"]) else float("nan"),
        write_id=str(plain(row["write_id"])),
    )


def item_mpp(item: Mapping[str, Any]) -> float | None:
    """The manifest's resolution override, or None (the slide's own)."""
    mpp = item.get("mpp")
    return None if mpp is None or (isinstance(mpp, float) and math.isnan(mpp)) else float(mpp)


def new_info(item: Mapping[str, Any]) -> dict[str, Any]:
    """The slide-level facts a worker gathers while it works (stored with the slide row)."""
    return {"source_uri": item["uri"], "patient_id": item.get("patient_id") or None, "timings": {}}


def record_stage(info: dict[str, Any], stage: str, seconds: float) -> None:
    """One stage's time: the Ray metric, and added to the slide's ``<stage>_s`` timing."""
    metrics.observe_stage(stage, seconds)
    timings = info.setdefault("timings", {})
    timings[f"{stage}_s"] = round(timings.get(f"{stage}_s", 0.0) + seconds, 4)


def slide_budget(sid: str, options: RunOptions, started: float) -> SlideBudget:
    """Time and memory this slide may use in this reader (checked between chunks)."""
    from ingest.slides.limits import SlideBudget

    memory_gb = options.reader_memory_gb
    if memory_gb is None:
        import psutil

        memory_gb = psutil.virtual_memory().total / 2 / max(1, os.cpu_count() or 1) / 2**30
    return SlideBudget(sid, options.slide_time_budget_s, int(memory_gb * 2**30), started)


def describe(slide: Slide, info: dict[str, Any]) -> None:
    """The slide's metadata into ``info``; its bytes into the metrics."""
    meta = slide.metadata
    info.update(
        size_bytes=meta.size_bytes,
        checksum=meta.etag,
        reader=meta.reader,
        vendor=meta.vendor,
        level_dimensions=[list(d) for d in meta.level_dimensions],
        mpp=meta.mpp,
        mpp_source=meta.mpp_source,
        objective_power=meta.objective_power,
    )
    metrics.record_bytes(meta.size_bytes or 0)


@contextlib.contextmanager
def open_item(
    item: Mapping[str, Any],
    info: dict[str, Any],
    *,
    options: RunOptions,
    storage_options: Mapping[str, Any] | None,
    device: str,
    clock: float,
) -> Iterator[Slide]:
    """Open a manifest item's slide under its budget (counted from ``clock``, a
    ``time.monotonic()``) and record its metadata in ``info``: how every engine opens a
    slide to plan it."""
    from ingest.slides import open_slide

    with open_slide(
        item["uri"], storage_options=storage_options, mpp=item_mpp(item), device=device
    ) as slide:
        slide.budget = slide_budget(item["slide_id"], options, clock)
        describe(slide, info)
        yield slide


@dataclass(frozen=True)
class SlidePlan:
    """What planning a slide gives: its tissue, its tile plan and its stain normalizer
    (None: no stain normalization, or the fit failed)."""

    tissue: TissueMask
    plan: TilePlan
    normalizer: Any = None

    @property
    def tile_count(self) -> int:
        return int(self.plan.tile_count)

    def column(self, name: str) -> np.ndarray:
        """A column of the tile plan (x, y, tissue_fraction, qc_flags) as NumPy."""
        return self.plan.table.column(name).to_numpy()


def plan_and_store(
    slide: Slide,
    slide_id: str,
    info: dict[str, Any],
    *,
    config: IngestConfig,
    store: StoreLocation | None,
    device: Any,
    started: float,
) -> SlidePlan:
    """Plan an open slide: tissue mask, tile plan and stain parameters, with the thumbnail
    and mask written to the store (``store=None``: not written, for benchmarks). Records
    the ``plan`` stage from ``started`` (a ``perf_counter`` time: the open is part of it).

    ``slide_id`` is the manifest's id: region annotations are found by it.
    """
    from ingest.tiling.plan import plan_slide

    tissue, plan = plan_slide(slide, config.tissue, config.tiling, device=device, slide_id=slide_id)
    info["tissue_area_mm2"] = tissue.tissue_area_mm2
    if store is not None:
        _write_arrays(store, slide_id, tissue)
    normalizer = None
    if plan.tile_count == 0:
        info["plan_status"] = plan.status
    else:
        normalizer = _fit_normalizer(slide, slide_id, tissue, config, info)
    record_stage(info, "plan", time.perf_counter() - started)
    return SlidePlan(tissue, plan, normalizer)


def qc_and_normalize(
    tiles: Any, *, config: IngestConfig, glass: Any, normalizer: Any, device: Any, xp: Any = np
) -> tuple[Any, Any]:
    """Tile QC and stain normalization of one batch, in ``xp`` (NumPy, or CuPy on the
    device): the (normalized) tiles and their int32 QC flags, without the planned flags.
    Tiles left as scanned while stain normalization was asked for carry ``QC_STAIN``."""
    from ingest.tissue.qc import tile_flags

    flags = tile_flags(
        tiles, config.tiling.target_mpp, config.tiling.qc, config.tissue, glass=glass, device=device
    )
    if normalizer is not None:
        result = normalizer(tiles)
        tiles = result.images
        flags = flags | xp.where(result.flagged, QC_STAIN, 0).astype(np.int32)
    elif config.stain != "none":
        flags = flags | QC_STAIN
    return tiles, flags


def batch_slices(n: int, step: int, first: int | None = None) -> list[slice]:
    """``n`` tiles in batches of ``step``, the first one of ``first`` tiles when smaller."""
    cuts = [0]
    if first is not None and 0 < first < step:
        cuts.append(min(first, n))
    while cuts[-1] < n:
        cuts.append(min(cuts[-1] + step, n))
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


def read_tiles(
    slide: Slide,
    locations: np.ndarray,
    size: int,
    mpp: float,
    resample: Resample,
    xp: Any = None,
    threads: int = 1,
) -> Any:
    """Read with retries: object stores throttle and connections drop; corrupt bytes do not
    heal. ``xp``: the array module of the tiles (the device engine's; NumPy by default);
    ``threads``: decode threads (the device actor's CPUs; 1 in the one-core actors)."""
    for attempt in range(1, _READ_ATTEMPTS + 1):
        try:
            return slide.read_regions_at_mpp(
                locations, size, mpp, threads=threads, resample=resample, xp=xp
            )
        except SlideReadError as exc:
            if attempt == _READ_ATTEMPTS or isinstance(
                exc.__cause__, SlideCorruptError | SlideNotFoundError
            ):
                raise
            log.info("retrying read of %s (attempt %d): %s", slide.name, attempt + 1, exc)
            time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # the loop returns or raises


def _fit_normalizer(
    slide: Slide, sid: str, tissue: TissueMask, config: IngestConfig, info: dict[str, Any]
) -> Any:
    if config.stain == "none":
        return None
    from ingest.stain import (
        FitConfig,
        StainFitError,
        StainNormalizer,
        fit_slide,
        standard_reference,
    )

    try:
        params = fit_slide(
            slide,
            tissue.mask,
            tissue.mpp,
            mpp=config.tiling.target_mpp,
            tile_size=config.tiling.tile_size,
            n_tiles=32,
            resample=config.tiling.resample,
            config=FitConfig(method=config.stain),
            slide_id=sid,
        )
    except StainFitError as exc:
        # Too little or single-stain tissue: keep the tiles as scanned, flag them, say why.
        info["stain"] = {"status": "not_fitted", "reason": str(exc)[:300]}
        return None
    info["stain"] = {"status": "fitted", **params.to_dict()}
    return StainNormalizer(params, standard_reference())


def _write_arrays(store: StoreLocation, sid: str, tissue: TissueMask) -> None:
    from features.store import SlideArrays

    # One write for both (not one each): on a small slide the Zarr calls, not the bytes,
    # are the cost.
    SlideArrays(store, sid).write_thumbnail_and_mask(
        np.ascontiguousarray(tissue.thumbnail),
        tissue.mask.astype(np.uint8),
        thumbnail_mpp=tissue.thumbnail_grid_mpp,
        mask_mpp=tissue.mpp,
    )

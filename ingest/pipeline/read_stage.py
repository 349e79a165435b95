"""Stage 1 (CPU tasks): open a slide once, plan it, then stream normalized tile batches.

Planning and reading share one task per slide on purpose: the slide is opened (and, from
object storage, staged) once, and planning reads only a thumbnail, so splitting them
would cost a second open for nothing. Batches leave as they are read; Ray Data's
backpressure stops this generator when the encoders fall behind, so a slide's pixels
are never all in memory.

Failure isolation: any error becomes a ``failed`` row carrying its type and message,
and the run goes on with the next slide.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from infra import metrics
from infra.errors import SlideCorruptError, SlideCrashError, SlideNotFoundError, SlideReadError
from ingest.pipeline._faults import FaultPlan
from ingest.pipeline.attempts import MAX_CRASHES, ledger_by_name
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.rows import make_row
from ingest.slides import Slide, open_slide
from ingest.slides.backends.cucim_reader import warm_up
from ingest.slides.limits import SlideBudget
from ingest.slides.slide import Resample
from ingest.tiling.plan import plan_slide
from ingest.tissue.qc import tile_qc

__all__ = ["QC_STAIN", "ReadStage", "read_slides"]

log = logging.getLogger(__name__)

#: qc_flags bit (beside ingest.tissue.qc's background=1, blur=2, pen=4): the tile was
#: not stain-normalized (too little tissue to normalize, or clipped colours).
QC_STAIN = 8
_READ_ATTEMPTS = 3


class ReadStage:
    """Ray Data actor UDF around :func:`read_slides`.

    An actor rather than a task on purpose: a task's worker process may be reaped when
    idle (Ray keeps about one idle worker per CPU), and every fresh worker pays a second
    or more of imports before its first slide. With thousands of small slides that churn,
    not the reading, set the pace; an actor pays its imports once per run.
    """

    def __init__(self, *, config: IngestConfig, options: RunOptions, store: Any,
                 storage_options: Mapping[str, Any] | None, ledger: Any = None,
                 faults: FaultPlan | None = None) -> None:
        warm_up()  # load cuCIM before anything in this worker can import PyTorch
        self._kwargs = {"config": config, "options": options, "store": store,
                        "storage_options": storage_options, "ledger": ledger, "faults": faults}

    def __call__(self, batch: Mapping[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        yield from read_slides(batch, **self._kwargs)


def read_slides(
    batch: Mapping[str, Any], *, config: IngestConfig, options: RunOptions, store: Any,
    storage_options: Mapping[str, Any] | None, ledger: Any = None,
    faults: FaultPlan | None = None, first_batch: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """For each source row, yield that slide's tile-batch rows.

    ``first_batch``: the first slide's first batch holds this many tiles (the rest
    ``options.tiles_per_batch``), so a fresh actor's first tiles are stored within seconds.

    ``ledger`` (the name of an :class:`ingest.pipeline.attempts.AttemptLedger` actor) turns
    a slide that keeps crashing its worker into a failed row instead of an endless retry.
    """
    warm_up()  # load cuCIM before anything in this worker can import PyTorch
    for i in range(len(batch["slide_id"])):
        source = {k: _scalar(batch[k][i]) for k in ("uri", "slide_id", "patient_id", "mpp", "write_id")}
        first, first_batch = first_batch, None  # only the first slide's first batch
        if ledger is None:
            yield from _one_slide(source, config, options, store, storage_options, faults, first)
            continue
        import ray

        counts = ledger_by_name(ledger) if isinstance(ledger, str) else ledger
        crashes = ray.get(counts.begin.remote(source["write_id"]))
        if crashes >= MAX_CRASHES:
            yield _crashed(source, crashes)
        else:
            if crashes:  # a read started before and never finished: its worker died
                metrics.record_retry()
            yield from _one_slide(source, config, options, store, storage_options, faults, first)
        counts.finish.remote(source["write_id"])


def _crashed(source: Mapping[str, Any], crashes: int) -> dict[str, np.ndarray]:
    error = SlideCrashError(source["uri"], f"reading it killed the worker process {crashes} times "
                                           "(a crash in native decoding code); not retried again")
    log.warning("slide %s failed: %s", source["slide_id"], error)
    metrics.record_failure(type(error).__name__)
    info = {"source_uri": source["uri"], "patient_id": source["patient_id"], "timings": {}}
    return make_row(slide_id=source["slide_id"], write_id=source["write_id"], status="failed",
                    info=info, error=error)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value or None


def _one_slide(source: dict[str, Any], config: IngestConfig, options: RunOptions, store: Any,
               storage_options: Mapping[str, Any] | None, faults: FaultPlan | None = None,
               first_batch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    sid, write_id = source["slide_id"], source["write_id"]
    info: dict[str, Any] = {"source_uri": source["uri"], "patient_id": source["patient_id"],
                            "timings": {}}
    started, clock = time.perf_counter(), time.monotonic()
    try:
        if faults is not None:
            faults.before_read(sid)
        with open_slide(source["uri"], storage_options=storage_options, mpp=source["mpp"],
                        device=options.device) as slide:
            slide.budget = _budget(sid, options, clock)
            _describe(slide, info)
            yield from _tile_rows(slide, sid, write_id, info, config, options, store, started,
                                  first_batch)
    except Exception as exc:  # isolate the slide: record type and message, go on
        log.warning("slide %s failed: %s: %s", sid, type(exc).__name__, exc)
        metrics.record_failure(type(exc).__name__)
        yield make_row(slide_id=sid, write_id=write_id, status="failed", info=info, error=exc)


def _budget(sid: str, options: RunOptions, started: float) -> SlideBudget:
    """Time and memory this slide may use in this reader (checked between chunks)."""
    memory_gb = options.reader_memory_gb
    if memory_gb is None:
        import psutil

        memory_gb = psutil.virtual_memory().total / 2 / max(1, os.cpu_count() or 1) / 2**30
    return SlideBudget(sid, options.slide_time_budget_s, int(memory_gb * 2**30), started)


def _describe(slide: Slide, info: dict[str, Any]) -> None:
    meta = slide.metadata
    info.update(size_bytes=meta.size_bytes, checksum=meta.etag, reader=meta.reader,
                vendor=meta.vendor, level_dimensions=[list(d) for d in meta.level_dimensions],
                mpp=meta.mpp, mpp_source=meta.mpp_source, objective_power=meta.objective_power)
    metrics.record_bytes(meta.size_bytes or 0)


def _tile_rows(slide: Slide, sid: str, write_id: str, info: dict[str, Any],
               config: IngestConfig, options: RunOptions, store: Any,
               started: float, first_batch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    tissue, plan = plan_slide(slide, config.tissue, config.tiling, device=options.device)
    info["tissue_area_mm2"] = tissue.tissue_area_mm2
    _write_arrays(store, sid, tissue)
    info["timings"]["plan_s"] = round(time.perf_counter() - started, 4)
    metrics.observe_stage("plan", time.perf_counter() - started)
    if plan.tile_count == 0:
        info["plan_status"] = plan.status
        yield make_row(slide_id=sid, write_id=write_id, status="empty", info=info)
        return
    normalizer = _normalizer(slide, sid, tissue, config, info)
    table = plan.table
    xs, ys = table.column("x").to_numpy(), table.column("y").to_numpy()
    fractions = table.column("tissue_fraction").to_numpy()
    planned_flags = table.column("qc_flags").to_numpy()
    size, mpp = config.tiling.tile_size, config.tiling.target_mpp
    parts = batch_slices(len(xs), options.tiles_per_batch, first_batch)
    n_batches = len(parts)
    info["planned_tiles"] = len(xs)
    read_s = 0.0
    for b, part in enumerate(parts):
        t0 = time.perf_counter()
        tiles = _read(slide, np.stack([xs[part], ys[part]], 1), size, mpp, config.tiling.resample)
        flags = planned_flags[part] | tile_qc(tiles, mpp, config.tiling.qc, config.tissue,
                                              glass=tissue.glass_rgb, device="cpu").flags
        if normalizer is not None:
            result = normalizer(tiles)
            tiles = np.asarray(result.images)
            flags = flags | np.where(np.asarray(result.flagged), QC_STAIN, 0)
        elif config.stain != "none":
            flags = flags | QC_STAIN
        read_s += time.perf_counter() - t0
        metrics.observe_stage("read", time.perf_counter() - t0)
        if b == n_batches - 1:
            info["timings"]["read_s"] = round(read_s, 4)
        yield make_row(slide_id=sid, write_id=write_id, status="tiles", batch_index=b,
                       n_batches=n_batches, image=tiles, x=xs[part], y=ys[part], level=plan.level,
                       tissue_fraction=fractions[part], qc_flags=flags, info=info)


def batch_slices(n: int, step: int, first: int | None = None) -> list[slice]:
    """``n`` tiles in batches of ``step``, the first one of ``first`` tiles when smaller."""
    cuts = [0]
    if first is not None and 0 < first < step:
        cuts.append(min(first, n))
    while cuts[-1] < n:
        cuts.append(min(cuts[-1] + step, n))
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


def _read(slide: Slide, locations: np.ndarray, size: int, mpp: float, resample: Resample,
          xp: Any = None) -> Any:
    """Read with retries: object stores throttle and connections drop; corrupt bytes do not
    heal. ``xp``: the array module of the tiles (the device engine's; NumPy by default)."""
    for attempt in range(1, _READ_ATTEMPTS + 1):
        try:
            return slide.read_regions_at_mpp(locations, size, mpp, threads=1, resample=resample,
                                             xp=xp)
        except SlideReadError as exc:
            if attempt == _READ_ATTEMPTS or isinstance(exc.__cause__, SlideCorruptError | SlideNotFoundError):
                raise
            log.info("retrying read of %s (attempt %d): %s", slide.name, attempt + 1, exc)
            time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # the loop returns or raises


def _normalizer(slide: Slide, sid: str, tissue: Any, config: IngestConfig, info: dict[str, Any]) -> Any:
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
        params = fit_slide(slide, tissue.mask, tissue.mpp, mpp=config.tiling.target_mpp,
                           tile_size=config.tiling.tile_size, n_tiles=32, resample=config.tiling.resample,
                           config=FitConfig(method=config.stain), slide_id=sid)
    except StainFitError as exc:
        # Too little or single-stain tissue: keep the tiles as scanned, flag them, say why.
        info["stain"] = {"status": "not_fitted", "reason": str(exc)[:300]}
        return None
    info["stain"] = {"status": "fitted", **params.to_dict()}
    return StainNormalizer(params, standard_reference())


def _write_arrays(store: Any, sid: str, tissue: Any) -> None:
    from features.store import SlideArrays

    arrays = SlideArrays(store, sid)
    arrays.write_thumbnail(np.ascontiguousarray(tissue.thumbnail), mpp=tissue.thumbnail_grid_mpp)
    arrays.write_mask(tissue.mask.astype(np.uint8), mpp=tissue.mpp)

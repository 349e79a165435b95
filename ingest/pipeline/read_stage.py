"""Stage 1 (CPU tasks): open a slide once, plan it, then stream normalized tile batches.

Planning and reading share one task per slide on purpose: the slide is opened (and, from
object storage, staged) once, and planning reads only a thumbnail, so splitting them
would cost a second open for nothing. Batches leave as they are read; Ray Data's
backpressure stops this generator when the encoders fall behind, so a slide's pixels
are never all in memory. The steps themselves are :mod:`ingest.pipeline.slide_steps`.

Failure isolation: any error becomes a ``failed`` row carrying its type and message,
and the run goes on with the next slide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from infra import metrics
from infra.errors import SlideCrashError
from ingest.pipeline import slide_steps as steps
from ingest.pipeline._faults import FaultPlan
from ingest.pipeline.attempts import MAX_CRASHES, ledger_by_name
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.rows import make_row
from ingest.pipeline.slide_steps import SlideItem
from ingest.slides import Slide
from ingest.slides.backends.cucim_reader import warm_up

if TYPE_CHECKING:
    from features.store.location import StoreLocation

__all__ = ["ReadStage", "read_slides"]

log = logging.getLogger(__name__)


class ReadStage:
    """Ray Data actor UDF around :func:`read_slides`.

    An actor rather than a task on purpose: a task's worker process may be reaped when
    idle (Ray keeps about one idle worker per CPU), and every fresh worker pays a second
    or more of imports before its first slide. With thousands of small slides that churn,
    not the reading, set the pace; an actor pays its imports once per run.
    """

    def __init__(
        self,
        *,
        config: IngestConfig,
        options: RunOptions,
        store: StoreLocation,
        storage_options: Mapping[str, Any] | None,
        ledger: Any = None,
        faults: FaultPlan | None = None,
    ) -> None:
        warm_up()  # load cuCIM before anything in this worker can import PyTorch
        self._kwargs = {
            "config": config,
            "options": options,
            "store": store,
            "storage_options": storage_options,
            "ledger": ledger,
            "faults": faults,
        }

    def __call__(self, batch: Mapping[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        yield from read_slides(batch, **self._kwargs)


def read_slides(
    batch: Mapping[str, Any],
    *,
    config: IngestConfig,
    options: RunOptions,
    store: StoreLocation,
    storage_options: Mapping[str, Any] | None,
    ledger: Any = None,
    faults: FaultPlan | None = None,
    first_batch: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """For each source row, yield that slide's tile-batch rows.

    ``first_batch``: the first slide's first batch holds this many tiles (the rest
    ``options.tiles_per_batch``), so a fresh actor's first tiles are stored within seconds.

    ``ledger`` (the name of an :class:`ingest.pipeline.attempts.AttemptLedger` actor) turns
    a slide that keeps crashing its worker into a failed row instead of an endless retry.
    """
    warm_up()  # load cuCIM before anything in this worker can import PyTorch
    for i in range(len(batch["slide_id"])):
        source = steps.slide_item({k: batch[k][i] for k in steps.ITEM_KEYS})
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


def _crashed(source: SlideItem, crashes: int) -> dict[str, np.ndarray]:
    error = SlideCrashError(
        source["uri"],
        f"reading it killed the worker process {crashes} times "
        "(a crash in native decoding code); not retried again",
    )
    log.warning("slide %s failed: %s", source["slide_id"], error)
    metrics.record_failure(type(error).__name__)
    return make_row(
        slide_id=source["slide_id"],
        write_id=source["write_id"],
        status="failed",
        info=steps.new_info(source),
        error=error,
    )


def _one_slide(
    source: SlideItem,
    config: IngestConfig,
    options: RunOptions,
    store: StoreLocation,
    storage_options: Mapping[str, Any] | None,
    faults: FaultPlan | None = None,
    first_batch: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    sid, write_id = source["slide_id"], source["write_id"]
    info = steps.new_info(source)
    started, clock = time.perf_counter(), time.monotonic()
    try:
        if faults is not None:
            faults.before_read(sid)
        with steps.open_item(
            source,
            info,
            options=options,
            storage_options=storage_options,
            device=options.device,
            clock=clock,
        ) as slide:
            yield from _tile_rows(
                slide, sid, write_id, info, config, options, store, started, first_batch
            )
    except Exception as exc:  # isolate the slide: record type and message, go on
        log.warning("slide %s failed: %s: %s", sid, type(exc).__name__, exc)
        metrics.record_failure(type(exc).__name__)
        yield make_row(slide_id=sid, write_id=write_id, status="failed", info=info, error=exc)


def _tile_rows(
    slide: Slide,
    sid: str,
    write_id: str,
    info: dict[str, Any],
    config: IngestConfig,
    options: RunOptions,
    store: StoreLocation,
    started: float,
    first_batch: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    planned = steps.plan_and_store(
        slide, sid, info, config=config, store=store, device=options.device, started=started
    )
    if planned.tile_count == 0:
        yield make_row(slide_id=sid, write_id=write_id, status="empty", info=info)
        return
    xs, ys = planned.column("x"), planned.column("y")
    fractions, planned_flags = planned.column("tissue_fraction"), planned.column("qc_flags")
    size, mpp = config.tiling.tile_size, config.tiling.target_mpp
    parts = steps.batch_slices(len(xs), options.tiles_per_batch, first_batch)
    info["planned_tiles"] = len(xs)
    for b, part in enumerate(parts):
        t0 = time.perf_counter()
        tiles = steps.read_tiles(
            slide, np.stack([xs[part], ys[part]], 1), size, mpp, config.tiling.resample
        )
        tiles, flags = steps.qc_and_normalize(
            tiles,
            config=config,
            glass=planned.tissue.glass_rgb,
            normalizer=planned.normalizer,
            device="cpu",
        )
        steps.record_stage(info, "read", time.perf_counter() - t0)
        yield make_row(
            slide_id=sid,
            write_id=write_id,
            status="tiles",
            batch_index=b,
            n_batches=len(parts),
            image=np.asarray(tiles),
            x=xs[part],
            y=ys[part],
            level=planned.plan.level,
            tissue_fraction=fractions[part],
            qc_flags=planned_flags[part] | flags,
            info=info,
        )

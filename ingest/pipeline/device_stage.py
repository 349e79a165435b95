"""The GPU-resident engine: CPU tasks plan, one actor per GPU reads, normalizes and encodes.

Published GPU pipelines starve their GPUs on CPU decoding and on shipping decoded pixels
between processes. Here pixels exist only on the GPU actor:

* :func:`plan_for_device` (a CPU task per slide) opens the slide, computes its tissue
  mask, tile plan and stain parameters (from the thumbnail and a sample of tiles), writes
  the thumbnail and mask, and returns coordinates and parameters: a few KB, no pixels.
* :class:`DeviceStage` (one actor per GPU) reads the planned tiles with cuCIM on the
  device (each batch copied there, resampled there when the level is not exact: see
  ``Slide.read_regions_at_mpp(xp=...)``), computes tile QC flags and stain normalization
  on CuPy, and hands the tiles to the encoder through DLPack (bf16, channels-last; see
  ``Encoder.embed_device``); the embeddings come back the same way. Embeddings and QC
  flags then cross to the host in one copy per step. Reading step ``b + 1`` runs in a
  thread while step ``b`` is normalized and encoded, so decode and compute overlap;
  the read in flight is waited for before a slide closes (failure or early stop).

The same code runs on NumPy when there is no GPU (``device="cpu"``), and it computes what
the fused CPU engine computes (tested). With the strict device stand-in
(:mod:`infra.strict_device`, :mod:`ingest.slides.backends.cucim_standin`) it runs its
device path on a CPU machine, where tests count every host transfer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infra import metrics
from infra.errors import ConfigError
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.fused_stage import scalar_row
from ingest.pipeline.rows import make_row
from ingest.pipeline.slide_steps import (
    batch_slices,
    item_mpp,
    new_info,
    open_item,
    plan_and_store,
    qc_and_normalize,
    read_tiles,
    record_stage,
    slide_budget,
    slide_item,
)
from ingest.pipeline.write_stage import write_batches

if TYPE_CHECKING:
    from features.store.location import StoreLocation
    from ingest.slides.limits import SlideBudget

__all__ = ["DeviceStage", "plan_for_device"]

log = logging.getLogger(__name__)


def plan_for_device(
    source: Mapping[str, Any],
    *,
    config: IngestConfig,
    options: RunOptions,
    store: StoreLocation | None,
    storage_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Plan one slide on a CPU: coordinates, planned flags, glass colour, stain params.
    ``store=None`` skips writing the thumbnail and mask (benchmarks)."""
    item = slide_item(source)
    sid = item["slide_id"]
    info = new_info(item)
    planned: dict[str, Any] = {"source": item, "info": info, "status": "failed"}
    started, clock = time.perf_counter(), time.monotonic()
    try:
        # a plain CPU reader with the CPU budget, as in the fused engine
        with open_item(
            item, info, options=options, storage_options=storage_options, device="cpu", clock=clock
        ) as slide:
            plan = plan_and_store(
                slide, sid, info, config=config, store=store, device="cpu", started=started
            )
            if plan.tile_count == 0:
                planned["status"] = "empty"
                return planned
            planned.update(
                status="tiles",
                level=plan.plan.level,
                glass=plan.tissue.glass_rgb,
                x=plan.column("x"),
                y=plan.column("y"),
                tissue_fraction=plan.column("tissue_fraction"),
                qc_flags=plan.column("qc_flags"),
                stain=None if plan.normalizer is None else plan.normalizer.source,
            )
    except Exception as exc:  # isolate the slide, as the read stage does
        log.warning("slide %s failed while planning: %s: %s", sid, type(exc).__name__, exc)
        metrics.record_failure(type(exc).__name__)
        planned["error"] = exc
    return planned


class DeviceStage:
    """Read → QC → stain → encode → write on one device, from a plan (see module docstring).

    ``encode_batch`` tiles (default: :func:`~features.encoders.runtime.default_batch_size`
    of the device, 256 on a GPU) are read, checked, normalized and encoded together and
    copied to the host once; they are stored as fragments of ``options.tiles_per_batch``
    tiles, so the forward batch and the fragment size are chosen apart.
    """

    def __init__(
        self,
        *,
        config: IngestConfig,
        options: RunOptions,
        storage_options: Mapping[str, Any] | None,
        encoder_kwargs: Mapping[str, Any],
        write_kwargs: Mapping[str, Any],
        device: str = "auto",
        encode_batch: int | None = None,
    ) -> None:
        from features.encoders import Encoder
        from features.encoders.runtime import default_batch_size
        from infra.arrays import get_xp, torch_device
        from ingest.slides.backends.cucim_reader import warm_up

        warm_up()  # load cuCIM before PyTorch in this process (see cucim_reader)
        self.xp = get_xp(device)  # type: ignore[arg-type]
        self.device: Literal["cpu", "cuda"] = "cpu" if self.xp is np else "cuda"
        if encode_batch is not None and encode_batch < 1:
            raise ConfigError(f"encode_batch must be >= 1, got {encode_batch}")
        self.encode_batch = encode_batch or default_batch_size(self.device)
        fragment = options.tiles_per_batch
        self._step = fragment * math.ceil(self.encode_batch / fragment)  # whole fragments
        self._config, self._options, self._storage_options = config, options, storage_options
        self._encoder = Encoder(
            **{**encoder_kwargs, "device": torch_device(self.xp), "batch_size": self.encode_batch}
        )
        self._write_kwargs = dict(write_kwargs)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="device-read")

    def ready(self) -> bool:
        """Returns once the actor exists (the runner's restart probe)."""
        return True

    def run(self, planned: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the post-write rows of one planned slide: a :func:`plan_for_device` result,
        or a runner item whose ``plan`` is ``[ObjectRef]`` of one."""
        if "plan" in planned:
            planned = _resolve(planned)
        for row in self._rows(planned):
            yield scalar_row(write_batches(row, **self._write_kwargs))

    def _rows(self, planned: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        source, info = planned["source"], planned["info"]
        sid, write_id = source["slide_id"], source["write_id"]
        if planned["status"] != "tiles":
            error = planned.get("error")
            yield _no_tiles(
                make_row(
                    slide_id=sid,
                    write_id=write_id,
                    status="failed" if error else "empty",
                    info=info,
                    error=error,
                )
            )
            return
        try:
            yield from self._tiles(planned, sid, write_id, info)
        except Exception as exc:  # isolate the slide: a failed row, the run goes on
            log.warning("slide %s failed: %s: %s", sid, type(exc).__name__, exc)
            metrics.record_failure(type(exc).__name__)
            yield _no_tiles(
                make_row(slide_id=sid, write_id=write_id, status="failed", info=info, error=exc)
            )

    def _tiles(
        self, planned: Mapping[str, Any], sid: str, write_id: str, info: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        from ingest.slides import open_slide
        from ingest.stain import StainNormalizer, standard_reference

        config, xp = self._config, self.xp
        xs, ys = planned["x"], planned["y"]
        fragment = self._options.tiles_per_batch
        steps = batch_slices(len(xs), self._step)
        n_batches = math.ceil(len(xs) / fragment)
        info["planned_tiles"] = len(xs)
        normalizer = (
            None
            if planned["stain"] is None
            else StainNormalizer(planned["stain"], standard_reference(), device=None)
        )
        with open_slide(
            planned["source"]["uri"],
            storage_options=self._storage_options,
            mpp=item_mpp(planned["source"]),
            device=self.device,
        ) as slide:
            slide.budget = _device_budget(sid, self._options, time.monotonic())

            def read(part: slice) -> tuple[Any, float]:
                t0 = time.perf_counter()
                tiles = read_tiles(
                    slide,
                    np.stack([xs[part], ys[part]], 1),
                    config.tiling.tile_size,
                    config.tiling.target_mpp,
                    config.tiling.resample,
                    xp=xp,
                )
                return tiles, time.perf_counter() - t0

            reads = _ReadAhead(self._reader, read, steps)
            try:
                for part in steps:
                    embedding, flags = self._compute(reads.take(), planned, normalizer, part, info)
                    for piece in batch_slices(len(embedding), fragment):
                        cut = slice(part.start + piece.start, part.start + piece.stop)
                        row = make_row(
                            slide_id=sid,
                            write_id=write_id,
                            status="tiles",
                            batch_index=cut.start // fragment,
                            n_batches=n_batches,
                            x=xs[cut],
                            y=ys[cut],
                            level=planned["level"],
                            tissue_fraction=planned["tissue_fraction"][cut],
                            qc_flags=flags[piece],
                            info=info,
                        )
                        row.pop("image")
                        row["embedding"] = np.ascontiguousarray(embedding[piece])[None]
                        metrics.record_tiles(piece.stop - piece.start)
                        yield row
            finally:
                reads.close()  # before the slide (and its scratch copy) closes under a read

    def _compute(
        self,
        read: tuple[Any, float],
        planned: Mapping[str, Any],
        normalizer: Any,
        part: slice,
        info: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray]:
        """QC, stain and encode one step's tiles on the device; (embeddings, qc_flags) on
        the host, from one device → host copy. The ``read`` stage is the read (timed in
        the reader thread) plus QC and stain, as in the fused engine; ``encode`` the model."""
        from infra.arrays import asnumpy

        tiles, read_s = read
        xp = self.xp
        t0 = time.perf_counter()
        tiles, flags = qc_and_normalize(
            tiles,
            config=self._config,
            glass=planned["glass"],
            normalizer=normalizer,
            device=self.device,
            xp=xp,
        )
        t1 = time.perf_counter()
        record_stage(info, "read", read_s + t1 - t0)
        embedding = self._encoder.embed_device(xp.ascontiguousarray(tiles))
        # float32 holds the flag bits exactly (< 2^24): one copy carries both.
        packed = xp.concatenate([embedding, flags[:, None].astype(np.float32)], axis=1)
        host = asnumpy(packed, what="embeddings+flags")
        metrics.observe_stage("encode", time.perf_counter() - t1)
        host_flags = host[:, -1].astype(np.int32) | planned["qc_flags"][part]
        return host[:, :-1], host_flags


class _ReadAhead:
    """Reads step ``b + 1`` in the reader thread while step ``b`` computes. ``close`` (on
    failure, on the consumer stopping early, at the end) cancels the read in flight, or
    waits for it when it has started: the slide must not close under a running read."""

    def __init__(
        self, pool: ThreadPoolExecutor, read: Callable[[slice], Any], parts: list[slice]
    ) -> None:
        self._pool, self._read, self._parts = pool, read, parts
        self._next = 0
        self._upcoming: Future[Any] | None = None
        self._submit()

    def _submit(self) -> None:
        self._upcoming = None
        if self._next < len(self._parts):
            self._upcoming = self._pool.submit(self._read, self._parts[self._next])
            self._next += 1

    def take(self) -> Any:
        if self._upcoming is None:
            raise IndexError("no read left")
        tiles = self._upcoming.result()
        self._submit()
        return tiles

    def close(self) -> None:
        if self._upcoming is not None:
            self._upcoming.cancel()
            wait([self._upcoming])
            self._upcoming = None


def _device_budget(sid: str, options: RunOptions, started: float) -> SlideBudget:
    """The slide's time budget, and as memory ceiling what reading it may add to this
    process: a device actor holds the model and the CUDA context (gigabytes of host memory
    before its first slide), which an absolute reader ceiling would count against every
    slide. The budget is checked before each tile batch is read."""
    from ingest.slides.limits import current_rss

    budget = slide_budget(sid, options, started)
    if budget.memory_bytes is not None:
        budget = dataclasses.replace(budget, memory_bytes=budget.memory_bytes + current_rss())
    return budget


def _resolve(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The plan behind a runner item; a planning task that died (its worker crashed, its
    node was lost after Ray's retries) becomes this slide's failed plan."""
    import ray

    try:
        return ray.get(item["plan"][0])
    except Exception as exc:  # any failure is this slide's; the run goes on
        log.warning("slide %s: planning failed: %s: %s", item["slide_id"], type(exc).__name__, exc)
        source = slide_item(item)
        return {"source": source, "info": new_info(source), "status": "failed", "error": exc}


def _no_tiles(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("image")
    row["embedding"] = np.zeros((1, 0, 0), np.float32)
    return row

"""The GPU-resident engine: CPU tasks plan, one actor per GPU reads, normalizes and encodes.

Published GPU pipelines starve their GPUs on CPU decoding and on shipping decoded pixels
between processes. Here pixels exist only on the GPU actor:

* :func:`plan_for_device` (a CPU task per slide) opens the slide, computes its tissue
  mask, tile plan and stain parameters (from the thumbnail and a sample of tiles), writes
  the thumbnail and mask, and returns coordinates and parameters: a few KB, no pixels.
* :class:`DeviceStage` (one actor per GPU) reads the planned tiles with cuCIM on the
  device, runs tile QC and stain normalization on CuPy, and hands the batch to the
  encoder through DLPack (bf16, channels-last; see ``Encoder.encode_device``). Reading
  batch ``b + 1`` runs in a thread while batch ``b`` is normalized and encoded, so
  decode and compute overlap.

The same code runs on NumPy when there is no GPU (``device="cpu"``): that is how it is
tested on CPU machines, and it computes what the fused CPU engine computes (tested).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infra import metrics
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.fused_stage import scalar_row
from ingest.pipeline.read_stage import (
    QC_STAIN,
    _budget,
    _describe,
    _normalizer,
    _read,
    _write_arrays,
)
from ingest.pipeline.rows import make_row
from ingest.pipeline.write_stage import write_batches

if TYPE_CHECKING:
    from ingest.slides.limits import SlideBudget

__all__ = ["DeviceStage", "plan_for_device"]

log = logging.getLogger(__name__)


def plan_for_device(source: Mapping[str, Any], *, config: IngestConfig, options: RunOptions,
                    store: Any, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Plan one slide on a CPU: coordinates, planned flags, glass colour, stain params."""
    from ingest.slides import open_slide
    from ingest.tiling.plan import plan_slide

    sid = source["slide_id"]
    info: dict[str, Any] = {"source_uri": source["uri"], "patient_id": source.get("patient_id") or None,
                            "timings": {}}
    planned: dict[str, Any] = {"source": dict(source), "info": info, "status": "failed"}
    started, clock = time.perf_counter(), time.monotonic()
    try:
        with open_slide(source["uri"], storage_options=storage_options, mpp=_mpp(source),
                        device="cpu") as slide:
            slide.budget = _budget(sid, options, clock)  # a plain CPU reader, as in the fused engine
            _describe(slide, info)
            tissue, plan = plan_slide(slide, config.tissue, config.tiling, device="cpu")
            info["tissue_area_mm2"] = tissue.tissue_area_mm2
            _write_arrays(store, sid, tissue)
            if plan.tile_count == 0:
                info["plan_status"] = plan.status
                planned["status"] = "empty"
                return planned
            normalizer = _normalizer(slide, sid, tissue, config, info)
            table = plan.table
            planned.update(
                status="tiles", level=plan.level, glass=tissue.glass_rgb,
                x=table.column("x").to_numpy(), y=table.column("y").to_numpy(),
                tissue_fraction=table.column("tissue_fraction").to_numpy(),
                qc_flags=table.column("qc_flags").to_numpy(),
                stain=None if normalizer is None else normalizer.source)
    except Exception as exc:  # isolate the slide, as the read stage does
        log.warning("slide %s failed while planning: %s: %s", sid, type(exc).__name__, exc)
        metrics.record_failure(type(exc).__name__)
        planned["error"] = exc
    info["timings"]["plan_s"] = round(time.perf_counter() - started, 4)
    return planned


def _mpp(source: Mapping[str, Any]) -> float | None:
    mpp = source.get("mpp")
    return None if mpp is None or (isinstance(mpp, float) and math.isnan(mpp)) else float(mpp)


class DeviceStage:
    """Read → QC → stain → encode → write on one device, from a plan (see module docstring)."""

    def __init__(self, *, config: IngestConfig, options: RunOptions,
                 storage_options: Mapping[str, Any] | None, encoder_kwargs: Mapping[str, Any],
                 write_kwargs: Mapping[str, Any], device: str = "auto") -> None:
        from features.encoders import Encoder
        from infra.arrays import get_xp
        from ingest.slides.backends.cucim_reader import warm_up

        warm_up()  # load cuCIM before PyTorch in this process (see cucim_reader)
        self.xp = get_xp(device)  # type: ignore[arg-type]
        self.device: Literal["cpu", "cuda"] = "cpu" if self.xp is np else "cuda"
        self._config, self._options, self._storage_options = config, options, storage_options
        self._encoder = Encoder(**{**encoder_kwargs, "device": self.device})
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
            yield _no_tiles(make_row(slide_id=sid, write_id=write_id,
                                     status="failed" if error else "empty", info=info, error=error))
            return
        try:
            yield from self._tiles(planned, sid, write_id, info)
        except Exception as exc:  # isolate the slide: a failed row, the run goes on
            log.warning("slide %s failed: %s: %s", sid, type(exc).__name__, exc)
            metrics.record_failure(type(exc).__name__)
            yield _no_tiles(make_row(slide_id=sid, write_id=write_id, status="failed", info=info,
                                     error=exc))

    def _tiles(self, planned: Mapping[str, Any], sid: str, write_id: str,
               info: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from ingest.slides import open_slide
        from ingest.stain import StainNormalizer, standard_reference
        from ingest.tissue.qc import tile_qc

        config, xp = self._config, self.xp
        xs, ys = planned["x"], planned["y"]
        size, mpp, step = config.tiling.tile_size, config.tiling.target_mpp, self._options.tiles_per_batch
        n_batches = math.ceil(len(xs) / step)
        info["planned_tiles"] = len(xs)
        normalizer = (None if planned["stain"] is None else
                      StainNormalizer(planned["stain"], standard_reference(), device=None))
        started = time.perf_counter()
        with open_slide(planned["source"]["uri"], storage_options=self._storage_options,
                        mpp=_mpp(planned["source"]), device=self.device) as slide:
            slide.budget = _device_budget(sid, self._options, time.monotonic())
            def read(b: int) -> Any:
                part = slice(b * step, (b + 1) * step)
                return xp.asarray(_read(slide, np.stack([xs[part], ys[part]], 1), size, mpp,
                                        config.tiling.resample))

            upcoming: Future[Any] = self._reader.submit(read, 0)
            for b in range(n_batches):
                tiles = upcoming.result()
                if b + 1 < n_batches:
                    upcoming = self._reader.submit(read, b + 1)  # decode b+1 while b computes
                part = slice(b * step, (b + 1) * step)
                flags = planned["qc_flags"][part] | _host(tile_qc(
                    tiles, mpp, config.tiling.qc, config.tissue, glass=planned["glass"],
                    device=self.device).flags)
                if normalizer is not None:
                    result = normalizer(tiles)
                    tiles = result.images
                    flags = flags | np.where(_host(result.flagged), QC_STAIN, 0)
                elif config.stain != "none":
                    flags = flags | QC_STAIN
                embedding = self._encoder.encode_device(xp.ascontiguousarray(tiles))
                if b == n_batches - 1:
                    info["timings"]["read_s"] = round(time.perf_counter() - started, 4)
                row = make_row(slide_id=sid, write_id=write_id, status="tiles", batch_index=b,
                               n_batches=n_batches, x=xs[part], y=ys[part], level=planned["level"],
                               tissue_fraction=planned["tissue_fraction"][part], qc_flags=flags,
                               info=info)
                row.pop("image")
                row["embedding"] = embedding[None]
                metrics.record_tiles(len(embedding))
                yield row


def _device_budget(sid: str, options: RunOptions, started: float) -> SlideBudget:
    """The slide's time budget, and as memory ceiling what reading it may add to this
    process: a device actor holds the model and the CUDA context (gigabytes of host memory
    before its first slide), which an absolute reader ceiling would count against every
    slide. The budget is checked before each tile batch is read."""
    from ingest.slides.limits import current_rss

    budget = _budget(sid, options, started)
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
        source = {k: item[k] for k in ("uri", "slide_id", "patient_id", "mpp", "write_id")}
        info = {"source_uri": item["uri"], "patient_id": item.get("patient_id") or None, "timings": {}}
        return {"source": source, "info": info, "status": "failed", "error": exc}


def _host(array: Any) -> np.ndarray:
    from infra.arrays import asnumpy

    return np.asarray(asnumpy(array))


def _no_tiles(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("image")
    row["embedding"] = np.zeros((1, 0, 0), np.float32)
    return row

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
  flags then cross to the host in one copy per step.

Overlap (:mod:`infra.device_streams`): step ``b + 1`` is read in a thread on the *read*
stream (decode, any host → device copy, resampling) and ends with an event; step ``b``
is checked, normalized and encoded on the *compute* stream (shared by CuPy and torch),
which waits for that event on the device, not on the host. Its one device → host copy is
issued there without blocking, into a pinned buffer reused slide after slide, and the
writer thread (:mod:`ingest.pipeline.device_writer`) waits for that copy alone, builds
the rows and writes the Lance fragments, so the loop never synchronises the device and
never waits for a store write unless the writer is ``write_depth`` steps behind. The
read and the writes in flight are cancelled or waited for before a slide closes (failure
or early stop). CuPy's memory pool is capped (``pool_fraction`` of the card), and the
stage warms the GPU decoder and the encoder at its batch size when it is built, so the
first slide is not timed with their start-up.

The same code runs on NumPy when there is no GPU (``device="cpu"``), and it computes what
the fused CPU engine computes (tested). With the strict device stand-in
(:mod:`infra.strict_device`, :mod:`ingest.slides.backends.cucim_standin`) it runs its
device path on a CPU machine, where tests count every host transfer.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infra import metrics
from infra.device_streams import DEFAULT_POOL_FRACTION, DeviceStreams, HostCopy, limit_memory_pool
from infra.errors import ConfigError
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.device_compile import compile_static
from ingest.pipeline.device_writer import OrderedWrites
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
    copied to the host once; the writer thread gathers a slide's steps into fragments of
    ``fragment_tiles`` tiles (default ``options.device_fragment_tiles``, 2048) and the
    slide's tail, so the forward batch and the fragment size are chosen apart.
    ``write_depth`` steps may wait for the writer thread; ``pool_fraction`` of the
    device's memory is CuPy's pool limit; ``compile`` runs the encoder through
    ``torch.compile`` with every step padded to ``encode_batch`` (one input shape; CUDA
    graphs on CUDA: :mod:`ingest.pipeline.device_compile`); ``read_threads`` is the
    reader's decode threads (the actor's CPUs); ``warm`` warms the GPU decoder and the
    encoder now.
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
        pool_fraction: float = DEFAULT_POOL_FRACTION,
        write_depth: int = 2,
        fragment_tiles: int | None = None,
        compile: bool = False,
        read_threads: int = 1,
        warm: bool = True,
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
        if write_depth < 1:
            raise ConfigError(f"write_depth must be >= 1, got {write_depth}")
        if read_threads < 1:
            raise ConfigError(f"read_threads must be >= 1, got {read_threads}")
        self.encode_batch = encode_batch or default_batch_size(self.device)
        self._step = self.encode_batch
        #: tiles per stored fragment (the writer gathers steps into these)
        self.fragment_tiles = fragment_tiles or options.device_fragment_tiles
        if self.fragment_tiles < 1:
            raise ConfigError(f"fragment_tiles must be >= 1, got {self.fragment_tiles}")
        #: decode threads of each read (cuCIM's ``num_workers``, the CPU reader's pool)
        self.read_threads = read_threads
        self._config, self._options, self._storage_options = config, options, storage_options
        #: CuPy's pool limit in bytes (None on NumPy)
        self.pool_limit = limit_memory_pool(self.xp, pool_fraction)
        self._encoder = Encoder(
            **{**encoder_kwargs, "device": torch_device(self.xp), "batch_size": self.encode_batch}
        )
        #: what runs the encoder: "eager", or the torch.compile mode (static shapes)
        self.compiled = compile_static(self._encoder, self.device) if compile else "eager"
        self._streams = DeviceStreams(
            self.xp, torch_device=torch_device(self.xp), host_buffers=write_depth + 2
        )
        self._write_kwargs = dict(write_kwargs)
        self._write_depth = write_depth
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="device-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="device-write")
        #: seconds the warm-up spent per part (empty on NumPy or with ``warm=False``)
        self.warm_up_s: dict[str, float] = self.warm_up() if warm else {}

    def ready(self) -> bool:
        """Returns once the actor exists (the runner's restart probe)."""
        return True

    def warm_up(self) -> dict[str, float]:
        """Start the GPU decoder (one device read of a small JPEG TIFF) and run the encoder
        once at its batch size (kernel selection, cuBLAS/cuDNN plans, compilation, the
        allocators' first blocks; an OOM halves the batch here, not on a slide). Nothing
        to warm on NumPy."""
        if self.xp is np:
            return {}
        xp, side = self.xp, self._config.tiling.tile_size
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        with self._streams.reading():
            _warm_decoder(xp)
        out["decoder"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        with self._streams.computing(self._streams.mark_read()):
            self._encoder.embed_device(xp.zeros((self.encode_batch, side, side, 3), np.uint8))
            done = xp.cuda.Event(disable_timing=True)
            done.record(self._streams.compute)
        done.synchronize()  # once, before any slide: the timings start after it
        out["encoder"] = round(time.perf_counter() - t0, 3)
        log.info("device stage warmed up: %s", out)
        return out

    def run(self, planned: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the post-write rows of one planned slide: a :func:`plan_for_device` result,
        or a runner item whose ``plan`` is ``[ObjectRef]`` of one."""
        if "plan" in planned:
            planned = _resolve(planned)
        yield from self._rows(planned)

    def _write_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row's fragment written (invisible until the driver commits); the post-write
        row the driver gets."""
        return scalar_row(write_batches(row, **self._write_kwargs))

    def _rows(self, planned: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        source, info = planned["source"], planned["info"]
        sid, write_id = source["slide_id"], source["write_id"]
        if planned["status"] != "tiles":
            error = planned.get("error")
            yield self._write_row(
                _no_tiles(
                    make_row(
                        slide_id=sid,
                        write_id=write_id,
                        status="failed" if error else "empty",
                        info=info,
                        error=error,
                    )
                )
            )
            return
        try:
            yield from self._tiles(planned, sid, write_id, info)
        except Exception as exc:  # isolate the slide: a failed row, the run goes on
            log.warning("slide %s failed: %s: %s", sid, type(exc).__name__, exc)
            metrics.record_failure(type(exc).__name__)
            yield self._write_row(
                _no_tiles(
                    make_row(slide_id=sid, write_id=write_id, status="failed", info=info, error=exc)
                )
            )

    def _tiles(
        self, planned: Mapping[str, Any], sid: str, write_id: str, info: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        from ingest.slides import open_slide
        from ingest.stain import StainNormalizer, standard_reference

        config, xp, streams = self._config, self.xp, self._streams
        xs, ys = planned["x"], planned["y"]
        steps = batch_slices(len(xs), self._step)
        info["planned_tiles"] = len(xs)
        with streams.computing():  # its parameters are used on the compute stream
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

            def read(part: slice) -> tuple[Any, float, Any]:
                t0 = time.perf_counter()
                with streams.reading():
                    tiles = read_tiles(
                        slide,
                        np.stack([xs[part], ys[part]], 1),
                        config.tiling.tile_size,
                        config.tiling.target_mpp,
                        config.tiling.resample,
                        xp=xp,
                        threads=self.read_threads,
                    )
                    ready = streams.mark_read()
                return tiles, time.perf_counter() - t0, ready

            reads = _ReadAhead(self._reader, read, steps)
            writes: OrderedWrites = OrderedWrites(self._writer, self._write_depth)
            fragments = _Fragments(self, planned, sid, write_id)
            try:
                for part in steps:
                    copy_, issued = self._compute(reads.take(), planned, normalizer, info)
                    job = _StepRows(fragments, part, copy_, issued, info)
                    for rows in writes.submit(job, on_cancel=copy_.release):
                        yield from rows
                for rows in writes.drain():
                    yield from rows
            finally:
                writes.close()  # no write of this slide runs after it fails or stops
                reads.close()  # before the slide (and its scratch copy) closes under a read

    def _compute(
        self,
        read: tuple[Any, float, Any],
        planned: Mapping[str, Any],
        normalizer: Any,
        info: dict[str, Any],
    ) -> tuple[HostCopy, float]:
        """QC, stain and encode one step's tiles on the compute stream, after the read's
        event, and issue the one device → host copy of embeddings + QC flags; returns
        the copy in flight and when the step was issued. The ``read`` stage is the read
        (timed in the reader thread) plus QC and stain, as in the fused engine."""
        raw, read_s, ready = read
        xp = self.xp
        t0 = time.perf_counter()
        with self._streams.computing(after=ready):
            tiles, flags = qc_and_normalize(
                raw,
                config=self._config,
                glass=planned["glass"],
                normalizer=normalizer,
                device=self.device,
                xp=xp,
            )
            t1 = time.perf_counter()
            record_stage(info, "read", read_s + t1 - t0)
            embedding = self._embed(xp.ascontiguousarray(tiles))
            # float32 holds the flag bits exactly (< 2^24): one copy carries both.
            packed = xp.concatenate([embedding, flags[:, None].astype(np.float32)], axis=1)
            # the read's pixels stay alive until the copy is done (see DeviceStreams.to_host)
            host = self._streams.to_host(packed, what="embeddings+flags", keep=(raw, tiles))
        return host, t1

    def _embed(self, tiles: Any) -> Any:
        """The encoder on one step's tiles. Compiled, a short step (a slide's last) is
        padded to ``encode_batch`` with zero tiles and their rows dropped, so one input
        shape reaches the model: no recompilation, and a CUDA graph is replayed, not
        captured again. Inference is per tile: the kept rows are the unpadded ones."""
        n = len(tiles)
        if self.compiled == "eager" or n >= self.encode_batch:
            return self._encoder.embed_device(tiles)
        padded = self.xp.zeros((self.encode_batch, *tiles.shape[1:]), tiles.dtype)
        padded[:n] = tiles
        return self._encoder.embed_device(padded)[:n]


class _Fragments:
    """One slide's fragments, made in the writer thread: each step's embeddings and flags
    are held until ``stage.fragment_tiles`` tiles are (or the slide's last tile is), then
    written as one fragment. Only the writer thread uses it, one step at a time in step
    order (:class:`OrderedWrites`), so it needs no lock. A slide is all or nothing as
    before: the driver commits its fragments only when every one of them is reported."""

    def __init__(
        self, stage: DeviceStage, planned: Mapping[str, Any], sid: str, write_id: str
    ) -> None:
        self._stage, self._planned, self._sid, self._write_id = stage, planned, sid, write_id
        self._size = stage.fragment_tiles
        self._n = len(planned["x"])
        self._n_batches = math.ceil(self._n / self._size)
        self._start = 0  # the slide's first tile not written yet
        self._held: list[tuple[np.ndarray, np.ndarray]] = []  # (embeddings, flags) per step
        self._count = 0  # tiles held

    def add(
        self, embedding: np.ndarray, flags: np.ndarray, info: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Hold one step's rows; write what makes whole fragments (and the tail once the
        slide's last tile is here); the post-write rows of what was written."""
        self._held.append((embedding, flags))
        self._count += len(embedding)
        rows = []
        while self._count >= self._size or (self._count and self._start + self._count == self._n):
            rows.append(self._write(min(self._size, self._count), info))
        return rows

    def _write(self, count: int, info: dict[str, Any]) -> dict[str, Any]:
        planned = self._planned
        embedding = np.concatenate([e for e, _ in self._held])
        flags = np.concatenate([f for _, f in self._held])
        self._held = [(embedding[count:], flags[count:])]
        self._count -= count
        cut = slice(self._start, self._start + count)
        self._start += count
        row = make_row(
            slide_id=self._sid,
            write_id=self._write_id,
            status="tiles",
            batch_index=cut.start // self._size,
            n_batches=self._n_batches,
            x=planned["x"][cut],
            y=planned["y"][cut],
            level=planned["level"],
            tissue_fraction=planned["tissue_fraction"][cut],
            qc_flags=flags[:count],
            info=info,
        )
        row.pop("image")
        row["embedding"] = np.ascontiguousarray(embedding[:count])[None]
        out = self._stage._write_row(row)
        metrics.record_tiles(count)
        return out


class _StepRows:
    """The writer thread's job for one step: wait for its host copy, hand its embeddings
    and flags to the slide's :class:`_Fragments`; the post-write rows of the fragments
    that completed (often none: a fragment spans several steps)."""

    def __init__(
        self,
        fragments: _Fragments,
        part: slice,
        host: HostCopy,
        issued: float,
        info: dict[str, Any],
    ) -> None:
        self._fragments, self._part, self._host, self._issued = fragments, part, host, issued
        self._info = copy.deepcopy(info)  # the loop goes on updating the slide's timings

    def __call__(self) -> list[dict[str, Any]]:
        host = self._host.result()
        metrics.observe_stage("encode", time.perf_counter() - self._issued)
        planned_flags = self._fragments._planned["qc_flags"][self._part]
        flags = host[:, -1].astype(np.int32) | planned_flags
        return self._fragments.add(host[:, :-1], flags, self._info)


def _warm_decoder(xp: Any) -> None:
    """One device read of a small JPEG-tiled TIFF through the cuCIM backend: loads
    nvImageCodec and makes its decoder's first allocations. A failure is logged (the
    reads fall back to CPU decode and count it)."""
    from ingest.slides.backends.cucim_reader import CucimReader

    if not CucimReader.is_available():
        log.info("no cuCIM: the GPU decoder is not warmed up")
        return
    import tifffile

    with tempfile.TemporaryDirectory(prefix="slidebank-warm-") as folder:
        path = os.path.join(folder, "warm.tif")
        image = np.full((64, 64, 3), 200, np.uint8)
        try:
            tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb", compression="jpeg")
        except Exception as exc:  # no JPEG codec (imagecodecs): decode raw tiles instead
            log.info("warm-up TIFF without JPEG (%s)", exc)
            tifffile.imwrite(path, image, tile=(64, 64), photometric="rgb")
        slide = CucimReader(device="cuda").open_local(path)
        try:
            slide.read_regions_on(xp, [(0, 0)], 0, (64, 64))
        except Exception as exc:  # warming must not stop the actor
            log.warning("GPU decoder warm-up failed: %s: %s", type(exc).__name__, exc)
        finally:
            slide.close()


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

"""Run the ingestion: sources → Ray Data (read → encode → write) → driver commits.

Idempotent and resumable: slides already ``done`` for this encoder and config hash are
skipped (``force`` redoes them); every slide gets a fresh ``write_id`` per run, and the
store's commit protocol guarantees that a slide's rows are replaced, never duplicated.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.ray_runtime import connect, shutdown
from infra.version import CODE_VERSION
from ingest.pipeline import _faults
from ingest.pipeline.attempts import new_ledger
from ingest.pipeline.collector import SlideCollector, SlideOutcome
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.encode_stage import EncodeStage
from ingest.pipeline.progress import Progress
from ingest.pipeline.read_stage import ReadStage
from ingest.pipeline.resources import plan_resources
from ingest.pipeline.sources import SlideSource
from ingest.pipeline.write_stage import WriteStage
from ingest.slides.backends.cucim_reader import warm_up

__all__ = ["IngestResult", "run_ingest"]

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    run_id: str
    config_hash: str
    encoder: str
    outcomes: list[SlideOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    store_version: int | None = None
    compacted: int = 0  # fragments merged away after the run

    @property
    def failed(self) -> list[SlideOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def tiles(self) -> int:
        return sum(o.tiles for o in self.outcomes)


def run_ingest(
    sources: Sequence[SlideSource],
    store: Any,
    config: IngestConfig | None = None,
    options: RunOptions | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    dashboard: bool = True,
) -> IngestResult:
    """Ingest ``sources`` into ``store`` (a :class:`features.store.FeatureStore`)."""
    from features.encoders import Encoder

    config, options = config or IngestConfig(), options or RunOptions()
    started = time.perf_counter()
    warm_up()  # the driver opens slides too (demo overlay); load cuCIM before PyTorch
    probe = Encoder(config.encoder, weights=config.weights, device="cpu")  # fails fast on bad weights
    weights_sha = (probe.provenance.get("weights") or {}).get("sha256")
    config_hash = config.config_hash(weights_sha)
    result = IngestResult(f"run-{uuid.uuid4().hex[:12]}", config_hash, config.encoder_id)
    todo = _pending(sources, store, config.encoder_id, config_hash, options.force, result)
    if not todo:
        result.seconds = time.perf_counter() - started
        return result
    # Create the encoder's table once here rather than racing to create it in every worker.
    store.ensure_tiles_table(config.encoder_id, int(probe.spec.embed_dim), config.embedding_dtype)
    started_ray = connect(options.address, dashboard=dashboard)
    try:
        _execute(todo, store, config, options, storage_options, config_hash, result)
    finally:
        shutdown(started_ray)
    result.compacted = _maybe_compact(store, config.encoder_id, options.compact_fragments)
    result.store_version = store.latest().version
    result.seconds = time.perf_counter() - started
    _record_run(store, config, options, result, weights_sha, len(sources))
    return result


def _pending(sources: Sequence[SlideSource], store: Any, encoder: str, config_hash: str,
             force: bool, result: IngestResult) -> list[SlideSource]:
    if force:
        return list(sources)
    table = store.latest().slides(encoder=encoder, status="done", config_hash=config_hash,
                                  columns=["slide_id"]) if encoder in store.encoders() else None
    done = set(table.column("slide_id").to_pylist()) if table is not None else set()
    result.skipped = [s.slide_id for s in sources if s.slide_id in done]
    return [s for s in sources if s.slide_id not in done]


def _execute(todo: list[SlideSource], store: Any, config: IngestConfig, options: RunOptions,
             storage_options: Mapping[str, Any] | None, config_hash: str,
             result: IngestResult) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.target_max_block_size
    ctx.enable_progress_bars = False  # our own progress display is on the driver
    # Blocks of at most 16 MiB (about 80 tiles of 256² px): a read task then hands its
    # batches on as it reads instead of holding up to the default 128 MiB, so encoding a
    # slide overlaps with reading it, and memory per reader stays small.
    ctx.target_max_block_size = 16 << 20
    try:
        _stream(todo, store, config, options, storage_options, config_hash, result)
    finally:
        ctx.enable_progress_bars, ctx.target_max_block_size = saved


def _stream(todo: list[SlideSource], store: Any, config: IngestConfig, options: RunOptions,
            storage_options: Mapping[str, Any] | None, config_hash: str, result: IngestResult) -> None:
    import ray

    from features.store._keys import new_write_id

    plan = plan_resources(options)
    faults = _faults.active()
    write_ids = {s.slide_id: new_write_id() for s in todo}
    items = [{"uri": s.uri, "slide_id": s.slide_id, "patient_id": s.patient_id or "",
              "mpp": float(s.mpp) if s.mpp else float("nan"), "write_id": write_ids[s.slide_id]}
             for s in todo]
    location = store.location
    # Every stage is a pool of long-lived actors (see ReadStage for why). Ray restarts a
    # dead actor and retries its task; the ledger stops that for a slide that kills its
    # reader every time. Application errors never reach Ray: the read stage turns them
    # into failed rows.
    ledger = new_ledger()
    per_task = options.slides_per_task or _slides_per_task(len(items), plan.readers)
    blocks = -(-len(items) // per_task)
    # No pool larger than its inputs: every read task yields at least one block, so no
    # stage receives fewer than ``blocks`` inputs, and a bigger pool would start idle actors.
    ds: Any = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        ReadStage, batch_size=per_task, num_cpus=plan.cpus_per_reader,
        compute=ray.data.ActorPoolStrategy(size=min(plan.readers, blocks)),
        fn_constructor_kwargs={"config": config, "options": options, "store": location,
                               "storage_options": storage_options, "ledger": ledger,
                               "faults": faults})
    ds = ds.map_batches(
        EncodeStage, batch_size=None, num_cpus=plan.cpus_per_encoder, num_gpus=plan.gpus_per_encoder,
        compute=ray.data.ActorPoolStrategy(size=min(plan.encoder_actors, blocks)),
        fn_constructor_kwargs={"encoder": config.encoder, "weights": config.weights,
                               "device": options.device, "batch_size": options.tiles_per_batch,
                               "num_threads": None if plan.gpus_per_encoder else 1})
    ds = ds.map_batches(
        WriteStage, batch_size=1, num_cpus=plan.cpus_per_writer,
        compute=ray.data.ActorPoolStrategy(size=min(plan.writers, blocks)),
        fn_constructor_kwargs={
            "store": location, "encoder": config.encoder_id, "config_hash": config_hash,
            "dtype": config.embedding_dtype, "tile_size": config.tiling.tile_size,
            "read_mpp": config.tiling.target_mpp})
    collector = SlideCollector(store, config.encoder_id, config_hash, config.embedding_dtype,
                               write_ids, options.commit_every, result.run_id, faults)
    try:
        with Progress(len(todo), enabled=options.progress) as progress:
            for row in ds.iter_rows():
                outcome = collector.add(row)
                progress.batch(int(row["n_tiles"]))
                if outcome is not None:
                    progress.slide(outcome)
            collector.flush()
    finally:
        ray.kill(ledger)  # on a shared cluster it would otherwise live as long as the driver
    result.outcomes = [collector.outcomes[s.slide_id] for s in todo if s.slide_id in collector.outcomes]
    missing = [s.slide_id for s in todo if s.slide_id not in collector.outcomes]
    if missing:  # cannot happen unless Ray lost rows; never report them as done
        raise RuntimeError(f"pipeline ended without a result for slides {missing}")


def _maybe_compact(store: Any, encoder: str, threshold: int) -> int:
    """Merge the run's many small fragments (one per written batch) into few large ones.

    Only fragments below Lance's target size are rewritten, so this costs about what
    the run wrote, not the whole store. A failure here loses nothing: the data is
    committed, and ``slidebank query`` / ``FeatureStore.compact`` can run it later.
    """
    if threshold <= 0 or encoder not in store.encoders():
        return 0
    before = store.fragment_count(encoder)
    if before <= threshold:
        return 0
    try:
        report = store.compact()
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("compaction after the run failed (the data is committed): %s", exc)
        return 0
    merged = int(report.fragments_removed.get(encoder, 0))
    log.info("compacted %s: %d fragments merged away (%d before)", encoder, merged, before)
    return merged


def _slides_per_task(n_slides: int, readers: int) -> int:
    """Several slides per read task once there are plenty: each task costs Ray Data tens of
    milliseconds of scheduling, as much as reading a small slide. Eight tasks per reader
    still balance the load at the end of the run; more than 8 slides per task would make
    a retried task redo too much."""
    return max(1, min(8, n_slides // (8 * max(readers, 1))))


def _record_run(store: Any, config: IngestConfig, options: RunOptions, result: IngestResult,
                weights_sha: str | None, n_sources: int) -> None:
    from features.store import RunRecord

    record = RunRecord(
        run_id=result.run_id, config={**config.to_dict(weights_sha), "sources": n_sources,
                                      "skipped": len(result.skipped)},
        config_hash=result.config_hash, encoder=config.encoder_id, code_version=CODE_VERSION,
        weights_sha256=weights_sha, n_slides_done=sum(o.status == "done" for o in result.outcomes),
        n_slides_failed=len(result.failed), n_tiles=result.tiles,
        timings={"total_s": round(result.seconds, 3)})
    store.record_run(record)
    if options.run_tag:
        store.tag(options.run_tag)

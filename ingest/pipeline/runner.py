"""Run the ingestion: check the store, choose an engine, start Ray, commit, record the run.

The engines (:mod:`ingest.pipeline.engines`: fused, device, dataset, in-process) run the
same per-slide steps (:mod:`ingest.pipeline.slide_steps`) behind one contract,
``Engine.run(RunContext)``; this module only orchestrates them. Which engine runs is
:func:`ingest.pipeline.engines.inprocess.use_inprocess` (a small local job: no Ray) or
:func:`ingest.pipeline.resources.choose_engine`.

Idempotent and resumable: slides already ``done`` for this encoder and config hash are
skipped (``force`` redoes them); every slide gets a fresh ``write_id`` per run, and the
store's commit protocol guarantees that a slide's rows are replaced, never duplicated.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from features.encoders.runtime import describe_encoder
from infra.errors import IngestAborted
from infra.fs_errors import write_error
from infra.local_cluster import resolve_address
from infra.ray_runtime import connect, shutdown
from infra.version import CODE_VERSION
from ingest.pipeline import _faults
from ingest.pipeline.collector import SlideCollector, SlideOutcome
from ingest.pipeline.config import COMMIT_EVERY, COMMIT_FLOOR_S, IngestConfig, RunOptions
from ingest.pipeline.engines import RunContext, engine
from ingest.pipeline.engines.base import write_kwargs
from ingest.pipeline.engines.inprocess import head_start, use_inprocess
from ingest.pipeline.progress import Progress, deferred_interrupt, quiet_ray
from ingest.pipeline.resources import choose_engine
from ingest.pipeline.result import IngestResult
from ingest.pipeline.sources import SlideSource
from ingest.slides.backends.cucim_reader import warm_up

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["IngestInterrupted", "IngestResult", "run_ingest"]

log = logging.getLogger(__name__)

#: benchmarks/per_slide_costs.py builds the write stage's arguments through this name
_write_kwargs = write_kwargs


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: how many slides it committed (kept; a rerun skips them)
    and how many of the run's slides the store now holds done. ``None``: not known."""

    def __init__(self, committed: int | None, done: int | None, total: int) -> None:
        super().__init__(committed, done, total)
        self.committed, self.done, self.total = committed, done, total

    def __str__(self) -> str:
        if self.committed is None:
            return "the slides committed so far are kept, rerun the same command to resume"
        return (
            f"{self.committed} slides committed ({self.done} of {self.total} done in the "
            "store), rerun the same command to resume"
        )


def run_ingest(
    sources: Sequence[SlideSource],
    store: FeatureStore,
    config: IngestConfig | None = None,
    options: RunOptions | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    dashboard: bool = True,
) -> IngestResult:
    """Ingest ``sources`` into ``store`` (a :class:`features.store.FeatureStore`).

    Start-up is ordered so its slow parts overlap: the store check needs only the weights'
    checksum, so it runs before Ray starts (a rerun with nothing to do never starts Ray);
    the driver's check that the model loads runs in a thread while Ray starts.

    A write the store refuses part-way (disk full, read-only, a file in the way) raises
    :class:`~infra.errors.IngestAborted`, which carries the run's partial result.
    """
    watch = _Watch(time.perf_counter())
    try:
        return _run_ingest(sources, store, config, options, storage_options, dashboard, watch)
    except Exception as exc:
        aborted = watch.aborted(exc, sources, store)
        if aborted is None:
            watch.warn_unrecorded()
            raise
        raise aborted from exc


@dataclass
class _Watch:
    """What :func:`run_ingest` needs when its run raises: the result so far (committed
    slides) and the guard that recorded the run ``failed``, or could not."""

    started: float
    result: IngestResult | None = None
    guard: Any = None

    def aborted(
        self, exc: Exception, sources: Sequence[SlideSource], store: FeatureStore
    ) -> IngestAborted | None:
        """``exc`` as IngestAborted with the partial result when the store refused a write."""
        cause = write_error(exc, store.location.uri)
        if cause is None or self.result is None:
            return None
        result = self.result
        result.seconds = time.perf_counter() - self.started
        seen = {o.slide_id for o in result.outcomes} | set(result.skipped)
        result.outcomes.extend(
            SlideOutcome(
                s.slide_id,
                "aborted",
                0,
                type(cause).__name__,
                "not ingested: the run stopped before this slide was committed",
            )
            for s in sources
            if s.slide_id not in seen
        )
        recorded = self.guard is not None and self.guard.recorded
        why = None if recorded else self._record_error(exc, store)
        return IngestAborted(cause, result, recorded, why)

    def _record_error(self, exc: Exception, store: FeatureStore) -> str:
        err = self.guard.error if self.guard is not None and self.guard.error else exc
        typed = write_error(err, store.location.uri) or err
        return f"{type(typed).__name__}: {typed}"

    def warn_unrecorded(self) -> None:
        error = self.guard.error if self.guard is not None else None
        if error is not None:  # one line: a traceback would bury the run's own error
            log.warning("could not record the failed run: %s: %s", type(error).__name__, error)


def _run_ingest(
    sources: Sequence[SlideSource],
    store: FeatureStore,
    config: IngestConfig | None,
    options: RunOptions | None,
    storage_options: Mapping[str, Any] | None,
    dashboard: bool,
    watch: _Watch,
) -> IngestResult:
    from features.store.liveness import RunHeartbeat
    from features.store.runs import FailureRecorder

    config, options = config or IngestConfig(), options or RunOptions()
    started = time.perf_counter()
    # The heartbeat is left first (contexts exit in reverse), so it stops before the run
    # is closed and its heartbeat removed.
    with (
        Progress(len(sources), enabled=options.progress) as progress,
        FailureRecorder(warn=False) as guard,
        RunHeartbeat() as heartbeat,
    ):
        progress.phase("checking the store")
        spec, weights_sha = describe_encoder(config.encoder, config.weights)
        config_hash = config.config_hash(weights_sha)
        result = IngestResult(f"run-{uuid.uuid4().hex[:12]}", config_hash, config.encoder_id)
        watch.result, watch.guard = result, guard
        todo = _pending(sources, store, config.encoder_id, config_hash, options.force, result)
        if not todo:
            result.seconds = time.perf_counter() - started
            return result
        # Recorded `running` before anything is written (killed runs are recovered first),
        # closed `failed` if the run raises, `done` at the end.
        run_row = (store, config, options, result, weights_sha, len(sources))
        _record_run(*run_row, status="running")
        # Other ingests on this store judge this run alive by its heartbeat, however long it runs.
        heartbeat.start(store.location, result.run_id)
        guard.arm(lambda: _record_run(*run_row, status="failed"))
        # Create the encoder's table once here rather than racing to create it in every worker.
        store.ensure_tiles_table(config.encoder_id, int(spec.embed_dim), config.embedding_dtype)
        if use_inprocess(options, todo):  # a small job: no Ray
            result.engine = "inprocess"
            progress.phase("ingest (in-process: a small job, no Ray)")
            _execute(todo, store, config, options, storage_options, config_hash, result, progress)
        else:
            _on_ray(
                todo,
                store,
                config,
                options,
                storage_options,
                config_hash,
                result,
                progress,
                dashboard,
            )
        if progress.first_tile_at is not None:
            result.first_tile_s = progress.first_tile_at - started
        progress.phase("committing")
        result.compacted = _maybe_compact(store, config.encoder_id, options.compact_fragments)
    result.store_version = store.latest().version
    result.seconds = time.perf_counter() - started
    _record_run(store, config, options, result, weights_sha, len(sources))
    return result


def _on_ray(
    todo: list[SlideSource],
    store: FeatureStore,
    config: IngestConfig,
    options: RunOptions,
    storage_options: Mapping[str, Any] | None,
    config_hash: str,
    result: IngestResult,
    progress: Progress,
    dashboard: bool,
) -> None:
    run = (store, config, options, storage_options, config_hash, result, progress)
    head = todo[: head_start(options, todo)]
    if head:  # the first slide in this process while Ray boots (see head_start)
        _head_start(head, todo[len(head) :], dashboard, run)
        return
    progress.phase("starting Ray")
    with quiet_ray(), ThreadPoolExecutor(1, thread_name_prefix="probe") as pool:
        probe = pool.submit(_probe, config)  # fails fast on weights that do not load
        started_ray = connect(resolve_address(options.address), dashboard=dashboard)
        try:
            progress.phase("loading the encoder")
            probe.result()
            progress.phase("ingest")
            _execute(todo, *run)
        finally:
            shutdown(started_ray)


def _head_start(
    head: list[SlideSource], rest: list[SlideSource], dashboard: bool, run: tuple[Any, ...]
) -> None:
    """Start the embedded Ray in a thread while this (main) thread ingests ``head`` with
    the in-process engine (Ctrl-C handling needs the main thread), then the rest on Ray.
    The head's own model load is the weights check the probe does otherwise."""
    options, result, progress = run[2], run[5], run[6]
    with quiet_ray(), ThreadPoolExecutor(1, thread_name_prefix="ray-start") as pool:
        boot = pool.submit(connect, resolve_address(options.address), dashboard=dashboard)
        try:
            progress.phase("ingest (the first slide in this process while Ray starts)")
            result.engine = "inprocess"
            _execute(head, *run)
            result.head_start = [s.slide_id for s in head]
            progress.phase("starting Ray")
            started_ray = boot.result()
        except BaseException:
            # Never leave a Ray behind: wait for the boot and shut down what it started.
            with contextlib.suppress(Exception):
                shutdown(boot.result())
            raise
        try:
            progress.phase("ingest")
            result.engine = None  # the rest: the engine choose_engine picks (fused)
            _execute(rest, *run)
        finally:
            shutdown(started_ray)


def _probe(config: IngestConfig) -> None:
    from features.encoders import Encoder

    warm_up()  # the driver opens slides too (demo overlay); load cuCIM before PyTorch
    Encoder(config.encoder, weights=config.weights, device="cpu")


def _pending(
    sources: Sequence[SlideSource],
    store: FeatureStore,
    encoder: str,
    config_hash: str,
    force: bool,
    result: IngestResult,
) -> list[SlideSource]:
    if force:
        return list(sources)
    table = (
        store.latest().slides(
            encoder=encoder,
            status="done",
            config_hash=config_hash,
            columns=["slide_id", "mpp", "mpp_source", "patient_id"],
        )
        if encoder in store.encoders()
        else None
    )
    done = {r["slide_id"]: r for r in table.to_pylist()} if table is not None else {}
    # A manifest MPP override is part of what a slide was ingested with (issue 17): a
    # changed, added or removed override redoes the slide instead of skipping it.
    kept = [s for s in sources if s.slide_id in done and _same_override(s, done[s.slide_id])]
    result.skipped = [s.slide_id for s in kept]
    result.metadata_updated = _update_patients(store, kept, done)
    skip = set(result.skipped)
    return [s for s in sources if s.slide_id not in skip]


def _update_patients(
    store: FeatureStore, kept: Sequence[SlideSource], done: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """A manifest that now names a slide's patient (or another one) updates the stored
    patient_id instead of skipping in silence: the tiles do not depend on it. A manifest
    without one never clears it."""
    new = {
        s.slide_id: {"patient_id": s.patient_id}
        for s in kept
        if s.patient_id and s.patient_id != done[s.slide_id].get("patient_id")
    }
    if not new:
        return []
    update = store.set_slide_metadata(new)
    log.info(
        "%d done slides: patient_id updated from the manifest, not re-encoded", len(update.changed)
    )
    return list(update.changed)


def _same_override(source: SlideSource, row: Mapping[str, Any]) -> bool:
    stored = row.get("mpp") if row.get("mpp_source") == "override" else None
    if source.mpp is None or stored is None:
        return source.mpp is None and stored is None
    return abs(float(stored) - float(source.mpp)) <= 1e-9 * float(source.mpp)


def _execute(
    todo: list[SlideSource],
    store: FeatureStore,
    config: IngestConfig,
    options: RunOptions,
    storage_options: Mapping[str, Any] | None,
    config_hash: str,
    result: IngestResult,
    progress: Progress,
) -> None:
    """Run the chosen engine over ``todo``; Ctrl-C waits for the next commit boundary."""
    from features.store import new_write_id

    if result.engine != "inprocess":
        result.engine = choose_engine(options)
        log.info("ingest engine: %s", result.engine)
    write_ids = {s.slide_id: new_write_id() for s in todo}
    collector = SlideCollector(
        store,
        config.encoder_id,
        config_hash,
        config.embedding_dtype,
        write_ids,
        options.commit_every or COMMIT_EVERY,
        result.run_id,
        _faults.active(),
        committed=result.outcomes,
        commit_floor_s=COMMIT_FLOOR_S if options.commit_every is None else 0.0,
    )
    context = RunContext(
        todo=tuple(todo),
        store=store,
        config=config,
        options=options,
        storage_options=storage_options,
        config_hash=config_hash,
        result=result,
        progress=progress,
        write_ids=write_ids,
        collector=collector,
    )
    try:
        with deferred_interrupt(progress):
            engine(result.engine).run(context)
            collector.flush(final=True)
    except KeyboardInterrupt as exc:
        raise _interrupted(todo, store, config.encoder_id, config_hash, result) from exc
    _gather(todo, collector, result)


def _interrupted(
    todo: list[SlideSource],
    store: FeatureStore,
    encoder: str,
    config_hash: str,
    result: IngestResult,
) -> IngestInterrupted:
    """What Ctrl-C leaves: read from the store, not the driver's counters, since the
    interrupt may have landed inside a commit."""
    total = len(todo) + len(result.skipped)
    try:
        rows = (
            store.latest()
            .slides(
                encoder=encoder,
                status="done",
                config_hash=config_hash,
                slide_ids=[s.slide_id for s in todo],
                columns=["slide_id", "run_id"],
            )
            .to_pylist()
        )
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("after the interrupt, the store could not be read: %s", exc)
        return IngestInterrupted(None, None, total)
    mine = sum(r["run_id"] == result.run_id for r in rows)
    return IngestInterrupted(mine, len(rows) + len(result.skipped), total)


def _gather(todo: list[SlideSource], collector: SlideCollector, result: IngestResult) -> None:
    """This pass's outcomes, in ``todo``'s order, after those of an earlier pass of the
    same run (the head start's slide)."""
    ids = {s.slide_id for s in todo}
    result.outcomes = [o for o in result.outcomes if o.slide_id not in ids] + [
        collector.outcomes[s.slide_id] for s in todo if s.slide_id in collector.outcomes
    ]
    missing = [s.slide_id for s in todo if s.slide_id not in collector.outcomes]
    if missing:  # cannot happen unless Ray lost rows; never report them as done
        raise RuntimeError(f"pipeline ended without a result for slides {missing}")


def _maybe_compact(store: FeatureStore, encoder: str, threshold: int) -> int:
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


def _execution(options: RunOptions, result: IngestResult) -> dict[str, Any]:
    """How the run executed: recorded with it, never in the config hash (like the device,
    none of it changes the stored features beyond the runtimes' stated tolerance)."""
    return {
        "engine": result.engine,
        "head_start": result.head_start,
        "device": options.device,
        "cpu_dtype": options.cpu_dtype,
        "runtime": options.runtime,
        "runtimes_used": sorted(result.runtimes),
    }


def _record_run(
    store: FeatureStore,
    config: IngestConfig,
    options: RunOptions,
    result: IngestResult,
    weights_sha: str | None,
    n_sources: int,
    status: str = "done",
) -> None:
    from features.store import RunRecord

    record = RunRecord(
        run_id=result.run_id,
        config={
            **config.to_dict(weights_sha),
            "sources": n_sources,
            "skipped": len(result.skipped),
            "execution": _execution(options, result),
        },
        config_hash=result.config_hash,
        encoder=config.encoder_id,
        code_version=CODE_VERSION,
        weights_sha256=weights_sha,
        n_slides_done=sum(o.status == "done" for o in result.outcomes),
        n_slides_failed=len(result.failed),
        n_tiles=result.tiles,
        timings={"total_s": round(result.seconds, 3)},
        status=status,
    )
    if status == "running":
        store.begin_run(record)
        return
    store.record_run(record)
    if options.run_tag and status == "done":
        store.tag(options.run_tag)

"""Driver side: gather each slide's batches, then commit groups of finished slides.

A slide is finished when every batch index of its ``write_id`` has arrived (``tiles``),
or when its single ``empty`` or ``failed`` row has. Retried tasks may deliver a batch
twice; the first copy wins and the rest are never committed. A ``failed`` row ends the
slide even if some of its batches already arrived: those fragments stay invisible.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra import metrics
from infra.version import CODE_VERSION
from ingest.pipeline._faults import FaultPlan

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["SlideCollector", "SlideOutcome"]

log = logging.getLogger(__name__)


@dataclass
class SlideOutcome:
    slide_id: str
    status: str  # done | failed
    tiles: int = 0
    error_type: str | None = None
    error_message: str | None = None
    seconds: float | None = None


@dataclass
class _Partial:
    write_id: str
    n_batches: int = 0
    batches: dict[int, tuple[list[str], int, int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


#: committed slides between two refreshes of the slide-level embeddings table
_REFRESH_EVERY = 256


class SlideCollector:
    """Feeds finished slides to ``store.commit`` in groups of at least ``commit_every``,
    and no more often than once per ``commit_floor_s`` seconds.

    The floor is what keeps many small slides cheap: at 20 slides/s a commit per 8 slides
    is 2.5 commits (manifest writes, fragment upkeep) a second; with a 2 s floor the
    group grows to what arrived meanwhile. Large slides, which take longer than the floor
    to gather ``commit_every``, commit as before. What a crash can lose is bounded by the
    same floor: a rerun redoes only uncommitted slides.

    ``committed``, when given, gets each slide's outcome once its commit succeeded: what
    a run that stops part-way has done, in commit order.
    """

    def __init__(
        self,
        store: FeatureStore,
        encoder: str,
        config_hash: str,
        dtype: str,
        write_ids: Mapping[str, str],
        commit_every: int,
        run_id: str,
        faults: FaultPlan | None = None,
        *,
        committed: list[SlideOutcome] | None = None,
        commit_floor_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.encoder, self.config_hash, self.dtype = store, encoder, config_hash, dtype
        self.write_ids = dict(write_ids)
        self.commit_every, self.run_id = commit_every, run_id
        self.partial: dict[str, _Partial] = {}
        self.ready: list[Any] = []
        self.outcomes: dict[str, SlideOutcome] = {}
        self.committed_slides = 0
        self.commits = 0
        self.faults = faults
        self.committed = committed if committed is not None else []
        self._to_refresh: list[str] = []
        self.commit_floor_s, self._clock = commit_floor_s, clock
        self._last_commit = clock()

    def add(self, row: Mapping[str, Any]) -> SlideOutcome | None:
        """Take one pipeline output row; returns the slide's outcome when it completes."""
        sid, write_id = str(row["slide_id"]), str(row["write_id"])
        if sid in self.outcomes or self.write_ids.get(sid) != write_id:
            return None  # a late duplicate from a retried task
        part = self.partial.setdefault(sid, _Partial(write_id))
        part.info = json.loads(str(row["info_json"])) or part.info
        status = str(row["status"])
        if status == "failed":
            return self._finish_failed(sid, part, str(row["error_type"]), str(row["error_message"]))
        if status == "empty":
            return self._finish_done(sid, part)
        part.n_batches = int(row["n_batches"])
        index = int(row["batch_index"])
        if index not in part.batches:
            part.batches[index] = (
                json.loads(str(row["fragments"])),
                int(row["n_tiles"]),
                int(row["dim"]),
            )
        if len(part.batches) == part.n_batches:
            return self._finish_done(sid, part)
        return None

    def _finish_done(self, sid: str, part: _Partial) -> SlideOutcome:
        from features.store import PendingSlide

        fragments = tuple(f for i in sorted(part.batches) for f in part.batches[i][0])
        n_tiles = sum(b[1] for b in part.batches.values())
        dim = next((b[2] for b in part.batches.values() if b[2]), None)
        self.ready.append(
            PendingSlide(
                key=self._key(sid),
                info=self._info(part.info),
                write_id=part.write_id,
                status="done",
                n_tiles=n_tiles,
                fragments=fragments,
                dim=dim,
                dtype=self.dtype if dim else None,
            )
        )
        return self._outcome(sid, SlideOutcome(sid, "done", n_tiles, seconds=_seconds(part.info)))

    def _finish_failed(
        self, sid: str, part: _Partial, error_type: str, message: str
    ) -> SlideOutcome:
        from features.store import PendingSlide

        self.ready.append(
            PendingSlide(
                key=self._key(sid),
                info=self._info(part.info),
                write_id=part.write_id,
                status="failed",
                error_type=error_type,
                error_message=message,
            )
        )
        return self._outcome(sid, SlideOutcome(sid, "failed", 0, error_type, message))

    def _outcome(self, sid: str, outcome: SlideOutcome) -> SlideOutcome:
        self.partial.pop(sid, None)
        self.outcomes[sid] = outcome
        metrics.record_slide(outcome.status)
        if (
            len(self.ready) >= self.commit_every
            and self._clock() - self._last_commit >= self.commit_floor_s
        ):
            self.flush()
        return outcome

    def flush(self, final: bool = False) -> None:
        """Commit every finished slide not yet committed (one atomic group); ``final``: the
        run's last flush, which also brings the slide-level table up to date."""
        if self.ready:
            self._commit()
        if final or len(self._to_refresh) >= _REFRESH_EVERY:
            self._refresh_slide_embeddings()

    def _commit(self) -> None:
        group, self.ready = self.ready, []
        self.store.commit(group, run_id=self.run_id)
        self.committed.extend(self.outcomes[p.key.slide_id] for p in group)
        self._to_refresh += [p.key.slide_id for p in group if p.status == "done" and p.n_tiles]
        self.committed_slides += len(group)
        self.commits += 1
        self._last_commit = self._clock()
        log.info("committed %d slides (%d so far)", len(group), self.committed_slides)
        if self.faults is not None:
            self.faults.after_commit(self.commits)

    def _refresh_slide_embeddings(self) -> None:
        # The slide-level table is a derived cache (readers pool any slide it lacks), so
        # a failure to refresh it is logged, never allowed to fail the ingest run. It is
        # refreshed every _REFRESH_EVERY committed slides and at the end, not per commit:
        # each refresh scans the tiles table's write ids once.
        done, self._to_refresh = self._to_refresh, []
        if not done:
            return
        try:
            self.store.latest().refresh_slide_embeddings(done, encoder=self.encoder)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning(
                "slide embeddings not refreshed for %d slides (%s); "
                "store.rebuild_slide_embeddings() recomputes them",
                len(done),
                exc,
            )

    def _key(self, sid: str) -> Any:
        from features.store import SlideKey

        return SlideKey(sid, self.encoder, self.config_hash)

    def _info(self, info: Mapping[str, Any]) -> Any:
        from features.store import SlideInfo

        return SlideInfo(
            source_uri=str(info.get("source_uri") or ""),
            size_bytes=info.get("size_bytes"),
            checksum=info.get("checksum"),
            reader=info.get("reader"),
            vendor=info.get("vendor"),
            level_dimensions=tuple(tuple(d) for d in info.get("level_dimensions") or ()),
            mpp=info.get("mpp"),
            mpp_source=info.get("mpp_source"),
            objective_power=info.get("objective_power"),
            tissue_area_mm2=info.get("tissue_area_mm2"),
            patient_id=info.get("patient_id"),
            code_version=CODE_VERSION,
            timings=info.get("timings") or {},
        )


def _seconds(info: Mapping[str, Any]) -> float | None:
    timings = info.get("timings") or {}
    total = sum(float(v) for v in timings.values())
    return round(total, 3) if timings else None

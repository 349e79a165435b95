"""Recovery after a killed ingest: abort its run row, remove the data files it left.

A driver killed between a worker's fragment write (:mod:`features.store.writer`, step 1)
and its commit leaves Lance data files under ``tiles/<encoder>.lance/data/`` that no
table version references, and its ``runs`` row stuck at ``running``. :func:`recover`
(run by the next ingest, or :meth:`FeatureStore.recover`) repairs both:

1. A ``running`` run whose driver is provably gone is recorded ``aborted`` and its
   heartbeat removed: it ran on this machine (same boot and pid namespace, not merely
   the same hostname) and its pid is not alive, or it ran elsewhere and its heartbeat
   is older than ``stale_after``; a run without a heartbeat (begun by an older version)
   once it started more than ``max_age`` ago. A run's age alone never makes it dead
   (:mod:`features.store.liveness`).
2. A data file of a tiles table is removed when no retained version of that table
   references it *and* it was last modified before the cutoff: the start of the oldest
   run still ``running`` (its uncommitted fragments are newer than its start), and at
   least ``min_file_age`` ago (a writer outside any recorded run, e.g. a compaction or
   a notebook calling ``write_slide``, commits within that window), less ``clock_skew``:
   start times come from the driver's clock, file times from the storage (S3 rounds
   them down to the second), so the cutoff is moved back by that margin. The cutoff
   precedes every live run's start, so nothing a live run wrote (nothing younger than
   its first heartbeat, let alone its newest) is ever removed.

Why not ``LanceDataset.cleanup_old_versions(delete_unverified=True)``: it only removes
files older than its ``older_than`` cutoff and removes every untagged version older
than that too, which would drop the store's time travel. Here versions are only read.
The order (runs, then versions, then the file listing) matters: a commit landing after
the versions were read is by a live run or a fresh writer, so its files are newer than
the cutoff and kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from features.store._tables import TILES_DIR, TableSet
from features.store.liveness import (
    DEFAULT_STALE_AFTER,
    driver_gone,
    pid_alive,
    read_heartbeat,
    remove_heartbeat,
)
from features.store.runs import ensure_runs_columns
from features.store.schema import runs_schema

__all__ = ["RecoveryReport", "abort_dead_runs", "pid_alive", "recover", "remove_orphan_files"]

log = logging.getLogger(__name__)

# Only for runs without a heartbeat (begun by a version before heartbeats existed).
DEFAULT_MAX_AGE = timedelta(hours=24)
DEFAULT_MIN_FILE_AGE = timedelta(minutes=10)
DEFAULT_CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover` did: runs aborted, runs left live, files and bytes removed."""

    aborted_runs: tuple[str, ...]
    live_runs: tuple[str, ...]
    files_removed: int = 0
    bytes_removed: int = 0
    per_table: dict[str, tuple[int, int]] = field(default_factory=dict)
    cutoff: datetime | None = None


def abort_dead_runs(
    tables: TableSet,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    now: datetime | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Record ``aborted`` every ``running`` run whose driver is gone.

    Returns the aborted run ids and the rows of runs still live.
    """
    ensure_runs_columns(tables)
    now = now or datetime.now(UTC)
    running = tables.runs().to_table(filter="status = 'running'").to_pylist()
    aborted, live = [], []
    for row in running:
        beat = read_heartbeat(tables.location, row["run_id"])
        if not driver_gone(row, beat, now, stale_after=stale_after, max_age=max_age):
            live.append(row)
            continue
        closed = {**row, "status": "aborted", "finished_at": now, "recorded_at": now}
        # Only a row still ``running`` is closed: a driver finishing at this moment wins.
        result = (
            tables.runs()
            .merge_insert("run_id")
            .when_matched_update_all(condition="target.status = 'running'")
            .conflict_retries(20)
            .execute(pa.Table.from_pylist([closed], schema=runs_schema()))
        )
        if result["num_updated_rows"]:
            aborted.append(row["run_id"])
            remove_heartbeat(tables.location, row["run_id"])
            log.warning(
                "run %s (host %s, pid %s, started %s, last heartbeat %s) was killed: "
                "recorded aborted",
                row["run_id"],
                row.get("host"),
                row.get("pid"),
                row.get("started_at"),
                beat.beat_at if beat else None,
            )
    return aborted, live


def _mtime(info: dict[str, Any]) -> datetime | None:
    # Local fsspec gives ``mtime`` (epoch seconds), s3fs ``LastModified``, gcsfs ``updated``.
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return None


def _unreferenced(tables: TableSet, encoder: str, candidates: set[str]) -> set[str]:
    """The candidate file names no retained version (tagged ones included) references.

    Versions are read newest first and the walk stops once every candidate is found, so
    a store without orphans usually costs one manifest read, not one per version.
    """
    dataset = tables.tiles(encoder)
    left = set(candidates)
    for entry in sorted(dataset.versions(), key=lambda e: -int(e["version"])):
        if not left:
            break
        for fragment in dataset.checkout_version(int(entry["version"])).get_fragments():
            left.difference_update(f.path.rsplit("/", 1)[-1] for f in fragment.data_files())
    return left


def remove_orphan_files(tables: TableSet, encoder: str, cutoff: datetime) -> tuple[int, int]:
    """Remove unreferenced data files of a tiles table modified before ``cutoff``."""
    fs, root = tables.filesystem()
    data_dir = f"{root.rstrip('/')}/{TILES_DIR}/{encoder}.lance/data"
    fs.invalidate_cache(data_dir)
    try:
        listing = fs.ls(data_dir, detail=True)
    except FileNotFoundError:
        return 0, 0
    old: dict[str, dict[str, Any]] = {}
    for info in listing:
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        stamp = _mtime(info)
        # Unknown age, or possibly a live writer's fragment: never a candidate.
        if info.get("type") == "file" and name.endswith(".lance") and stamp and stamp < cutoff:
            old[name] = info
    files = n_bytes = 0
    for name in sorted(_unreferenced(tables, encoder, set(old))):
        try:
            fs.rm_file(str(old[name]["name"]))
        except FileNotFoundError:
            continue  # removed by a concurrent cleanup
        files += 1
        n_bytes += int(old[name].get("size") or 0)
    return files, n_bytes


def recover(
    tables: TableSet,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    min_file_age: timedelta = DEFAULT_MIN_FILE_AGE,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    now: datetime | None = None,
) -> RecoveryReport:
    """Abort runs whose driver is gone, then remove the orphan data files (see module)."""
    now = now or datetime.now(UTC)
    aborted, live = abort_dead_runs(tables, max_age=max_age, stale_after=stale_after, now=now)
    live_ids = tuple(row["run_id"] for row in live)
    starts: list[datetime] = []
    for row in live:
        start = row.get("started_at")
        if start is None:
            log.warning("a live run has no start time: orphan files are kept")
            return RecoveryReport(tuple(aborted), live_ids)
        starts.append(start)
    cutoff: datetime = min([now - min_file_age, *starts]) - clock_skew
    per_table = {}
    for encoder in tables.encoders():
        per_table[encoder] = remove_orphan_files(tables, encoder, cutoff)
    files = sum(f for f, _ in per_table.values())
    n_bytes = sum(b for _, b in per_table.values())
    if files:
        log.info(
            "removed %d orphan data files (%d bytes) written before %s", files, n_bytes, cutoff
        )
    return RecoveryReport(tuple(aborted), live_ids, files, n_bytes, per_table, cutoff)

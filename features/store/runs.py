"""Ingestion runs: provenance rows in the ``runs`` table, each with a tag.

A run records what produced the data (pipeline config and its hash, code version,
encoder and weight checksum), what it did (counts, timings) and which store version
it left, tagged ``run-<run_id>`` so that exact state can be read back later.

Lifecycle: :func:`begin_run` writes the run's heartbeat, then records it ``running``
(with its host and pid) before it writes anything; its driver keeps the heartbeat fresh
(:class:`features.store.liveness.RunHeartbeat`); :func:`record_run` closes it ``done`` or
``failed`` and removes the heartbeat. A driver killed in between leaves its row
``running``: :mod:`features.store.recovery` finds such rows whose driver is gone (see
:mod:`features.store.liveness`), records them ``aborted`` and removes the data files
they wrote.
Rows written before the ``status`` column existed read as ``done`` (runs were then only
recorded when they finished).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pyarrow as pa

from features.store._keys import (
    sql_literal,
    validate_config_hash,
    validate_encoder,
    validate_run_id,
)
from features.store._tables import TableSet
from features.store.liveness import Heartbeat, remove_heartbeat, write_heartbeat
from features.store.schema import RUN_LIFECYCLE_FIELDS, RUN_STATUSES, runs_schema
from features.store.versions import create_tag
from infra.provenance import canonical_json, stable_hash
from infra.validate import choice

__all__ = [
    "FailureRecorder",
    "RunRecord",
    "begin_run",
    "ensure_runs_columns",
    "hash_config",
    "list_runs",
    "record_run",
    "run_tag",
]

log = logging.getLogger(__name__)


def config_json(config: Any) -> str:
    """Canonical JSON of a config (a mapping or a dataclass), see :mod:`infra.provenance`."""
    return canonical_json(config)


def hash_config(config: Any) -> str:
    """A short, stable hash of a run's config, usable as the store's ``config_hash``."""
    return stable_hash("slidebank.run", 1, config)


def run_tag(run_id: str) -> str:
    return f"run-{validate_run_id(run_id)}"


@dataclass(frozen=True)
class RunRecord:
    """One ingestion run's provenance. ``host``/``pid`` default to this process."""

    run_id: str
    config: Mapping[str, Any]
    encoder: str
    code_version: str
    weights_sha256: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    n_slides_done: int = 0
    n_slides_failed: int = 0
    n_tiles: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)
    config_hash: str | None = None
    status: str = "done"
    host: str | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_encoder(self.encoder)
        if self.config_hash is not None:
            validate_config_hash(self.config_hash)
        choice("RunRecord.status", self.status, RUN_STATUSES)


def ensure_runs_columns(tables: TableSet) -> None:
    """Add the lifecycle columns (all null) to a runs table written before they existed."""
    runs = tables.runs()
    missing = [f for f in RUN_LIFECYCLE_FIELDS if f.name not in runs.schema.names]
    if not missing:
        return
    try:
        runs.add_columns(missing)
        log.info("runs table: added columns %s", [f.name for f in missing])
    except (OSError, ValueError) as exc:
        # Another process migrating at the same moment wins; anything else is real.
        if any(f.name not in tables.runs().schema.names for f in missing):
            raise
        log.debug("runs table migrated concurrently: %s", exc)


def _existing(tables: TableSet, run_id: str) -> dict[str, Any] | None:
    rows = tables.runs().to_table(filter=f"run_id = {sql_literal(run_id)}").to_pylist()
    return rows[0] if rows else None


def _row(run: RunRecord, tagged: Mapping[str, int] | None, tag: str | None) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "config_json": config_json(run.config),
        "config_hash": run.config_hash or hash_config(run.config),
        "code_version": run.code_version,
        "encoder": run.encoder,
        "weights_sha256": run.weights_sha256,
        "n_slides_done": run.n_slides_done,
        "n_slides_failed": run.n_slides_failed,
        "n_tiles": run.n_tiles,
        "timings_json": json.dumps(dict(run.timings), sort_keys=True),
        "slides_version": None if tagged is None else tagged["slides"],
        "tiles_versions_json": None
        if tagged is None
        else json.dumps({k: v for k, v in tagged.items() if k != "slides"}),
        "tag": tag,
        "recorded_at": datetime.now(UTC),
        "status": run.status,
        "host": run.host if run.host is not None else socket.gethostname(),
        "pid": run.pid if run.pid is not None else os.getpid(),
    }


def _merge(tables: TableSet, row: Mapping[str, Any], *, update: bool) -> None:
    builder = tables.runs().merge_insert("run_id")
    if update:
        builder = builder.when_matched_update_all()
    builder.when_not_matched_insert_all().conflict_retries(20).execute(
        pa.Table.from_pylist([dict(row)], schema=runs_schema())
    )


def begin_run(tables: TableSet, run: RunRecord) -> dict[str, Any]:
    """Record a run ``running`` (started now unless given) before it writes anything."""
    ensure_runs_columns(tables)
    run = replace(run, status="running", started_at=run.started_at or datetime.now(UTC))
    row = _row(run, None, None)
    # The heartbeat goes first: a recovery must never see this row without it.
    write_heartbeat(tables.location, _first_beat(row))
    _merge(tables, row, update=False)  # never overwrite a row already there
    return row


def _first_beat(row: Mapping[str, Any]) -> Heartbeat:
    beat = Heartbeat.here(row["run_id"], pid=row["pid"])
    if row["host"] != beat.host:
        # Recorded on behalf of another host: this machine's identity would let a
        # recovery here probe a pid that is not ours.
        beat = replace(beat, host=row["host"], machine=None)
    return beat


def record_run(tables: TableSet, run: RunRecord) -> dict[str, Any]:
    """Tag the current store version ``run-<run_id>`` and record the run's row.

    Closing a run begun with :func:`begin_run` keeps its start time, host and pid when
    ``run`` leaves them unset.
    """
    ensure_runs_columns(tables)
    begun = _existing(tables, run.run_id)
    if begun is not None:
        run = replace(
            run,
            started_at=run.started_at or begun.get("started_at"),
            host=run.host or begun.get("host"),
            pid=run.pid if run.pid is not None else begun.get("pid"),
        )
    if run.finished_at is None and run.status != "running":
        run = replace(run, finished_at=datetime.now(UTC))
    tag = run_tag(run.run_id)
    row = _row(run, create_tag(tables, tag), tag)
    _merge(tables, row, update=True)
    if run.status != "running":
        remove_heartbeat(tables.location, run.run_id)
    return row


def list_runs(tables: TableSet) -> pa.Table:
    """Every run, oldest record first, with the lifecycle columns even on old stores."""
    table = tables.runs().to_table()
    for fld in RUN_LIFECYCLE_FIELDS:
        if fld.name not in table.schema.names:
            table = table.append_column(fld, pa.nulls(table.num_rows, fld.type))
    status = table.column("status").fill_null("done")
    table = table.set_column(table.schema.get_field_index("status"), "status", status)
    return table.sort_by([("recorded_at", "ascending")])


class FailureRecorder:
    """Context manager: once armed, calls ``on_failure`` if its block raises.

    The ingest driver arms it after recording its run ``running``, so a run that raises
    is closed ``failed``. A failure to record is logged (unless ``warn=False``: the caller
    reports ``error`` itself), never raised over the original. ``recorded``: the failure
    was recorded.
    """

    def __init__(self, *, warn: bool = True) -> None:
        self._on_failure: Callable[[], Any] | None = None
        self._warn = warn
        self.recorded = False
        self.error: Exception | None = None

    def arm(self, on_failure: Callable[[], Any]) -> None:
        self._on_failure = on_failure

    def __enter__(self) -> FailureRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or self._on_failure is None:
            return
        try:
            self._on_failure()
        except Exception as exc:  # the run's own error is the one to surface
            self.error = exc
            if self._warn:  # one line: a traceback would bury the run's own one-line error
                log.warning("could not record the failed run: %s: %s", type(exc).__name__, exc)
            return
        self.recorded = True

"""Ingestion runs: provenance rows in the ``runs`` table, each with a tag.

A run records what produced the data (pipeline config and its hash, code version,
encoder and weight checksum), what it did (counts, timings) and which store version
it left, tagged ``run-<run_id>`` so that exact state can be read back later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from features.store._keys import validate_config_hash, validate_encoder, validate_run_id
from features.store._tables import TableSet
from features.store.schema import runs_schema
from features.store.versions import create_tag
from infra.provenance import canonical_json, stable_hash

__all__ = ["RunRecord", "hash_config", "list_runs", "record_run", "run_tag"]


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
    """One ingestion run's provenance."""

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

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_encoder(self.encoder)
        if self.config_hash is not None:
            validate_config_hash(self.config_hash)


def record_run(tables: TableSet, run: RunRecord) -> dict[str, Any]:
    """Tag the current store version ``run-<run_id>`` and append the run's row."""
    tag = run_tag(run.run_id)
    tagged = create_tag(tables, tag)
    row = {
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
        "slides_version": tagged["slides"],
        "tiles_versions_json": json.dumps({k: v for k, v in tagged.items() if k != "slides"}),
        "tag": tag,
        "recorded_at": datetime.now(UTC),
    }
    runs = tables.runs()
    (
        runs.merge_insert("run_id")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .conflict_retries(20)
        .execute(pa.Table.from_pylist([row], schema=runs_schema()))
    )
    return row


def list_runs(tables: TableSet) -> pa.Table:
    return tables.runs().to_table().sort_by([("recorded_at", "ascending")])

"""Slide metadata that may change after ingestion (a patient id), without re-encoding.

A folder ingest knows no patient ids; they arrive later, in a clinical table. Only the
metadata columns of the ``slides`` rows are rewritten: one ``merge_insert`` keyed on
(slide_id, encoder, config_hash, write_id), so it is one new store version like any
commit, a row replaced since (a newer ``write_id``) is never matched, and no tiles
table, tile row or slide-level embedding is touched. Readers join ``patient_id`` from
the slides rows at read time (slide embeddings included), so the change is visible to
cohorts, probes and training at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from features.store._keys import in_list
from features.store._tables import TableSet
from infra.errors import ConfigError, StoreConflictError
from infra.ids import validate_slide_id

__all__ = ["METADATA_COLUMNS", "MetadataUpdate", "set_slide_metadata"]

log = logging.getLogger(__name__)

#: The slides-table columns a user may set after ingestion. Every other column describes
#: the pixels read (mpp, levels, tissue area) or the run that read them, so changing it
#: would need a re-encode or would falsify provenance.
METADATA_COLUMNS = ("patient_id",)
_MAX_VALUE = 128
_MATCH_KEY = ["slide_id", "encoder", "config_hash", "write_id"]
_CONFLICT_RETRIES = 20


@dataclass(frozen=True)
class MetadataUpdate:
    """What :func:`set_slide_metadata` did. ``version``: the store version after it."""

    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    unknown: tuple[str, ...]
    rows: int
    version: int


def _check_values(values: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for slide_id, row in values.items():
        sid = validate_slide_id(str(slide_id))
        bad = sorted(set(row) - set(METADATA_COLUMNS))
        if bad:
            raise ConfigError(
                f"slide metadata column(s) {bad} cannot be set after ingestion; "
                f"settable: {list(METADATA_COLUMNS)}"
            )
        out[sid] = {column: _check_value(sid, column, value) for column, value in row.items()}
    return out


def _check_value(slide_id: str, column: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_VALUE or not text.isprintable():
        raise ConfigError(
            f"{slide_id}: {column} {str(value)[:40]!r} must be 1-{_MAX_VALUE} printable characters"
        )
    return text


def set_slide_metadata(tables: TableSet, values: Mapping[str, Mapping[str, Any]]) -> MetadataUpdate:
    """Set ``values`` (slide_id -> {column: value}) on every row of each slide (all
    encoders and configs: a patient is a property of the slide, not of its encoding)."""
    wanted = _check_values(values)
    dataset = tables.slides()
    rows = (
        dataset.to_table(filter=in_list("slide_id", wanted))
        if wanted
        else dataset.schema.empty_table()
    )
    present = set(rows.column("slide_id").to_pylist())
    unknown = tuple(sorted(set(wanted) - present))
    updated, changed = _apply(rows, wanted)
    version = int(dataset.version)
    if updated.num_rows:
        _merge(dataset, updated)
        version = int(tables.slides().version)
        log.info(
            "slide metadata set on %d slides (%d rows), store version %d",
            len(changed),
            updated.num_rows,
            version,
        )
    return MetadataUpdate(
        changed=tuple(sorted(changed)),
        unchanged=tuple(sorted(present - changed)),
        unknown=unknown,
        rows=updated.num_rows,
        version=version,
    )


def _apply(
    rows: pa.Table, wanted: Mapping[str, Mapping[str, str | None]]
) -> tuple[pa.Table, set[str]]:
    """The rows whose metadata differs from ``wanted``, with the new values in place."""
    ids = rows.column("slide_id").to_pylist()
    differs = [False] * rows.num_rows
    for column in METADATA_COLUMNS:
        old = rows.column(column).to_pylist()
        new = [wanted[sid].get(column, value) for sid, value in zip(ids, old, strict=True)]
        differs = [d or a != b for d, a, b in zip(differs, old, new, strict=True)]
        index = rows.schema.get_field_index(column)
        rows = rows.set_column(index, rows.schema.field(index), pa.array(new, pa.string()))
    mask = pa.array(differs, pa.bool_())
    changed = {sid for sid, d in zip(ids, differs, strict=True) if d}
    return rows.filter(mask) if rows.num_rows else rows, changed


def _merge(dataset: Any, rows: pa.Table) -> None:
    from features.store.writer import _conflict

    try:
        (
            dataset.merge_insert(_MATCH_KEY)
            .when_matched_update_all()
            .conflict_retries(_CONFLICT_RETRIES)
            .execute(rows)
        )
    except (OSError, RuntimeError, ValueError) as exc:
        if _conflict(exc):
            raise StoreConflictError(
                f"setting metadata on {rows.num_rows} slide rows: {exc}"
            ) from exc
        raise

"""Versions of the store: listing, tags per ingestion run, compaction, cleanup, deletes.

A store version is a version of the ``slides`` table, the visibility gate (see
:mod:`features.store.writer`); :class:`features.store._tables.StoreView` maps it to
the matching tiles versions. A tag (one per ingestion run) is set on the slides table
and on each tiles table at the versions a reader of that tag uses, so cleanup never
removes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from features.store import derived
from features.store._errors import StoreNotFoundError, StoreVersionError
from features.store._keys import (
    in_list,
    sql_literal,
    validate_encoder,
    validate_run_id,
    validate_slide_id,
    write_id_before,
)
from features.store._tables import ZARR_DIR, StoreView, TableSet
from features.store.reader import visible_writes
from features.store.upkeep import DERIVED_INDEXED_COLUMNS, ensure_scalar_indexes
from infra.errors import StoreUnavailableError

if TYPE_CHECKING:
    import lance

__all__ = [
    "CompactionReport",
    "StoreVersion",
    "cleanup",
    "compact",
    "create_tag",
    "delete_slide",
    "list_versions",
    "resolve_version",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreVersion:
    """One version of the store: the slides version, when, its tags, its slide count."""

    version: int
    timestamp: datetime
    tags: tuple[str, ...]
    n_rows: int


def _utc(stamp: datetime | int) -> datetime:
    # Lance reports naive local times (datetime.fromtimestamp); make them explicit UTC.
    if isinstance(stamp, int):  # nanoseconds, should a Lance version skip the conversion
        return datetime.fromtimestamp(stamp / 1e9, UTC)
    return stamp.astimezone(UTC)


def list_versions(tables: TableSet) -> list[StoreVersion]:
    """Every retained store version, oldest first."""
    slides = tables.slides()
    tags: dict[int, list[str]] = {}
    for name, info in slides.tags.list().items():
        tags.setdefault(int(info["version"]), []).append(name)
    out = []
    for entry in slides.versions():
        version = int(entry["version"])
        metadata = entry.get("metadata") or {}
        out.append(
            StoreVersion(
                version=version,
                timestamp=_utc(entry["timestamp"]),
                tags=tuple(sorted(tags.get(version, []))),
                n_rows=int(metadata.get("total_rows", 0)),
            )
        )
    return out


def resolve_version(tables: TableSet, version: int | str) -> int:
    """A slides version number from a number or a tag name."""
    try:
        return int(tables.slides(version).version)
    except StoreNotFoundError as exc:
        raise StoreVersionError(
            f"store version {version!r} does not exist (or was cleaned up)"
        ) from exc
    except StoreUnavailableError:
        raise  # a network fault says nothing about the version
    except (ValueError, OSError) as exc:
        raise StoreVersionError(f"store version {version!r}: {exc}") from exc


def _set_tag(dataset: lance.LanceDataset, tag: str, version: int) -> None:
    try:
        dataset.tags.create(tag, version)
    except ValueError as exc:
        if "already exists" not in str(exc):
            raise
        dataset.tags.update(tag, version)


def create_tag(tables: TableSet, tag: str, version: int | None = None) -> dict[str, int]:
    """Tag a store version (latest by default) on the slides and every tiles table.

    Returns the tagged version of each table (``"slides"`` and each encoder).
    """
    validate_run_id(tag)
    slides = tables.slides()
    version = int(slides.version) if version is None else resolve_version(tables, version)
    view = StoreView(tables, version)
    tagged = {"slides": version}
    for encoder in tables.encoders():
        tiles = view.tiles(encoder)
        if tiles is not None:
            _set_tag(tables.tiles(encoder), tag, int(tiles.version))
            tagged[encoder] = int(tiles.version)
    # The slides tag last: once it exists the tag is complete and readable.
    _set_tag(slides, tag, version)
    return tagged


@dataclass(frozen=True)
class CompactionReport:
    """What :func:`compact` did per table."""

    fragments_removed: dict[str, int]
    orphan_rows_deleted: dict[str, int]


def _orphan_predicate(tables: TableSet, encoder: str, grace: timedelta) -> str | None:
    """Rows no slides row references, written longer than ``grace`` ago.

    The grace period protects in-flight writes: their tiles are appended (step 2)
    moments before their slides row lands (step 3), and look orphaned in between.
    """
    slides = tables.slides()
    referenced = slides.to_table(
        columns=["write_id"], filter=f"encoder = {sql_literal(encoder)}"
    ).column("write_id")
    cutoff = write_id_before(grace.total_seconds())
    ids = pc.unique(referenced).to_pylist()
    older = f"write_id < {sql_literal(cutoff)}"
    return f"{older} AND NOT ({in_list('write_id', ids)})" if ids else older


def compact(
    tables: TableSet,
    *,
    orphan_grace: timedelta = timedelta(hours=6),
    target_rows_per_fragment: int = 1 << 20,
) -> CompactionReport:
    """Remove orphaned tile rows and replaced derived rows, merge small fragments, and
    bring indices up to date (derived tables are reported as ``kind/name``)."""
    removed: dict[str, int] = {}
    orphans: dict[str, int] = {}
    names: list[tuple[str, Any]] = [("slides", tables.slides), ("runs", tables.runs)]
    names += [(enc, lambda enc=enc: tables.tiles(enc)) for enc in tables.encoders()]
    refs = {f"{r.kind}/{r.name}": r for r in derived.list_tables(tables)}
    names += [(key, lambda r=ref: tables.open(r.uri)) for key, ref in refs.items()]
    for name, opener in names:
        dataset = opener()
        if name in refs:
            orphans[name] = derived.tidy(tables, refs[name])
            ensure_scalar_indexes(opener(), DERIVED_INDEXED_COLUMNS)  # a store from before it
            dataset = opener()
        elif name not in ("slides", "runs"):
            predicate = _orphan_predicate(tables, name, orphan_grace)
            count = dataset.count_rows(filter=predicate) if predicate else 0
            if count:
                dataset.delete(predicate)
                log.info("%s: deleted %d orphaned tile rows", name, count)
            orphans[name] = count
        before = len(dataset.get_fragments())
        dataset.optimize.compact_files(
            target_rows_per_fragment=target_rows_per_fragment, materialize_deletions=True
        )
        if dataset.describe_indices():
            dataset.optimize.optimize_indices()
        removed[name] = before - len(opener().get_fragments())
    return CompactionReport(fragments_removed=removed, orphan_rows_deleted=orphans)


def _tiles_refs(tables: TableSet, encoder: str, version: int) -> dict[str, int]:
    """The tiles version each ``done`` write of an encoder records, as of a slides version."""
    rows = tables.slides(version).to_table(
        columns=["write_id", "tiles_version"],
        filter=f"encoder = {sql_literal(encoder)} AND tiles_version IS NOT NULL",
    )
    ids, values = rows.column("write_id").to_pylist(), rows.column("tiles_version").to_pylist()
    return dict(zip(ids, values, strict=True))


def _oldest_referenced_tiles_version(
    tables: TableSet, encoder: str, slides_versions: list[int]
) -> int | None:
    """The oldest tiles version any retained store version reads (None: none does).

    Reads two store versions, the oldest retained one holding a row of the encoder and
    the latest, not every one (each read scans that version's slides rows, so cleanup
    grew with versions x slides). That is enough when some write is in both with the
    same tiles version: such a row is in every version between (rows are deleted or
    added, a write is never re-added), and a version reads tiles at the newest
    ``tiles_version`` of its rows (``StoreView``), at least that row's, so at least the
    minimum of the two. Otherwise (every row of the oldest replaced since) every
    retained version is read, as before.
    """
    ordered = sorted(slides_versions)
    # Versions that hold no row of the encoder (the table's first, empty one) read no
    # tiles: the oldest that matters is the first holding one.
    oldest: dict[str, int] = {}
    while ordered and not oldest:
        oldest = _tiles_refs(tables, encoder, ordered[0])
        if not oldest:
            ordered = ordered[1:]
    if not ordered:
        return None
    latest: dict[str, int] = {}
    if len(ordered) > 1:
        latest = _tiles_refs(tables, encoder, ordered[-1])
        shared = any(latest.get(write_id) == value for write_id, value in oldest.items())
        if not shared:
            values = [
                v for version in ordered for v in _tiles_refs(tables, encoder, version).values()
            ]
            return min(values) if values else None
    values = [*oldest.values(), *latest.values()]
    return min(values) if values else None


def cleanup(
    tables: TableSet,
    *,
    older_than: timedelta = timedelta(days=7),
    delete_unverified: bool = False,
) -> dict[str, int]:
    """Remove store versions older than ``older_than`` (tagged versions are kept).

    A tiles version that a retained store version still reads is kept even if old,
    so every version :func:`list_versions` shows after cleanup stays readable.
    ``delete_unverified`` also removes data files of commits that never landed
    (a writer that died between writing fragments and committing) when they are
    younger than Lance's 7-day safety window; only use it with no writer running.
    Derived tables (:mod:`features.store.derived`) are not tagged with store versions:
    their versions older than ``older_than`` go. Returns the number of old versions
    removed per table (derived ones as ``kind/name``).
    """
    out: dict[str, int] = {}
    slides = tables.slides()
    stats = slides.cleanup_old_versions(
        older_than, delete_unverified=delete_unverified, error_if_tagged_old_versions=False
    )
    out["slides"] = int(stats.old_versions)
    retained = [int(v["version"]) for v in tables.slides().versions()]
    runs = tables.runs()
    out["runs"] = int(
        runs.cleanup_old_versions(
            older_than, delete_unverified=delete_unverified, error_if_tagged_old_versions=False
        ).old_versions
    )
    for encoder in tables.encoders():
        tiles = tables.tiles(encoder)
        keep_from = _oldest_referenced_tiles_version(tables, encoder, retained)
        horizon = older_than
        if keep_from is not None:
            stamp = _version_timestamp(tables, encoder, keep_from)
            if stamp is not None:
                # Lance's cutoff is now - older_than: keep it just before that version.
                age = datetime.now(UTC) - _utc(stamp)
                horizon = min(horizon, age + timedelta(seconds=1))
        out[encoder] = int(
            tiles.cleanup_old_versions(
                horizon, delete_unverified=delete_unverified, error_if_tagged_old_versions=False
            ).old_versions
        )
    out.update(derived.cleanup(tables, older_than, delete_unverified))
    return out


def _version_timestamp(tables: TableSet, encoder: str, version: int) -> datetime | int | None:
    """When a tiles version was committed (None: gone); reads that one manifest only,
    where listing ``versions()`` reads every retained one."""
    try:
        return tables.tiles(encoder, version).get_version()["timestamp"]
    except (StoreNotFoundError, ValueError, OSError):
        return None


def delete_slide(tables: TableSet, slide_id: str, encoder: str | None = None) -> int:
    """Delete a slide's rows (one encoder, or all with its arrays); returns rows removed.

    The slides rows go first: they are the gate, so the slide disappears for readers
    in one commit; its tiles, derived rows (:func:`features.store.derived.delete_slide`:
    for one encoder only its slide embeddings) and Zarr group are then removed behind it.
    """
    slide_id = validate_slide_id(slide_id)
    predicate = f"slide_id = {sql_literal(slide_id)}"
    if encoder is not None:
        predicate += f" AND encoder = {sql_literal(validate_encoder(encoder))}"
    slides = tables.slides()
    removed = 0
    if slides.count_rows(filter=predicate):
        removed += int(slides.delete(predicate)["num_deleted_rows"])
    for name in [encoder] if encoder is not None else tables.encoders():
        if not tables.exists(tables.tiles_uri(name)):
            continue
        tiles = tables.tiles(name)
        tiles_predicate = f"slide_id = {sql_literal(slide_id)}"
        if tiles.count_rows(filter=tiles_predicate):
            removed += int(tiles.delete(tiles_predicate)["num_deleted_rows"])
    removed += derived.delete_slide(tables, slide_id, encoder)
    if encoder is None:
        fs, root = tables.filesystem()
        path = f"{root.rstrip('/')}/{ZARR_DIR}/{slide_id}"
        fs.invalidate_cache(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    return removed


def visible_slide_ids(view: StoreView, encoder: str) -> list[str]:
    return sorted(set(visible_writes(view, encoder).column("slide_id").to_pylist()))

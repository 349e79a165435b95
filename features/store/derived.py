"""Derived per-slide tables and blobs: what training writes back into the store.

The store owns them like its own tables: this module is their only writer and reader,
:func:`delete_slide` removes a slide's rows from every one, and cleanup and compaction
of :mod:`features.store.versions` cover them. Layout under the store root::

    derived/<kind>/<name>.lance    per-slide rows: slide_id, write_id, then the payload
    derived/<kind>/<name>/<file>   blobs; manifest.json, written last, commits them
    slide_embeddings/<enc>.lance   pooled tiles (features.store.slide_embeddings)

Row kinds are ``attention`` (per tile, ``attention`` float32, one table per training
run), ``modules`` (per tile, ``module`` int32, one table per codebook), ``predictions``
(per tile, ``value`` float32), ``graphs`` (per slide: a tile graph, one table per
graph spec), ``annotations`` (per slide: imported polygons as WKB, one table per
annotation set) and ``coverage`` (per tile and class: the area fraction an annotation
set covers, one table per set; see :mod:`features.annotations`). The blob kind is
``codebooks``.

Write rule (the tiles' ``write_id`` rule, with the table itself as the gate): each
write stamps every row of a slide with a fresh time-ordered ``write_id``, appends the
rows in one commit, then deletes that slide's rows with an *older* ``write_id``.
Readers keep, per slide, only the rows of its largest ``write_id``. So a rewrite
replaces a slide's rows and never appends a second copy, a reader sees the old rows
or the new ones and never both, and of two concurrent writers of one slide the newer
wins. A writer that dies between its append and its delete leaves older rows that
readers skip and that :func:`tidy` (run by compaction) or the next write removes.

Derived tables follow the latest store, not a checked-out past version: they are not
tagged with store versions, and :func:`cleanup` removes their old versions by age.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.store._errors import StoreNotFoundError, StoreSchemaError
from features.store._keys import (
    in_list,
    new_write_id,
    sql_literal,
    validate_name,
    validate_slide_id,
)
from features.store._tables import DERIVED_DIR, SLIDE_EMBEDDINGS_DIR, TableSet
from features.store.sandbox import check_predicate
from features.store.upkeep import derived_upkeep
from features.store.writer import _delete_where
from infra.errors import ConfigError

if TYPE_CHECKING:
    import lance

__all__ = [
    "BLOB_KINDS",
    "ROW_KINDS",
    "TILE_KINDS",
    "DerivedTable",
    "DerivedWrite",
    "blob_names",
    "cleanup",
    "delete_slide",
    "list_tables",
    "put_blobs",
    "read_blob",
    "read_rows",
    "tidy",
    "write_rows",
    "write_tile_values",
]

log = logging.getLogger(__name__)

# Per-tile kinds: the value column each holds and its type.
TILE_KINDS: Mapping[str, tuple[str, pa.DataType]] = {
    "attention": ("attention", pa.float32()),
    "modules": ("module", pa.int32()),
    "predictions": ("value", pa.float32()),
}
ROW_KINDS = (*TILE_KINDS, "graphs", "annotations", "coverage", "slide_features")
BLOB_KINDS = ("codebooks",)
SLIDE_EMBEDDINGS = "slide_embeddings"
MANIFEST = "manifest.json"
_KEYS = ("slide_id", "write_id")
_CONFLICT_RETRIES = 20


@dataclass(frozen=True)
class DerivedTable:
    """One derived table: its kind, name (a run, a codebook hash...) and Lance URI."""

    kind: str
    name: str
    uri: str


@dataclass(frozen=True)
class DerivedWrite:
    """What a write did: the table, each slide's new ``write_id`` and the rows appended."""

    table: DerivedTable
    write_ids: Mapping[str, str]
    rows: int


def _check_kind(kind: object, kinds: Sequence[str]) -> str:
    if kind not in kinds:
        raise ConfigError(f"derived kind must be one of {', '.join(kinds)}, not {kind!r}")
    return str(kind)


def _ref(tables: TableSet, kind: str, name: str) -> DerivedTable:
    _check_kind(kind, ROW_KINDS)
    name = validate_name(f"{kind} table name", name)
    return DerivedTable(kind, name, tables.location.join(DERIVED_DIR, kind, f"{name}.lance"))


def list_tables(tables: TableSet, kind: str | None = None) -> list[DerivedTable]:
    """Every derived table (``kind`` alone if given), slide embeddings included."""
    everything = [*ROW_KINDS, SLIDE_EMBEDDINGS]
    kinds = everything if kind is None else [_check_kind(kind, everything)]
    out = []
    for each in kinds:
        folder = (SLIDE_EMBEDDINGS_DIR,) if each == SLIDE_EMBEDDINGS else (DERIVED_DIR, each)
        for name in tables.lance_names(*folder):
            out.append(DerivedTable(each, name, tables.location.join(*folder, f"{name}.lance")))
    return out


# ---------------------------------------------------------------------- writing
def _keyed(slide_id: str, write_id: str, rows: pa.Table) -> pa.Table:
    clash = [c for c in _KEYS if c in rows.column_names]
    if clash:
        raise StoreSchemaError(
            f"slide {slide_id!r}: derived rows may not carry {clash}; the store adds them"
        )
    n = rows.num_rows
    keys = [pa.array([slide_id] * n, pa.string()), pa.array([write_id] * n, pa.string())]
    fields = [pa.field(c, pa.string(), nullable=False) for c in _KEYS]
    schema = pa.schema([*fields, *rows.schema])
    return pa.Table.from_arrays([*keys, *rows.columns], schema=schema)


def _fit(table: pa.Table, dataset: lance.LanceDataset, ref: DerivedTable) -> pa.Table:
    """Cast to the table's schema (float64 into float32 is fine); refuse other columns."""
    if table.schema.equals(dataset.schema, check_metadata=False):
        return table
    if table.column_names != dataset.schema.names:
        raise StoreSchemaError(
            f"derived table {ref.kind}/{ref.name} has columns "
            f"{dataset.schema.names}, the rows {table.column_names}"
        )
    try:
        return table.cast(dataset.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise StoreSchemaError(
            f"rows do not fit derived table {ref.kind}/{ref.name}: {exc}"
        ) from exc


def _open(tables: TableSet, ref: DerivedTable) -> lance.LanceDataset | None:
    try:
        return tables.open(ref.uri)
    except StoreNotFoundError:
        return None


def write_rows(
    tables: TableSet, kind: str, name: str, rows_by_slide: Mapping[str, pa.Table]
) -> DerivedWrite:
    """Replace the rows of each slide given in table ``kind/name`` (module docstring).

    One append for the whole group, then one delete of the slides' older rows. A slide
    given zero rows ends with none.
    """
    import lance

    ref = _ref(tables, kind, name)
    if not rows_by_slide:
        raise ConfigError(f"derived table {kind}/{name}: no slides to write")
    write_ids = {validate_slide_id(s): new_write_id() for s in rows_by_slide}
    parts = [_keyed(s, write_ids[s], rows) for s, rows in rows_by_slide.items()]
    try:
        table = pa.concat_tables(parts)
    except pa.ArrowInvalid as exc:
        raise StoreSchemaError(
            f"derived table {kind}/{name}: slides' rows differ in schema: {exc}"
        ) from exc
    dataset = _open(tables, ref) or tables.create(ref.uri, table.schema)
    table = _fit(table, dataset, ref)
    if table.num_rows:
        lance.write_dataset(table, ref.uri, mode="append", storage_options=tables.storage_options)
    older = [
        f"(slide_id = {sql_literal(s)} AND write_id < {sql_literal(w)})"
        for s, w in write_ids.items()
    ]
    replaced = _delete_where(tables.open(ref.uri), older)
    derived_upkeep(tables.open(ref.uri))
    log.debug(
        "%s/%s: wrote %d rows for %d slide(s), replaced %d",
        kind,
        name,
        table.num_rows,
        len(write_ids),
        replaced,
    )
    return DerivedWrite(ref, write_ids, table.num_rows)


def write_tile_values(
    tables: TableSet, kind: str, name: str, slide_id: str, coords: Any, values: Any
) -> DerivedWrite:
    """Replace one slide's per-tile values (``coords`` (N, 2) level-0 x, y; ``values`` (N,))."""
    _check_kind(kind, tuple(TILE_KINDS))
    column, dtype = TILE_KINDS[kind]
    xy = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    flat = np.asarray(values).reshape(-1)
    if len(flat) != len(xy):
        raise ConfigError(f"slide {slide_id!r}: {len(xy)} tiles but {len(flat)} {column} values")
    rows = pa.table(
        {"x": pa.array(xy[:, 0]), "y": pa.array(xy[:, 1]), column: pa.array(flat).cast(dtype)}
    )
    return write_rows(tables, kind, name, {slide_id: rows})


# ---------------------------------------------------------------------- reading
def _current_write_ids(dataset: lance.LanceDataset, slide_filter: str | None) -> list[str]:
    keys = dataset.to_table(columns=list(_KEYS), filter=slide_filter)
    if not keys.num_rows:
        return []
    newest = keys.group_by("slide_id").aggregate([("write_id", "max")])
    return newest.column("write_id_max").to_pylist()


def read_rows(
    tables: TableSet,
    kind: str,
    name: str,
    *,
    slide_ids: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    where: str | None = None,
) -> pa.Table:
    """The current rows of ``kind/name`` (each slide's newest write), without ``write_id``.

    ``where`` (one Lance SQL boolean expression, checked by
    :func:`~features.store.sandbox.check_predicate`) filters after the current write is
    chosen, and the current-write gate is applied again to the rows Lance returns, so no
    predicate can surface a replaced copy. A missing table raises
    :class:`StoreNotFoundError` naming the tables of that kind.
    """
    ref = _ref(tables, kind, name)
    dataset = _open(tables, ref)
    if dataset is None:
        have = [t.name for t in list_tables(tables, kind)]
        raise StoreNotFoundError(
            f"no derived table {kind}/{name!r} in the store at "
            f"{tables.location.uri}; it has {', '.join(have) or 'none'}"
        )
    slide_filter = None
    if slide_ids is not None:
        slide_filter = in_list("slide_id", [validate_slide_id(s) for s in slide_ids])
    current = _current_write_ids(dataset, slide_filter)
    predicate = in_list("write_id", current)
    if where:
        predicate = f"({predicate}) AND ({check_predicate(where)})"
    wanted = (
        list(columns)
        if columns is not None
        else [c for c in dataset.schema.names if c != "write_id"]
    )
    rows = dataset.to_table(columns=list(dict.fromkeys([*wanted, "write_id"])), filter=predicate)
    rows = rows.filter(pc.is_in(rows.column("write_id"), value_set=pa.array(current, pa.string())))
    return rows.select(wanted)


# ---------------------------------------------------------------------- housekeeping
def delete_slide(tables: TableSet, slide_id: str, encoder: str | None = None) -> int:
    """Delete a slide's rows from the derived tables; returns the rows removed.

    With ``encoder`` only that encoder's slide embeddings go: the other derived tables do
    not record an encoder, so they go with the slide as a whole (as its Zarr group does).
    """

    predicate = f"slide_id = {sql_literal(validate_slide_id(slide_id))}"
    removed = 0
    for ref in list_tables(tables):
        if encoder is not None and (ref.kind, ref.name) != (SLIDE_EMBEDDINGS, encoder):
            continue
        removed += _delete_where(tables.open(ref.uri), [predicate])
    return removed


def tidy(tables: TableSet, ref: DerivedTable) -> int:
    """Delete rows older than their slide's current write (left by a writer that died
    between append and delete, or by a slower concurrent writer); returns how many."""

    if ref.kind == SLIDE_EMBEDDINGS:  # keyed by merge_insert: never holds a second copy
        return 0
    dataset = tables.open(ref.uri)
    keys = dataset.to_table(columns=list(_KEYS))
    if not keys.num_rows:
        return 0
    newest = keys.group_by("slide_id").aggregate(
        [("write_id", "max"), ("write_id", "count_distinct")]
    )
    several = newest.filter(pc.greater(newest.column("write_id_count_distinct"), 1))
    clauses = [
        f"(slide_id = {sql_literal(s)} AND write_id < {sql_literal(w)})"
        for s, w in zip(
            several.column("slide_id").to_pylist(),
            several.column("write_id_max").to_pylist(),
            strict=True,
        )
    ]
    return _delete_where(dataset, clauses)


def cleanup(tables: TableSet, older_than: timedelta, delete_unverified: bool) -> dict[str, int]:
    """Remove old versions of every derived table; returns how many per ``kind/name``."""
    out = {}
    for ref in list_tables(tables):
        stats = tables.open(ref.uri).cleanup_old_versions(
            older_than, delete_unverified=delete_unverified, error_if_tagged_old_versions=False
        )
        out[f"{ref.kind}/{ref.name}"] = int(stats.old_versions)
    return out


# ---------------------------------------------------------------------- blobs
def _blob_folder(tables: TableSet, kind: str, name: str) -> tuple[Any, str]:
    _check_kind(kind, BLOB_KINDS)
    name = validate_name(f"{kind} name", name)
    fs, root = tables.filesystem()
    return fs, f"{root.rstrip('/')}/{DERIVED_DIR}/{kind}/{name}"


def put_blobs(tables: TableSet, kind: str, name: str, files: Mapping[str, bytes]) -> str:
    """Write a named set of files; they become visible together when the manifest lands.

    Names are meant to be content-addressed (a codebook's hash): rewriting one writes the
    same bytes again. Returns the folder's URI.
    """
    from infra.files import write_bytes_uri

    _blob_folder(tables, kind, name)
    if not files or MANIFEST in files:
        raise ConfigError(f"{kind}/{name}: give at least one file, none named {MANIFEST}")
    folder = tables.location.join(DERIVED_DIR, kind, name)
    for file, data in files.items():
        write_bytes_uri(
            f"{folder}/{validate_name('blob file name', file)}",
            data,
            tables.location.storage_options,
        )
    manifest = {"files": {f: len(d) for f, d in files.items()}}
    write_bytes_uri(
        f"{folder}/{MANIFEST}",
        json.dumps(manifest, sort_keys=True).encode(),
        tables.location.storage_options,
    )
    return folder


def blob_names(tables: TableSet, kind: str) -> list[str]:
    """Names of the committed blob sets of ``kind`` (those with a manifest), sorted."""
    _check_kind(kind, BLOB_KINDS)
    fs, root = tables.filesystem()
    base = f"{root.rstrip('/')}/{DERIVED_DIR}/{kind}"
    return [n for n in tables.entries(DERIVED_DIR, kind) if fs.exists(f"{base}/{n}/{MANIFEST}")]


def read_blob(tables: TableSet, kind: str, name: str, file: str) -> bytes:
    """One file of a committed blob set; :class:`StoreNotFoundError` if it has none."""
    fs, folder = _blob_folder(tables, kind, name)
    fs.invalidate_cache(folder)  # another process may have committed it since
    try:
        with fs.open(f"{folder}/{MANIFEST}", "rb") as handle:
            listed = json.loads(handle.read())["files"]
        if file not in listed:
            raise FileNotFoundError(file)
        with fs.open(f"{folder}/{file}", "rb") as handle:
            return bytes(handle.read())
    except FileNotFoundError as exc:
        raise StoreNotFoundError(
            f"no {kind} file {name}/{file} in the store at {tables.location.uri}"
        ) from exc

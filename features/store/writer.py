"""Two-phase writes: workers write invisible tile fragments, the driver commits a group.

Commit protocol
---------------
Two Lance tables cannot be committed in one transaction, so the ``slides`` table is
the *visibility gate* and the ``tiles`` tables are append-mostly storage behind it.

1. **Worker** (:func:`write_slide`): stamps every tile row with a fresh ``write_id``
   (time-ordered, see :func:`features.store._keys.new_write_id`) and writes Lance
   data files with ``lance.fragment.write_fragments``. Nothing is committed; the
   result is a picklable :class:`PendingSlide` holding the fragment metadata.
2. **Driver, tiles** (:func:`commit_slides`): one ``Append`` commit per encoder table
   with every fragment of the group, once every fragment's data files are found to
   exist (else :class:`FragmentMissingError` and nothing is appended). The rows are now in the table but invisible,
   because no ``slides`` row names their ``write_id`` yet. Fragments whose
   ``write_id`` is already in the table (a retried commit of the same pending
   slides) are not appended twice.
3. **Driver, slides**: one ``Append`` commit of the group's rows keyed on
   (slide_id, encoder, config_hash). This single commit is the moment every slide of
   the group becomes visible, its ``done`` status together with its tiles. A row takes
   over its key only if its ``write_id`` is newer than the key's current row, and a
   ``failed`` row never takes over from a ``done`` one (rows that would not are not
   appended), so committing a slide again for the same encoder and config replaces it
   and a stale retry cannot roll it back. An Append reads no slides row: a
   ``merge_insert`` joined the group against the whole table, so a commit grew with
   the store.
4. **Driver, tidy**: delete tile rows whose ``write_id`` is older than the current
   one of keys that had a slides row before this commit (the replaced copy, or orphans
   of an attempt that died between steps 2 and 3), and slides rows the current one
   shadows. A first commit of a key skips the tiles scan: it has no copy to replace. Only
   *older* rows are deleted, so a newer write landing concurrently is never touched.
   The same slides tidy also runs before step 3, so a shadowed row left by a race or
   a failed tidy can never be updated into a duplicate by the merge.

Readers (:mod:`features.store.reader`) only return tile rows whose ``write_id`` is
the current ``done`` row's ``write_id`` for its key, choosing per key the ``done``
row with the largest ``write_id`` (two drivers committing the same key at once can
both land a row, so readers must not assume one row per key; until step 4 the
replaced row is still there too). Hence at every instant a reader sees, per slide,
either the complete old copy or the complete new one, never both and never a part:

* a crash before step 2 leaves only unreferenced data files (removed by cleanup);
* a crash between 2 and 3 leaves invisible rows, deleted by the next commit of that
  slide when it already had a visible copy (step 4), else by
  :func:`features.store.versions.compact`'s orphan collection;
* a crash between 3 and 4 leaves shadowed rows that readers already skip.

Concurrency: appends never conflict with appends, deletes or compactions; an append
racing a table overwrite or restore, and a ``delete``, retry on commit conflicts
(Lance rebases them on the newer version); when retries run out the driver raises
:class:`~infra.errors.StoreConflictError`. Two writers committing the
*same* slide at once are ordered by their ``write_id`` (worker clock); different
slides never interfere. Each ``slides`` row also records ``tiles_version``, the
tiles version right after its append, so a past store version is read against a
tiles version that holds every tile it references.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from features.store._errors import FragmentMissingError, StoreSchemaError
from features.store._keys import in_list, new_write_id, sql_literal, validate_write_id
from features.store._tables import SLIDES, TILES_DIR, TableSet
from features.store.location import StoreLocation
from features.store.schema import (
    TILE_PAYLOAD_COLUMNS,
    SlideInfo,
    SlideKey,
    Status,
    slide_row,
    slides_table,
    tiles_schema,
)
from features.store.upkeep import (
    compact_small_fragments,
    ensure_scalar_indexes,
    tiles_upkeep,
)
from infra.errors import ConfigError, StoreConflictError
from infra.validate import choice, require

if TYPE_CHECKING:
    import lance

__all__ = [
    "CommitResult",
    "FragmentMissingError",
    "PendingSlide",
    "commit_slides",
    "failed_slide",
    "write_slide",
]

log = logging.getLogger(__name__)

_KEY = ("slide_id", "encoder", "config_hash")
_CONFLICT_RETRIES = 20
SlideKeyT = tuple[str, str, str]
#: The current (write id, status) of each key, as readers choose it.
Current = Mapping[SlideKeyT, tuple[str, str]]


@dataclass(frozen=True)
class PendingSlide:
    """A slide's written-but-uncommitted result, returned by a worker to the driver.

    Plain data (strings, numbers, the fragment metadata as JSON), so it pickles
    through Ray and can be logged or saved for a later commit.
    """

    key: SlideKey
    info: SlideInfo
    write_id: str
    status: Status
    n_tiles: int = 0
    fragments: tuple[str, ...] = ()
    dim: int | None = None
    dtype: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        validate_write_id(self.write_id)
        choice("PendingSlide.status", self.status, ("done", "failed"))
        require(
            self.status == "done" or not self.fragments,
            "len(PendingSlide.fragments)",
            "0 for a failed slide",
            len(self.fragments),
        )


@dataclass(frozen=True)
class CommitResult:
    """What a driver commit did. ``superseded`` keys already held a newer write."""

    slides_version: int
    tiles_versions: Mapping[str, int]
    committed: tuple[SlideKey, ...]
    superseded: tuple[SlideKey, ...]


def failed_slide(key: SlideKey, info: SlideInfo, error: BaseException) -> PendingSlide:
    """Record a slide that could not be processed (its error type and message)."""
    return PendingSlide(
        key=key,
        info=info,
        write_id=new_write_id(),
        status="failed",
        error_type=type(error).__name__,
        error_message=str(error),
    )


def _as_batches(data: pa.Table | pa.RecordBatch | Iterable[Any]) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.Table):
        yield from data.to_batches()
    else:
        for item in data:
            yield from _as_batches(item)


def _keyed_batches(
    first: pa.RecordBatch,
    rest: Iterator[pa.RecordBatch],
    key: SlideKey,
    write_id: str,
    schema: pa.Schema,
    counter: list[int],
) -> Iterator[pa.RecordBatch]:
    """Add the key columns, check each batch, refuse duplicate (x, y) within the slide."""
    seen: set[int] = set()
    batch: pa.RecordBatch | None = first
    while batch is not None:
        missing = [c for c in TILE_PAYLOAD_COLUMNS if c not in batch.schema.names]
        if missing:
            raise StoreSchemaError(f"{key.slide_id}: tile batch lacks columns {missing}")
        n = batch.num_rows
        xy = np.stack(
            [
                batch.column("x").to_numpy(zero_copy_only=False),
                batch.column("y").to_numpy(zero_copy_only=False),
            ],
            axis=1,
        ).astype(np.int64)
        packed = (xy[:, 0] << 32) ^ (xy[:, 1] & 0xFFFFFFFF)
        if len(np.unique(packed)) != n or seen.intersection(packed.tolist()):
            raise StoreSchemaError(f"{key.slide_id}: duplicate tile coordinates (x, y)")
        seen.update(packed.tolist())
        keys = [
            pa.array([v] * n, pa.string())
            for v in (key.slide_id, key.encoder, key.config_hash, write_id)
        ]
        columns = keys + [batch.column(c) for c in TILE_PAYLOAD_COLUMNS]
        try:
            out = pa.RecordBatch.from_arrays(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            # Cast rather than reject: a float32 column arriving as float64 is fine.
            try:
                table = pa.Table.from_arrays(columns, names=schema.names).cast(schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as cast_exc:
                raise StoreSchemaError(
                    f"{key.slide_id}: tile batch does not fit the {key.encoder} table schema: {cast_exc}"
                ) from exc
            out = table.combine_chunks().to_batches()[0]
        counter[0] += n
        yield out
        batch = next(rest, None)


def write_slide(
    location: StoreLocation,
    key: SlideKey,
    info: SlideInfo,
    tiles: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch | pa.Table],
    *,
    dtype: str | None = None,
    max_rows_per_file: int = 1 << 20,
    write_id: str | None = None,
    table_ready: bool = False,
) -> PendingSlide:
    """Worker side: write one slide's tiles as uncommitted Lance fragments.

    ``tiles`` holds payload batches (see :func:`features.store.schema.tile_batch`) and
    may be a generator: batches stream to storage, so a slide's tiles never need to be
    in memory at once. The encoder's tiles table is created on first use; its embedding
    width and dtype must then match. ``table_ready``: the caller has created and checked
    the table already (the ingest driver does, once per run), so this write skips that
    check (a create attempt, an open and an index listing: about 30 ms, as much as writing
    a small slide). Returns a :class:`PendingSlide` for the driver.
    """
    import lance

    batches = _as_batches(tiles)
    first = next(batches, None)
    # A pipeline writing one slide in several batches (possibly by retried tasks) passes
    # the write id its driver chose, so every batch belongs to the same logical write.
    write_id = validate_write_id(write_id) if write_id else new_write_id()
    if first is None:
        # No tissue, no tiles: a legitimate, committed "done" slide with zero tiles.
        return PendingSlide(key=key, info=info, write_id=write_id, status="done")
    emb_type = first.schema.field("embedding").type
    if not pa.types.is_fixed_size_list(emb_type):
        raise StoreSchemaError("embedding must be a fixed_size_list column")
    dim = emb_type.list_size
    dtype = dtype or ("float16" if emb_type.value_type == pa.float16() else "float32")
    schema = tiles_schema(dim, dtype)
    tables = TableSet(location)
    uri = tables.tiles_uri(key.encoder)
    if not table_ready:
        ensure_tiles_table(tables, key.encoder, dim, dtype)
    counter = [0]
    raised: list[BaseException] = []

    def checked() -> Iterator[pa.RecordBatch]:
        # Lance consumes the reader in native code and re-raises any Python error as
        # a generic OSError; keep the typed one to re-raise it.
        try:
            yield from _keyed_batches(first, batches, key, write_id, schema, counter)
        except Exception as exc:
            raised.append(exc)
            raise

    reader = pa.RecordBatchReader.from_batches(schema, checked())
    try:
        fragments = lance.fragment.write_fragments(
            reader,
            uri,
            schema=schema,
            max_rows_per_file=max_rows_per_file,
            storage_options=tables.storage_options,
        )
    except OSError as exc:
        if raised:
            raise raised[0] from exc
        raise
    log.debug("%s: wrote %d tiles in %d fragment(s)", key.slide_id, counter[0], len(fragments))
    return PendingSlide(
        key=key,
        info=info,
        write_id=write_id,
        status="done",
        n_tiles=counter[0],
        fragments=tuple(json.dumps(f.to_json()) for f in fragments),
        dim=dim,
        dtype=dtype,
    )


def ensure_tiles_table(tables: TableSet, encoder: str, dim: int, dtype: str) -> lance.LanceDataset:
    """Open the encoder's tiles table, creating it (with its write_id index) if absent."""
    schema = tiles_schema(dim, dtype)
    uri = tables.tiles_uri(encoder)
    dataset = tables.create(uri, schema)
    # The gate filters every read by write_id (and deletes by slide_id); B-trees keep
    # those lookups, not scans. Created once on the empty table; each commit folds its
    # fragments in (features.store.upkeep).
    ensure_scalar_indexes(dataset)
    return dataset


def _check_group(pending: Sequence[PendingSlide]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for item in pending:
        if not isinstance(item, PendingSlide):
            raise ConfigError(
                f"commit_slides takes PendingSlide objects, not {type(item).__name__}"
            )
        k = (item.key.slide_id, item.key.encoder, item.key.config_hash)
        if k in seen:
            raise ConfigError(f"slide {k} appears twice in one commit group")
        seen.add(k)


def _conflict(exc: BaseException) -> bool:
    from lance.commit import CommitConflictError

    return isinstance(exc, CommitConflictError) or "conflict" in str(exc).lower()


def _check_files_exist(
    tables: TableSet, encoder: str, owned: Sequence[tuple[str, lance.FragmentMetadata]]
) -> None:
    """Refuse to append fragments whose data files are gone: Lance would commit them
    unchecked, and from then on every scan of the table fails with "Not found"."""
    if not owned:
        return
    fs, root = tables.filesystem()
    data_dir = f"{root.rstrip('/')}/{TILES_DIR}/{encoder}.lance/data"
    fs.invalidate_cache(data_dir)  # a cached listing predates the workers' writes
    missing = sorted(
        {
            (slide_id, data_file.path)
            for slide_id, fragment in owned
            for data_file in fragment.data_files()
            if not fs.exists(f"{data_dir}/{data_file.path}")
        }
    )
    if missing:
        slides = sorted({slide_id for slide_id, _ in missing})
        raise FragmentMissingError(
            f"not committing {len(owned)} fragment(s) to {encoder}: {len(missing)} data "
            f"file(s) of slide(s) {slides} are gone (e.g. data/{missing[0][1]}); none of "
            "this group was made visible: ingest those slides again"
        )


def _append_tiles(tables: TableSet, encoder: str, items: Sequence[PendingSlide]) -> int:
    """Step 2: one Append of every fragment of the group; returns the new version."""
    import lance

    dataset = tables.tiles(encoder)
    ids = [p.write_id for p in items]
    landed = dataset.to_table(columns=["write_id"], filter=in_list("write_id", ids))
    already = set(landed.column("write_id").unique().to_pylist())
    owned = [
        (p.key.slide_id, lance.FragmentMetadata.from_json(text))
        for p in items
        if p.write_id not in already
        for text in p.fragments
    ]
    _check_files_exist(tables, encoder, owned)
    fragments = [fragment for _, fragment in owned]
    if already:
        log.info(
            "%d slide write(s) already appended to %s; not appending again", len(already), encoder
        )
    if not fragments:
        return int(dataset.version)
    try:
        committed = lance.LanceDataset.commit(
            dataset,
            lance.LanceOperation.Append(fragments),
            read_version=dataset.version,
            storage_options=tables.storage_options,
            max_retries=_CONFLICT_RETRIES,
        )
    except OSError as exc:
        if _conflict(exc):
            raise StoreConflictError(f"appending tiles to {encoder}: {exc}") from exc
        raise
    return int(committed.version)


def _row_key(row: Mapping[str, Any]) -> SlideKeyT:
    return (str(row["slide_id"]), str(row["encoder"]), str(row["config_hash"]))


def _wins(row: Mapping[str, Any], prior: tuple[str, str] | None) -> bool:
    """Whether a new slides row takes its key over from the key's current row: a newer
    write, and never a failed one over a done one (a rerun of the same write: no)."""
    if prior is None:
        return True
    write_id, status = prior
    return bool(row["write_id"] > write_id and (row["status"] == "done" or status != "done"))


def _merge_slides(tables: TableSet, rows: Sequence[Mapping[str, Any]], prior: Current) -> int:
    """Step 3: the gate. One Append commit makes the whole group visible at once; returns
    how many of its rows take over a key that already had a row.

    An Append, not a ``merge_insert``: a merge joins the group against every slides row
    (10 ms at 10,000 slides, so a commit grew with the store), while an Append writes
    the group's rows and reads none. What the merge's condition decided (a newer write
    replaces, a failed one never replaces a done one, a rerun of the same write is a
    no-op) is decided here against ``prior``, the keys' current rows read at the start
    of the commit; readers choose per key the ``done`` row with the largest write id, and
    the tidy step deletes the row that lost. A writer landing the same key in between is
    the race two first inserts always had (module docstring): both rows land, readers see
    one, the tidy removes the other.
    """
    import lance

    winners = [r for r in rows if _wins(r, prior.get(_row_key(r)))]
    if not winners:
        return 0
    dataset = tables.slides()
    try:
        fragments = lance.fragment.write_fragments(
            slides_table(winners),
            tables.uri(SLIDES),
            schema=dataset.schema,
            storage_options=tables.storage_options,
        )
        lance.LanceDataset.commit(
            dataset,
            lance.LanceOperation.Append(fragments),
            read_version=dataset.version,
            storage_options=tables.storage_options,
            max_retries=_CONFLICT_RETRIES,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        if _conflict(exc):
            raise StoreConflictError(f"committing {len(rows)} slide rows: {exc}") from exc
        raise
    return sum(1 for r in winners if _row_key(r) in prior)


def _key_predicate(key: SlideKey, *, with_encoder: bool) -> str:
    parts = [
        f"slide_id = {sql_literal(key.slide_id)}",
        f"config_hash = {sql_literal(key.config_hash)}",
    ]
    if with_encoder:
        parts.append(f"encoder = {sql_literal(key.encoder)}")
    return " AND ".join(parts)


def _delete_where(dataset: lance.LanceDataset, clauses: Sequence[str]) -> int:
    """Delete the rows matching any clause; returns how many matched."""
    if not clauses:
        return 0
    predicate = " OR ".join(clauses)
    # Deleting nothing would still add an empty version; count first.
    count = int(dataset.count_rows(filter=predicate))
    if count:
        dataset.delete(predicate, conflict_retries=_CONFLICT_RETRIES)
    return count


def _is_shadowed(row: tuple[str, str], current: tuple[str, str]) -> bool:
    """A slides row readers skip: older than its key's current row, or a failed row
    newer than a current done one (only two first inserts racing leave one)."""
    write_id, status = row
    return write_id < current[0] or (
        current[1] == "done" and status == "failed" and write_id > current[0]
    )


def _read_keys(tables: TableSet, keys: Sequence[SlideKey]) -> tuple[Current, set[SlideKeyT]]:
    """The current (write id, status) of each key, as readers choose it (``done`` first,
    then the newest write), and the keys that also hold shadowed rows: one read of the
    keys' rows, so the tidy needs no count of its own."""
    wanted = {(k.slide_id, k.encoder, k.config_hash) for k in keys}
    if not wanted:
        return {}, set()
    table = tables.slides().to_table(
        columns=[*_KEY, "write_id", "status"],
        filter=in_list("slide_id", sorted({k[0] for k in wanted})),
    )
    rows: dict[SlideKeyT, list[tuple[str, str]]] = {}
    for r in table.to_pylist():
        key = (r["slide_id"], r["encoder"], r["config_hash"])
        if key in wanted:
            rows.setdefault(key, []).append((r["write_id"], r["status"]))
    current = {k: max(v, key=lambda ws: (ws[1] == "done", ws[0])) for k, v in rows.items()}
    shadowed = {k for k, v in rows.items() if any(_is_shadowed(ws, current[k]) for ws in v)}
    return current, shadowed


def _tidy_slides(
    tables: TableSet, keys: Sequence[SlideKey], current: Current, shadowed: set[SlideKeyT]
) -> int:
    """Drop slides rows shadowed by the current row of their key (``shadowed``: the keys
    :func:`_read_keys` found holding some); returns how many went.

    Only rows *older* than the current one go: a concurrent commit of the same key
    lands a newer write, which must survive. A failed row newer than a done one can
    only come from two first inserts racing (the gate never lets failed replace done);
    it is shadowed and goes too.
    """
    clauses = []
    for key in keys:
        k = (key.slide_id, key.encoder, key.config_hash)
        found = current.get(k)
        if found is None or k not in shadowed:
            continue
        write_id, status = sql_literal(found[0]), found[1]
        predicate = f"write_id < {write_id}"
        if status == "done":
            predicate = f"({predicate} OR (status = 'failed' AND write_id > {write_id}))"
        clauses.append(f"({_key_predicate(key, with_encoder=True)} AND {predicate})")
    return _delete_where(tables.slides(), clauses)


def _tidy_tiles(tables: TableSet, keys: Sequence[SlideKey], current: Current) -> None:
    """Step 4: drop replaced tile copies and orphans of earlier attempts of these keys."""
    by_encoder: dict[str, list[str]] = {}
    for key in keys:
        found = current.get((key.slide_id, key.encoder, key.config_hash))
        if found is None or found[1] != "done":
            continue
        by_encoder.setdefault(key.encoder, []).append(
            f"({_key_predicate(key, with_encoder=False)} AND write_id < {sql_literal(found[0])})"
        )
    for encoder, clauses in by_encoder.items():
        if tables.exists(tables.tiles_uri(encoder)):
            _delete_where(tables.tiles(encoder), clauses)


def commit_slides(
    tables: TableSet, pending: Sequence[PendingSlide], *, run_id: str | None = None
) -> CommitResult:
    """Driver side: make a group of written slides visible atomically (module docstring)."""
    with tables.writing():
        return _commit_slides(tables, pending, run_id)


def _commit_slides(
    tables: TableSet, pending: Sequence[PendingSlide], run_id: str | None
) -> CommitResult:
    pending = list(pending)
    _check_group(pending)
    if not pending:
        return CommitResult(int(tables.slides().version), {}, (), ())
    groups: dict[str, list[PendingSlide]] = {}
    for item in pending:
        if item.status == "done" and item.fragments:
            groups.setdefault(item.key.encoder, []).append(item)
    keys = [p.key for p in pending]
    # Shadowed rows left by an earlier race or a failed tidy: clear them first (normally
    # none, and then no delete is issued).
    prior, stale = _read_keys(tables, keys)
    _tidy_slides(tables, keys, prior, stale)
    tiles_versions = {enc: _append_tiles(tables, enc, items) for enc, items in groups.items()}
    rows = []
    for item in pending:
        tiles_version = tiles_versions.get(item.key.encoder)
        if (
            tiles_version is None
            and item.status == "done"
            and tables.exists(tables.tiles_uri(item.key.encoder))
        ):
            tiles_version = int(tables.tiles(item.key.encoder).version)
        rows.append(
            slide_row(
                item.key,
                item.info,
                write_id=item.write_id,
                status=item.status,
                tile_count=item.n_tiles,
                error_type=item.error_type,
                error_message=item.error_message,
                run_id=run_id,
                tiles_version=tiles_version if item.status == "done" else None,
            )
        )
    updated = _merge_slides(tables, rows, prior)
    current, shadowed_keys = _read_keys(tables, keys)
    try:
        shadowed = _tidy_slides(tables, keys, current, shadowed_keys)
        # A replaced tile copy exists only where a slides row was there before this commit:
        # seen before the gate step, replaced by it (a concurrent writer's row landed in
        # between), or shadowed after it (two first inserts raced). When none was, the
        # tiles scan is skipped: run per commit it would make a run O(N²) in its tiles.
        # Orphans of a key never committed are left to compact's orphan collection.
        if updated or shadowed:
            _tidy_tiles(tables, keys, current)
        else:
            _tidy_tiles(
                tables,
                [k for k in keys if (k.slide_id, k.encoder, k.config_hash) in prior],
                current,
            )
    except (OSError, RuntimeError, ValueError) as exc:
        # The commit already happened; stale rows are invisible and compaction or the
        # next commit of these slides removes them.
        log.warning("commit landed but tidying replaced rows failed: %s", exc)
    for encoder in tiles_versions:
        # Keeps a bag read a lookup however many commits the table has had, and the
        # number of fragments (every manifest lists them all) low: the new ones are
        # merged, a few commits' worth at a time, then indexed.
        tiles_upkeep(tables.tiles(encoder))
    # Every commit adds a small slides fragment and scans the table: merge them (only the
    # small ones) so a commit and a listing do not grow with the commits ever made.
    compact_small_fragments(tables.slides())
    committed = tuple(
        p.key
        for p in pending
        if current.get((p.key.slide_id, p.key.encoder, p.key.config_hash), ("",))[0] == p.write_id
    )
    superseded = tuple(p.key for p in pending if p.key not in committed)
    for key in superseded:
        log.info(
            "%s/%s: a newer write already holds this slide; kept it", key.slide_id, key.encoder
        )
    return CommitResult(
        slides_version=int(tables.slides().version),
        tiles_versions=tiles_versions,
        committed=committed,
        superseded=superseded,
    )

"""Reading the store: slides, tiles (Arrow, pandas, torch) and streamed MIL bags.

Every tile read goes through the gate described in :mod:`features.store.writer`:
only rows whose ``write_id`` is the current ``done`` write of their slide are
returned, so partially committed or replaced data is never seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.store import _gate as _gatemod
from features.store._keys import in_list, sql_literal, validate_config_hash, validate_slide_id
from features.store._tables import StoreView
from features.store.sandbox import Sandbox, check_duckdb_predicate, check_predicate
from features.store.schema import SlideKey, embeddings_to_numpy
from infra.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import lance
    import pandas as pd
    import torch

__all__ = [
    "Bag",
    "TileFilter",
    "bag_from_table",
    "current_writes",
    "gate_rows",
    "iter_bag_batches",
    "iter_bags",
    "list_slides",
    "read_bag",
    "read_tiles",
    "require_known_slides",
    "scan_tiles",
    "tiles_pandas",
    "tiles_predicate",
    "to_torch",
    "visible_writes",
]

_GATE_COLUMNS = _gatemod.GATE_COLUMNS
_latest_per_key = _gatemod.latest_per_key
# Lance keeps a few decoded batches in flight; ~1k rows keeps that to tens of MB.
DEFAULT_BATCH_ROWS = 1024


def _slides_filter(
    encoder: str | None,
    slide_ids: Iterable[str] | None,
    config_hash: str | None,
) -> str | None:
    clauses = []
    if encoder is not None:
        clauses.append(f"encoder = {sql_literal(encoder)}")
    if slide_ids is not None:
        clauses.append(in_list("slide_id", [validate_slide_id(s) for s in slide_ids]))
    if config_hash is not None:
        clauses.append(f"config_hash = {sql_literal(validate_config_hash(config_hash))}")
    return " AND ".join(clauses) or None


def current_writes(
    slides: lance.LanceDataset, keys: Sequence[SlideKey]
) -> dict[tuple[str, str, str], tuple[str, str]]:
    """The current (write id, status) of each key (``done`` rows win over ``failed``)."""
    if not keys:
        return {}
    rows = slides.to_table(
        columns=_GATE_COLUMNS, filter=in_list("slide_id", {k.slide_id for k in keys})
    )
    rows = _latest_per_key(rows)
    return {
        (r["slide_id"], r["encoder"], r["config_hash"]): (r["write_id"], r["status"])
        for r in rows.to_pylist()
    }


def gate_state(view: StoreView, encoder: str) -> _gatemod.GateState:
    """Every current ``done`` write of an encoder, and its rows per slide id, cached per
    slides version.

    A slides version never changes, so its gate is computed once per version: a
    serving process answering many searches or bag reads re-reads it only after a
    commit lands, and then only the fragments that commit changed, from the nearest
    cached version (:mod:`._gate`: the first read after a commit no longer scans every
    slide). The rows per slide let a one-slide read (a bag) take its row instead of
    filtering every slide's (0.3 ms a filter at 10,000 slides, three per bag).
    """
    slides = view.slides()
    version = int(slides.version)
    cache = view.tables.gate_cache
    state: _gatemod.GateState | None = cache.get((version, encoder))
    if state is None:
        near = sorted((abs(v - version), v) for (v, e), _ in cache.items() if e == encoder)
        base = cache.get((near[0][1], encoder)) if near else None
        state = (
            _gatemod.advance(base, slides) if base is not None else _gatemod.build(slides, encoder)
        )
        cache.put((version, encoder), state)
    return state


#: Up to this many slides asked for, their gate rows are taken by slide id, not filtered.
_TAKE_SLIDES = 64


def visible_writes(
    view: StoreView,
    encoder: str,
    *,
    slide_ids: Iterable[str] | None = None,
    exclude_slide_ids: Iterable[str] = (),
    config_hash: str | None = None,
) -> pa.Table:
    """The gate: current ``done`` writes (slide_id, config_hash, write_id...) of an encoder."""
    state = gate_state(view, encoder)
    rows = state.rows
    if slide_ids is not None:
        wanted_ids = [validate_slide_id(s) for s in slide_ids]
        if len(wanted_ids) <= _TAKE_SLIDES:
            picked = sorted({i for s in wanted_ids for i in state.by_slide.get(s, ())})
            rows = state.table.take(pa.array(picked, pa.int64()))
        else:
            wanted = pa.array(wanted_ids, pa.string())
            rows = rows.filter(pc.is_in(rows.column("slide_id"), wanted))
    if config_hash is not None:
        rows = rows.filter(pc.equal(rows.column("config_hash"), validate_config_hash(config_hash)))
    excluded = [validate_slide_id(s) for s in exclude_slide_ids]
    if excluded:
        rows = rows.filter(pc.invert(pc.is_in(rows.column("slide_id"), pa.array(excluded))))
    return rows


def list_slides(
    view: StoreView,
    *,
    encoder: str | None = None,
    status: str | None = None,
    slide_ids: Iterable[str] | None = None,
    config_hash: str | None = None,
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Slides rows, one per (slide, encoder, config), with optional filters.

    ``where`` is one SQL boolean expression over slides columns written by the caller
    (for example ``"mpp < 0.3 AND vendor = 'aperio'"``), run in the SQL sandbox
    (:mod:`features.store.sandbox`): no subquery, table function or second statement.
    """
    if status not in (None, "done", "failed"):
        raise ConfigError(f"status must be 'done' or 'failed', not {status!r}")
    base = _slides_filter(encoder, slide_ids, config_hash)
    table = view.slides().to_table(filter=base)
    table = _latest_per_key(table)
    if status is not None:
        table = table.filter(pc.equal(table.column("status"), status))
    if where:
        # The gate dedup must run before a user predicate, or a predicate matching only
        # an older shadowed row would resurrect it: filter the deduplicated rows, in the
        # same sandbox as ``query sql``.
        table = _filter_slides(table, where)
    table = table.sort_by([("slide_id", "ascending"), ("encoder", "ascending")])
    return table.select(list(columns)) if columns else table


def _filter_slides(table: pa.Table, where: str) -> pa.Table:
    with Sandbox() as box:
        box.add("slides", table)
        box.lock()
        return box.fetch(check_duckdb_predicate(box.con, "slides", where))


def tiles_predicate(
    view: StoreView,
    encoder: str,
    dataset: lance.LanceDataset,
    *,
    slide_ids: Iterable[str] | None = None,
    exclude_slide_ids: Iterable[str] = (),
    config_hash: str | None = None,
    where: str | None = None,
) -> str | None:
    """A Lance predicate selecting exactly the visible tiles asked for (and ``where``).

    ``where`` must be one boolean expression (:func:`~features.store.sandbox.check_predicate`),
    so it cannot close the parenthesis around it and escape the gate; readers that pass
    user text also apply the gate to the rows Lance returns (:func:`gate_rows`).

    The exact form lists the visible write ids. When every row of the table is
    visible (nothing replaced or orphaned awaits tidying: the row count equals the
    sum of the gate rows' tile counts) and no cohort is asked for, the gate needs no
    predicate at all, which keeps vector-search prefilters cheap.
    """
    gate = _visibility_predicate(view, encoder, dataset, slide_ids, exclude_slide_ids, config_hash)
    if where:
        where = check_predicate(where)
        return f"({gate}) AND ({where})" if gate else where
    return gate


@dataclass(frozen=True)
class TileFilter:
    """What a tile read asks for (a cohort, slides left out, a config, the caller's
    ``where``), turned into the Lance predicate and, when the caller's text is in it, the
    gate held again on the rows that come back. One object instead of the four arguments
    every reader forwarded by hand."""

    slide_ids: tuple[str, ...] | None = None
    exclude_slide_ids: tuple[str, ...] = ()
    config_hash: str | None = None
    where: str | None = None

    @classmethod
    def of(
        cls,
        slide_ids: Iterable[str] | None = None,
        exclude_slide_ids: Iterable[str] = (),
        config_hash: str | None = None,
        where: str | None = None,
    ) -> TileFilter:
        cohort = None if slide_ids is None else tuple(slide_ids)
        return cls(cohort, tuple(exclude_slide_ids), config_hash, where)

    def predicate(self, view: StoreView, encoder: str, dataset: lance.LanceDataset) -> str | None:
        return tiles_predicate(
            view,
            encoder,
            dataset,
            slide_ids=self.slide_ids,
            exclude_slide_ids=self.exclude_slide_ids,
            config_hash=self.config_hash,
            where=self.where,
        )

    def gate(
        self, view: StoreView, encoder: str
    ) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
        """The row filter to apply after Lance, or None when no caller text is in the
        predicate (the store's own predicate is then exact)."""
        if not self.where:
            return None
        return gate_rows(
            view,
            encoder,
            slide_ids=self.slide_ids,
            exclude_slide_ids=self.exclude_slide_ids,
            config_hash=self.config_hash,
        )


def gate_rows(
    view: StoreView,
    encoder: str,
    *,
    slide_ids: Iterable[str] | None = None,
    exclude_slide_ids: Iterable[str] = (),
    config_hash: str | None = None,
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """A filter keeping only rows of the visible writes asked for (needs ``write_id``).

    Applied after Lance whenever the caller's own text is in the predicate: the gate then
    holds whatever Lance made of that text.
    """
    writes = visible_writes(
        view,
        encoder,
        slide_ids=slide_ids,
        exclude_slide_ids=exclude_slide_ids,
        config_hash=config_hash,
    )
    allowed = writes.column("write_id").combine_chunks()

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.is_in(batch.column("write_id"), value_set=allowed))

    return keep


def _visibility_predicate(
    view: StoreView,
    encoder: str,
    dataset: lance.LanceDataset,
    slide_ids: Iterable[str] | None,
    exclude_slide_ids: Iterable[str],
    config_hash: str | None,
) -> str | None:
    excluded = sorted({validate_slide_id(s) for s in exclude_slide_ids})
    everything = visible_writes(view, encoder)
    total = pc.sum(everything.column("tile_count")).as_py() or 0
    if slide_ids is None and config_hash is None and dataset.count_rows() == total:
        if not excluded:
            return None
        return f"NOT ({in_list('slide_id', excluded)})"
    writes = visible_writes(
        view,
        encoder,
        slide_ids=slide_ids,
        exclude_slide_ids=excluded,
        config_hash=config_hash,
    )
    return in_list("write_id", writes.column("write_id").to_pylist())


def scan_tiles(
    view: StoreView,
    encoder: str,
    *,
    slide_ids: Iterable[str] | None = None,
    exclude_slide_ids: Iterable[str] = (),
    config_hash: str | None = None,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Stream visible tiles of a slide, a cohort (``slide_ids``) or all slides.

    ``where`` is an extra Lance SQL predicate over tile columns written by the caller
    (for example ``"tissue_fraction > 0.5 AND qc_flags = 0"``).
    """
    dataset = view.tiles(encoder)
    if dataset is None:
        return
    wanted = list(columns) if columns else None
    ask = TileFilter.of(slide_ids, exclude_slide_ids, config_hash, where)
    predicate = ask.predicate(view, encoder, dataset)
    keep = ask.gate(view, encoder)
    scanned = (
        wanted if keep is None or wanted is None or "write_id" in wanted else [*wanted, "write_id"]
    )
    scanner = dataset.scanner(
        columns=scanned,
        filter=predicate,
        batch_size=batch_size,
        # One fragment at a time keeps memory to a few batches.
        fragment_readahead=1,
    )
    for batch in scanner.to_batches():
        if keep is not None:
            batch = keep(batch)
            if scanned is not wanted and wanted is not None:
                batch = batch.select(wanted)
        yield batch


def read_tiles(view: StoreView, encoder: str, **kwargs: Any) -> pa.Table:
    """Visible tiles as one Arrow table (arguments as :func:`scan_tiles`)."""
    from features.store.schema import tiles_schema

    batches = list(scan_tiles(view, encoder, **kwargs))
    if batches:
        return pa.Table.from_batches(batches)
    dataset = view.tiles(encoder)
    schema = dataset.schema if dataset is not None else tiles_schema(1)
    columns = kwargs.get("columns")
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    return schema.empty_table()


def tiles_pandas(view: StoreView, encoder: str, **kwargs: Any) -> pd.DataFrame:
    """Visible tiles as a DataFrame; embeddings become one NumPy array per row."""
    return read_tiles(view, encoder, **kwargs).to_pandas()


def _tensor(array: np.ndarray) -> torch.Tensor:
    import torch

    # Arrow hands out read-only buffers; torch needs memory it may write to.
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def to_torch(table: pa.Table) -> dict[str, Any]:
    """Numeric columns as torch tensors (embeddings as one (N, D) tensor); strings as lists."""
    out: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_fixed_size_list(column.type):
            out[name] = _tensor(embeddings_to_numpy(column))
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            out[name] = _tensor(column.to_numpy(zero_copy_only=False))
        else:
            out[name] = column.to_pylist()
    return out


@dataclass(frozen=True)
class Bag:
    """A slide's bag for MIL: (N, D) embeddings and their (N, 2) level-0 (x, y) coords."""

    slide_id: str
    embeddings: np.ndarray
    coords: np.ndarray

    def __len__(self) -> int:
        return len(self.embeddings)

    def to_torch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensor(self.embeddings), _tensor(self.coords)


def bag_from_table(slide_id: str, batch: pa.RecordBatch | pa.Table) -> Bag:
    coords = np.stack(
        [
            batch.column("x").to_numpy(zero_copy_only=False),
            batch.column("y").to_numpy(zero_copy_only=False),
        ],
        axis=1,
    ).astype(np.int64, copy=False)
    return Bag(slide_id, embeddings_to_numpy(batch.column("embedding")), coords)


def _single_write(writes: pa.Table, slide_id: str) -> str | None:
    """The write id holding ``slide_id``'s visible tiles, None when it has none."""
    mine = writes.filter(pc.equal(writes.column("slide_id"), slide_id))
    if mine.num_rows > 1:
        hashes = mine.column("config_hash").to_pylist()
        raise ConfigError(
            f"{slide_id} has features for several configs {hashes}; pass config_hash="
        )
    return mine.column("write_id")[0].as_py() if mine.num_rows else None


def _row_addresses(dataset: lance.LanceDataset, predicate: str) -> np.ndarray:
    """Row addresses (fragment id << 32 | offset) of the rows matching ``predicate``,
    sorted, from the scalar index alone (and a scan of what it does not cover yet)."""
    found = dataset.to_table(columns=[], filter=predicate, with_row_address=True)
    return np.sort(found.column("_rowaddr").to_numpy())


def _scan_write(
    dataset: lance.LanceDataset, slide_id: str, write_id: str, batch_size: int
) -> Iterator[Bag]:
    # The write's rows by address from the write_id B-tree, then taken in pieces of
    # ``batch_size``: the cost follows the slide's rows, not the fragments holding them
    # (a merged fragment holds many slides, see features.store.upkeep) nor the table's
    # fragments, and memory stays at one piece. A slide's rows are contiguous in their
    # fragment, so each piece is a range read.
    addresses = _row_addresses(dataset, f"write_id = {sql_literal(write_id)}")
    for start in range(0, len(addresses), max(1, batch_size)):
        piece = addresses[start : start + batch_size]
        table = dataset._take_rows(pa.array(piece, pa.uint64()), columns=["x", "y", "embedding"])
        if table.num_rows:
            yield bag_from_table(slide_id, table)


def _empty_bag(dataset: lance.LanceDataset | None, slide_id: str) -> Bag:
    if dataset is None:
        return Bag(slide_id, np.empty((0, 0), np.float32), np.empty((0, 2), np.int64))
    emb_type = dataset.schema.field("embedding").type
    dtype = np.float16 if emb_type.value_type == pa.float16() else np.float32
    return Bag(slide_id, np.empty((0, emb_type.list_size), dtype), np.empty((0, 2), np.int64))


def _assemble(slide_id: str, pieces: Iterator[Bag], expected: int) -> Bag | None:
    """Fill one preallocated (N, D) array from streamed pieces (no list-then-concatenate,
    which would hold the bag twice); ``expected`` is the gate's tile count."""
    first = next(pieces, None)
    if first is None:
        return None
    size = max(expected, len(first))
    embeddings = np.empty((size, first.embeddings.shape[1]), first.embeddings.dtype)
    coords = np.empty((size, 2), np.int64)
    filled = 0
    for piece in itertools.chain([first], pieces):
        end = filled + len(piece)
        if end > len(embeddings):  # more rows than the gate said: grow (never expected)
            embeddings = np.resize(embeddings, (end, embeddings.shape[1]))
            coords = np.resize(coords, (end, 2))
        embeddings[filled:end] = piece.embeddings
        coords[filled:end] = piece.coords
        filled = end
    return Bag(slide_id, embeddings[:filled], coords[:filled])


def iter_bag_batches(
    view: StoreView,
    slide_id: str,
    encoder: str,
    *,
    config_hash: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Iterator[Bag]:
    """A slide's bag in pieces of at most ``batch_size`` tiles; memory stays bounded."""
    slide_id = validate_slide_id(slide_id)
    writes = visible_writes(view, encoder, slide_ids=[slide_id], config_hash=config_hash)
    write_id = _single_write(writes, slide_id)
    dataset = view.tiles(encoder)
    if write_id is not None and dataset is not None:
        yield from _scan_write(dataset, slide_id, write_id, batch_size)


def read_bag(
    view: StoreView, slide_id: str, encoder: str, *, config_hash: str | None = None
) -> Bag:
    """A slide's whole bag; an empty (0, D) bag when the slide is known but has no
    visible tiles (failed, or no tissue). An id the store has never seen for this
    encoder raises :class:`SlideNotInStoreError`: an empty bag for a typo would
    surface much later as NaN features."""
    slide_id = validate_slide_id(slide_id)
    if visible_writes(view, encoder, slide_ids=[slide_id], config_hash=config_hash).num_rows == 0:
        require_known_slides(view, encoder, [slide_id])
    return next(iter_bags(view, encoder, [slide_id], config_hash=config_hash))


def require_known_slides(view: StoreView, encoder: str, slide_ids: Sequence[str]) -> None:
    """Raise :class:`SlideNotInStoreError` naming the ids with no slides row for ``encoder``."""
    from features.store._errors import SlideNotInStoreError

    wanted = sorted({validate_slide_id(s) for s in slide_ids})
    if not wanted:
        return
    rows = view.slides().to_table(columns=["slide_id"], filter=_slides_filter(encoder, None, None))
    known = set(rows.column("slide_id").to_pylist())
    missing = [s for s in wanted if s not in known]
    if missing:
        examples = ", ".join(sorted(known)[:5]) or "none"
        more = f" (and {len(known) - 5} more)" if len(known) > 5 else ""
        raise SlideNotInStoreError(
            f"slide id(s) {', '.join(map(repr, missing[:10]))} not in the store at "
            f"{view.tables.location.uri} for encoder {encoder!r}; it holds {len(known)} "
            f"slide(s): {examples}{more}"
        )


def _read_bag(
    dataset: lance.LanceDataset | None, writes: pa.Table, slide_id: str, batch_size: int
) -> tuple[Bag | None, int]:
    """(bag or None, tile count the gate promised)."""
    write_id = _single_write(writes, slide_id)
    if write_id is None or dataset is None:
        return None, 0
    mine = writes.filter(pc.equal(writes.column("write_id"), write_id))
    expected = int(mine.column("tile_count")[0].as_py() or 0)
    bag = _assemble(slide_id, _scan_write(dataset, slide_id, write_id, batch_size), expected)
    return bag, expected


def iter_bags(
    view: StoreView,
    encoder: str,
    slide_ids: Iterable[str] | None = None,
    *,
    config_hash: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Iterator[Bag]:
    """Bags one slide at a time, in the order given (all visible slides when None).

    Only one bag is in memory at a time. The gate and the tiles table are opened once,
    so a training loop pays one lookup per bag and an epoch reads one snapshot even
    while new commits land. Each bag is checked against the tile count its slides row
    promises: if a commit replaced and tidied the slide between reading the gate and
    opening the tiles table, the bag is read again from a fresh view.
    """
    wanted = None if slide_ids is None else [validate_slide_id(s) for s in slide_ids]
    writes = visible_writes(view, encoder, slide_ids=wanted, config_hash=config_hash)
    if wanted is None:
        wanted = sorted(set(writes.column("slide_id").to_pylist()))
    dataset = view.tiles(encoder)
    for slide_id in wanted:
        bag, expected = _read_bag(dataset, writes, slide_id, batch_size)
        found = 0 if bag is None else len(bag)
        if found != expected and not view.pinned:
            fresh = StoreView(view.tables)
            fresh_writes = visible_writes(
                fresh, encoder, slide_ids=[slide_id], config_hash=config_hash
            )
            bag, expected = _read_bag(fresh.tiles(encoder), fresh_writes, slide_id, batch_size)
            found = 0 if bag is None else len(bag)
        if found != expected:
            raise StoreError(f"{slide_id}: its slides row promises {expected} tiles, found {found}")
        yield bag if bag is not None else _empty_bag(dataset, slide_id)

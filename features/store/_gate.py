"""The gate of one encoder at one slides version, kept up to date from what changed.

The gate (:mod:`features.store.writer`) is, per (slide_id, encoder, config_hash), the
``done`` slides row with the largest ``write_id``: a maximum over the live ``done`` rows.
Every commit and ``delete_slide`` makes a new slides version, and rebuilding the gate
from the whole table after each one made the first read after a commit O(slides)
(22 -> 48 ms at 100 -> 10,000 slides, docs/scale.md). A new version differs from a cached
one by a few fragments: a commit appends one, a tidy or a delete writes a deletion file,
the small-fragment merge rewrites a few. So a :class:`GateState` remembers the fragments
it was computed from and every live row's address, and :func:`advance` reads only the
fragments whose data or deletion files differ:

* rows gone (a fragment removed, or rows deleted in one) drop from the live ``done`` rows;
* rows new (a fragment added or rewritten, or rows undeleted by time travel) join them;
* only the slides with a row gone or new get their winner recomputed, from the live
  ``done`` rows kept in memory (a key whose winner was deleted falls back to the next
  ``done`` row, as a full rebuild would).

It depends on nothing about who wrote the versions (another process, a restore, a
``checkout`` of an older version): it compares manifests, and a fragment whose data files
changed is read anew even under the same id, so its row addresses are never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import lance

__all__ = ["GATE_COLUMNS", "GateState", "advance", "build", "latest_per_key"]

KEY = ("slide_id", "encoder", "config_hash")
GATE_COLUMNS = [*KEY, "write_id", "status", "tiles_version", "tile_count"]
_ADDR = "_rowaddr"
#: Above this share of the table's rows changed, a full rebuild is as cheap as an update.
_REBUILD_SHARE = 0.5
#: The gate's table drops its replaced rows once they are this many and outnumber the
#: live ones by this ratio (amortized O(1) per update).
_MIN_DEAD = 1024
_DEAD_RATIO = 1.0


def latest_per_key(table: pa.Table) -> pa.Table:
    """One row per (slide_id, encoder, config_hash): ``done`` first, then newest write."""
    if table.num_rows == 0:
        return table
    done = pc.if_else(pc.equal(table.column("status"), "done"), "1", "0")
    rank = pc.binary_join_element_wise(done, table.column("write_id"), "")
    ordered = table.append_column("_rank", rank).sort_by([("_rank", "descending")])
    keys = pc.binary_join_element_wise(*(ordered.column(c) for c in KEY), "\x1f")
    _, first = np.unique(keys.to_numpy(zero_copy_only=False), return_index=True)
    return ordered.take(pa.array(np.sort(first))).drop_columns(["_rank"])


@dataclass(frozen=True)
class GateState:
    """The gate of ``encoder`` at slides ``version`` and what it was computed from."""

    version: int
    encoder: str
    #: fragment id -> (data file paths, deletion file) at ``version``
    fragments: dict[int, tuple[Any, ...]]
    #: every live row address of the slides table (any encoder, any status)
    live: np.ndarray
    #: every live ``done`` row of the encoder, and its row addresses
    done: pa.Table
    done_addr: np.ndarray
    #: the gate: one ``done`` row per key (the newest write)
    rows: pa.Table
    #: ``rows`` and rows an update replaced since the last compaction (``alive`` false):
    #: ``by_slide`` indexes this table, so an update appends to it instead of
    #: re-indexing every slide
    table: pa.Table
    alive: np.ndarray
    by_slide: dict[str, list[int]]
    #: slides rows this state read from the table (all of them for a full build)
    rows_read: int


def _signature(fragment: Any) -> tuple[Any, ...]:
    meta = fragment.metadata
    deletion = meta.deletion_file
    deleted = (
        None
        if deletion is None
        else (deletion.id, deletion.read_version, deletion.num_deleted_rows)
    )
    return (tuple(f.path for f in meta.data_files()), deleted)


def _fragments(slides: lance.LanceDataset) -> tuple[dict[int, tuple[Any, ...]], dict[int, Any]]:
    objects = {int(f.fragment_id): f for f in slides.get_fragments()}
    return {i: _signature(f) for i, f in objects.items()}, objects


def _read(slides: lance.LanceDataset, fragments: list[Any] | None) -> pa.Table:
    scanner = slides.scanner(columns=GATE_COLUMNS, with_row_address=True, fragments=fragments)
    return scanner.to_table()


def _done_of(rows: pa.Table, encoder: str) -> pa.Table:
    keep = pc.and_(
        pc.equal(rows.column("encoder"), encoder), pc.equal(rows.column("status"), "done")
    )
    return rows.filter(keep)


def _addresses(rows: pa.Table) -> np.ndarray:
    return np.asarray(rows.column(_ADDR).to_numpy(), dtype=np.uint64)


def _index(rows: pa.Table) -> dict[str, list[int]]:
    by_slide: dict[str, list[int]] = {}
    for i, slide in enumerate(rows.column("slide_id").to_pylist()):
        by_slide.setdefault(slide, []).append(i)
    return by_slide


def build(slides: lance.LanceDataset, encoder: str) -> GateState:
    """The gate from every row of the table (no state to start from)."""
    signatures, _ = _fragments(slides)
    table = _read(slides, None)
    done = _done_of(table, encoder)
    gate = latest_per_key(done.drop_columns([_ADDR]))
    return GateState(
        version=int(slides.version),
        encoder=encoder,
        fragments=signatures,
        live=_addresses(table),
        done=done.drop_columns([_ADDR]),
        done_addr=_addresses(done),
        rows=gate,
        table=gate,
        alive=np.ones(gate.num_rows, bool),
        by_slide=_index(gate),
        rows_read=table.num_rows,
    )


def _replace_slides(
    state: GateState, slides: set[str], winners: pa.Table
) -> tuple[pa.Table, np.ndarray, dict[str, list[int]]]:
    """The gate's table, live mask and index with ``slides``' rows replaced by ``winners``:
    their old rows marked dead, the winners appended (O(changed) Python work; the table
    is compacted, once its dead rows outnumber its live ones, in one O(slides) pass)."""
    alive = state.alive.copy()
    by_slide = dict(state.by_slide)
    for slide in slides:
        alive[by_slide.pop(slide, [])] = False
    start = state.table.num_rows
    for offset, slide in enumerate(winners.column("slide_id").to_pylist()):
        by_slide.setdefault(slide, []).append(start + offset)
    table = pa.concat_tables([state.table, winners]).combine_chunks()
    alive = np.concatenate([alive, np.ones(winners.num_rows, bool)])
    dead = len(alive) - int(alive.sum())
    if dead > max(_MIN_DEAD, _DEAD_RATIO * (len(alive) - dead)):
        table = table.filter(pa.array(alive))
        return table, np.ones(table.num_rows, bool), _index(table)
    return table, alive, by_slide


def _in_fragments(addresses: np.ndarray, ids: set[int]) -> np.ndarray:
    return np.isin(addresses >> np.uint64(32), np.fromiter(ids, np.uint64, len(ids)))


def advance(state: GateState, slides: lance.LanceDataset) -> GateState:
    """The gate at ``slides``' version, from ``state`` (any other version of the table)."""
    signatures, objects = _fragments(slides)
    old = state.fragments
    replaced = {i for i in old if old[i][0] != signatures.get(i, (None,))[0]}
    replaced |= {i for i in signatures if i not in old}
    deleted_only = {
        i for i in signatures if i in old and i not in replaced and old[i] != signatures[i]
    }
    changed = [objects[i] for i in sorted((replaced | deleted_only) & set(signatures))]
    if not changed and not replaced:
        return replace(state, version=int(slides.version), rows_read=0)
    if changed:
        read = _read(slides, changed)
    else:  # fragments only removed: nothing to read
        read = state.done.schema.append(pa.field(_ADDR, pa.uint64())).empty_table()
    if read.num_rows > _REBUILD_SHARE * max(len(state.live), 1):
        return build(slides, state.encoder)
    new_addr = _addresses(read)
    old_replaced = state.live[_in_fragments(state.live, replaced)] if replaced else state.live[:0]
    old_partial = (
        state.live[_in_fragments(state.live, deleted_only)] if deleted_only else old_replaced[:0]
    )
    from_partial = (
        _in_fragments(new_addr, deleted_only) if deleted_only else np.zeros(len(new_addr), bool)
    )
    # Plain masks, no set operations over the whole table (a sort of every address).
    gone = old_partial[~np.isin(old_partial, new_addr[from_partial])]
    removed = np.concatenate([old_replaced, gone])
    added_mask = ~from_partial | ~np.isin(new_addr, old_partial)
    added = _done_of(read.filter(pa.array(added_mask)), state.encoder)

    kept = ~np.isin(state.done_addr, removed)
    gone_slides = set(state.done.filter(pa.array(~kept)).column("slide_id").to_pylist())
    new_done = pa.concat_tables([state.done.filter(pa.array(kept)), added.drop_columns([_ADDR])])
    new_done = new_done.combine_chunks()
    done_addr = np.concatenate([state.done_addr[kept], _addresses(added)])
    live = state.live[~np.isin(state.live, removed)] if len(removed) else state.live
    live = np.concatenate([live, new_addr[added_mask]])
    affected = gone_slides | set(added.column("slide_id").to_pylist())
    rows, table, alive, by_slide = state.rows, state.table, state.alive, state.by_slide
    if affected:
        touched = pa.array(sorted(affected), pa.string())
        winners = latest_per_key(new_done.filter(pc.is_in(new_done.column("slide_id"), touched)))
        table, alive, by_slide = _replace_slides(state, affected, winners)
        rows = table.filter(pa.array(alive)) if not alive.all() else table
    return GateState(
        version=int(slides.version),
        encoder=state.encoder,
        fragments=signatures,
        live=live,
        done=new_done,
        done_addr=done_addr,
        rows=rows,
        table=table,
        alive=alive,
        by_slide=by_slide,
        rows_read=read.num_rows,
    )

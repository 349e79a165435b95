"""Slide-level embeddings: one row per visible slide and encoder, pooled from its tiles.

Layout: ``slide_embeddings/<encoder>.lance`` under the store root, columns
``slide_id, encoder, config_hash, write_id, tile_count, tissue_area_mm2, mean, max,
created_at``. ``mean`` and ``max`` are attention-free poolings of the slide's tile
embeddings (float32), the usual inputs of a linear probe or kNN baseline.

The table is a *derived cache* keyed by the tile write it was pooled from
(``write_id``), never a source of truth:

* ingestion refreshes it (:func:`refresh`) every 256 committed slides and at the end
  of a run, one scan of the tiles table per refresh, so it is current when the run
  ends (a slide committed since the last refresh is pooled on read meanwhile);
* readers (:func:`read`) keep only rows whose ``write_id`` is the slide's current
  visible write (the store's gate), and pool any visible slide the table lacks or
  holds stale (an ingest from before this table existed, a failed refresh, a past
  store version) from its tiles on the fly, so a read is always correct;
* :func:`rebuild` recomputes it from the tiles at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.store._keys import in_list, validate_encoder
from features.store._tables import SLIDE_EMBEDDINGS_DIR, StoreView, TableSet
from features.store.reader import require_known_slides, visible_writes
from features.store.upkeep import derived_upkeep
from infra.errors import ConfigError

__all__ = [
    "POOLINGS",
    "matrix",
    "read",
    "rebuild",
    "refresh",
    "slide_embeddings_schema",
    "to_numpy",
]

log = logging.getLogger(__name__)

POOLINGS = ("mean", "max")


def slide_embeddings_schema(dim: int) -> pa.Schema:
    vector = pa.list_(pa.float32(), dim)
    return pa.schema(
        [
            pa.field("slide_id", pa.string(), nullable=False),
            pa.field("encoder", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("write_id", pa.string(), nullable=False),
            pa.field("tile_count", pa.int64(), nullable=False),
            pa.field("tissue_area_mm2", pa.float64()),
            pa.field("mean", vector, nullable=False),
            pa.field("max", vector, nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def table_uri(tables: TableSet, encoder: str) -> str:
    return tables.location.join(SLIDE_EMBEDDINGS_DIR, f"{validate_encoder(encoder)}.lance")


def _pool(view: StoreView, encoder: str, gate: pa.Table) -> pa.Table | None:
    """Pool the tiles of the gate rows given, in one streaming scan of the tiles table.

    One scan filtered on the writes' ids, not one per slide: a per-slide read visits
    every fragment's ``write_id`` column, so refreshing N slides of a store of N
    fragments cost O(N²) (333 s instead of ~90 s for 1,000 small slides). Sums, maxima
    and counts accumulate per write as batches stream, so memory stays one batch plus one
    vector pair per slide. A write whose count differs from its gate row (replaced
    between the gate read and the scan) is left out: readers pool it on the fly.
    """
    gate = gate.filter(pc.greater(gate.column("tile_count"), 0))
    dataset = view.tiles(encoder) if gate.num_rows else None
    if dataset is None:
        return None
    by_write = {r["write_id"]: r for r in gate.to_pylist()}
    sums: dict[str, np.ndarray] = {}
    maxes: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    scanner = dataset.scanner(
        columns=["write_id", "embedding"],
        filter=in_list("write_id", list(by_write)),
        batch_size=8192,
    )
    for batch in scanner.to_batches():
        if not batch.num_rows:
            continue
        ids = batch.column("write_id").to_numpy(zero_copy_only=False).astype(str)
        emb = (
            batch.column("embedding")
            .flatten()
            .to_numpy(zero_copy_only=False)
            .reshape(batch.num_rows, -1)
            .astype(np.float32)
        )
        order = np.argsort(ids, kind="stable")
        ids, emb = ids[order], emb[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        # float64 accumulation: a float16 mean over 100k tiles would drift.
        batch_sums = np.add.reduceat(emb.astype(np.float64), starts, axis=0)
        batch_maxes = np.maximum.reduceat(emb, starts, axis=0)
        batch_counts = np.diff(np.r_[starts, len(ids)])
        for k, start in enumerate(starts):
            write_id = str(ids[start])
            if write_id in sums:
                sums[write_id] += batch_sums[k]
                np.maximum(maxes[write_id], batch_maxes[k], out=maxes[write_id])
                counts[write_id] += int(batch_counts[k])
            else:
                sums[write_id], maxes[write_id] = batch_sums[k], batch_maxes[k].copy()
                counts[write_id] = int(batch_counts[k])
    areas = _tissue_areas(view, encoder, gate)
    rows_out = []
    for write_id, count in counts.items():
        gate_row = by_write[write_id]
        if count != int(gate_row["tile_count"]):
            log.info(
                "%s: %d tiles scanned, gate says %d; left to on-the-fly pooling",
                gate_row["slide_id"],
                count,
                gate_row["tile_count"],
            )
            continue
        rows_out.append(
            {
                "slide_id": gate_row["slide_id"],
                "encoder": encoder,
                "config_hash": gate_row["config_hash"],
                "write_id": write_id,
                "tile_count": count,
                "tissue_area_mm2": areas.get(write_id),
                "mean": (sums[write_id] / count).astype(np.float32),
                "max": maxes[write_id],
                "created_at": datetime.now(UTC),
            }
        )
    if not rows_out:
        return None
    rows_out.sort(key=lambda r: r["slide_id"])
    dim = int(rows_out[0]["mean"].shape[0])
    return pa.Table.from_pylist(rows_out, schema=slide_embeddings_schema(dim))


def _tissue_areas(view: StoreView, encoder: str, gate: pa.Table) -> dict[str, float | None]:
    ids = gate.column("write_id").to_pylist()
    rows = view.slides().to_table(
        columns=["write_id", "tissue_area_mm2"],
        filter=f"encoder = '{validate_encoder(encoder)}' AND {in_list('write_id', ids)}",
    )
    return dict(
        zip(
            rows.column("write_id").to_pylist(),
            rows.column("tissue_area_mm2").to_pylist(),
            strict=True,
        )
    )


def _open(tables: TableSet, encoder: str):
    from features.store._errors import StoreNotFoundError

    try:
        return tables.open(table_uri(tables, encoder))
    except StoreNotFoundError:
        return None


def _upsert(tables: TableSet, encoder: str, rows: pa.Table) -> None:
    import lance

    dataset = _open(tables, encoder)
    if dataset is None:
        lance.write_dataset(
            rows, table_uri(tables, encoder), mode="create", storage_options=tables.storage_options
        )
    else:
        (
            dataset.merge_insert(["slide_id", "config_hash"])
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(rows)
        )
    # ``delete_slide`` filters this table on slide_id: keep it a B-tree lookup.
    derived_upkeep(tables.open(table_uri(tables, encoder)))


def refresh(tables: TableSet, encoder: str, slide_ids: Iterable[str]) -> int:
    """Pool the named slides' current tiles and upsert their rows; returns rows written.

    Called by the ingestion driver every 256 committed slides and at the end of a run.
    """
    view = StoreView(tables)
    gate = visible_writes(view, encoder, slide_ids=list(slide_ids))
    rows = _pool(view, encoder, gate)
    if rows is None:
        return 0
    _upsert(tables, encoder, rows)
    return rows.num_rows


def rebuild(tables: TableSet, encoder: str) -> int:
    """Recompute every visible slide's row from its tiles (and drop stale rows)."""
    import lance

    view = StoreView(tables)
    rows = _pool(view, encoder, visible_writes(view, encoder))
    if rows is None:
        return 0
    lance.write_dataset(
        rows, table_uri(tables, encoder), mode="overwrite", storage_options=tables.storage_options
    )
    return rows.num_rows


def read(
    view: StoreView,
    encoder: str,
    *,
    slide_ids: Sequence[str] | None = None,
    config_hash: str | None = None,
) -> pa.Table:
    """Current slide embeddings with ``patient_id``, one row per visible slide.

    Slides with no tiles have no row. Unknown ``slide_ids`` raise
    :class:`~features.store.SlideNotInStoreError`; a slide with features under several
    configs raises :class:`~infra.errors.ConfigError` unless ``config_hash`` picks one.
    """
    if slide_ids is not None:
        require_known_slides(view, encoder, slide_ids)
    gate = visible_writes(view, encoder, slide_ids=slide_ids, config_hash=config_hash)
    ids = gate.column("slide_id").to_pylist()
    if len(ids) != len(set(ids)):
        dup = sorted({s for s in ids if ids.count(s) > 1})
        hashes = sorted(set(gate.column("config_hash").to_pylist()))
        raise ConfigError(
            f"slides {dup[:5]} have features under several configs {hashes}; pass config_hash="
        )
    stored = _stored_rows(view, encoder, gate)
    have = set(stored.column("write_id").to_pylist()) if stored is not None else set()
    missing = gate.filter(
        pc.invert(pc.is_in(gate.column("write_id"), pa.array(sorted(have), pa.string())))
    )
    pooled = _pool(view, encoder, missing) if missing.num_rows else None
    if pooled is not None:
        log.info(
            "%s: pooled %d slide(s) missing from the slide-embeddings table "
            "(store.rebuild_slide_embeddings() stores them)",
            encoder,
            pooled.num_rows,
        )
    parts = [t for t in (stored, pooled) if t is not None and t.num_rows]
    if not parts:
        return _with_patients(
            view, encoder, slide_embeddings_schema(_dim(view, encoder)).empty_table()
        )
    table = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    return _with_patients(view, encoder, table.sort_by("slide_id"))


def _dim(view: StoreView, encoder: str) -> int:
    tiles = view.tiles(encoder)
    return int(tiles.schema.field("embedding").type.list_size) if tiles is not None else 1


def _stored_rows(view: StoreView, encoder: str, gate: pa.Table) -> pa.Table | None:
    dataset = _open(view.tables, encoder)
    if dataset is None or gate.num_rows == 0:
        return None
    return dataset.to_table(filter=in_list("write_id", gate.column("write_id").to_pylist()))


def _with_patients(view: StoreView, encoder: str, table: pa.Table) -> pa.Table:
    ids = table.column("write_id").to_pylist()
    rows = view.slides().to_table(
        columns=["write_id", "patient_id"],
        filter=f"encoder = '{validate_encoder(encoder)}' AND {in_list('write_id', ids)}",
    )
    lookup = dict(
        zip(rows.column("write_id").to_pylist(), rows.column("patient_id").to_pylist(), strict=True)
    )
    patients = pa.array([lookup.get(w) for w in ids], pa.string())
    return table.add_column(1, "patient_id", patients)


def to_numpy(table: pa.Table, pooling: str = "mean") -> np.ndarray:
    """The (N, D) float32 matrix of one pooling column."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    column = table.column(pooling).combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def matrix(table: pa.Table, pooling: str = "mean") -> tuple[list[str], np.ndarray]:
    """``(slide_ids, X)``: the row labels and the (N, D) float32 matrix of one pooling,
    in the table's row order, ready for scikit-learn, UMAP or a DataFrame index."""
    return table.column("slide_id").to_pylist(), to_numpy(table, pooling)

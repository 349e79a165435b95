"""lancedb, an outside reader, sees exactly the committed tile rows with the documented filter.

A store's ``tiles/<encoder>.lance`` is a plain Lance table that lancedb opens as a table
of the database ``tiles/``. It also holds rows written but not committed and replaced
rows awaiting tidying; ``FeatureStore.committed_filter()`` (the README's "Reading the
Lance tables yourself") selects the committed ones, for scans, counts and a prefiltered
vector search alike.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pytest

from tests._support.store import ENCODER

lancedb = pytest.importorskip("lancedb", reason="lancedb is in the test extra")


def _uncommitted(store, write, slide_id: str, n: int) -> None:
    """Rows physically in the tiles table but not committed (step 2 of the protocol only)."""
    from features.store.writer import _append_tiles

    _append_tiles(store._tables, ENCODER, [write(store, slide_id, n, seed=7)])


def _open(store):
    uri = store.tiles_uri()
    database, name = posixpath.split(uri)
    assert name == f"{ENCODER}.lance"
    return lancedb.connect(database).open_table(name.removesuffix(".lance"))


def test_lancedb_sees_only_committed_rows_with_the_documented_filter(local_store, write):
    local_store.commit([write(local_store, "s1", 5, seed=1), write(local_store, "s2", 4, seed=2)])
    local_store.commit([write(local_store, "s1", 3, seed=3)])  # replaces s1's five rows
    _uncommitted(local_store, write, "s3", 6)
    committed = local_store.committed_filter()

    table = _open(local_store)
    # Without the filter lancedb reads what is physically there: pending s3 rows too.
    everything = table.to_arrow()
    assert "s3" in set(everything.column("slide_id").to_pylist())
    assert table.count_rows(committed) == 7

    rows = table.search().where(committed).limit(None).to_arrow()
    got = sorted(
        zip(
            rows.column("slide_id").to_pylist(),
            rows.column("x").to_pylist(),
            rows.column("y").to_pylist(),
            strict=True,
        )
    )
    expected = local_store.tiles().select(["slide_id", "x", "y"])
    assert got == sorted(
        zip(
            expected.column("slide_id").to_pylist(),
            expected.column("x").to_pylist(),
            expected.column("y").to_pylist(),
            strict=True,
        )
    )
    assert rows.num_rows == 7 and "s3" not in set(rows.column("slide_id").to_pylist())


def test_lancedb_filtered_vector_search_returns_k_committed_hits(local_store, write):
    local_store.commit([write(local_store, "s1", 6, seed=1), write(local_store, "s2", 6, seed=2)])
    _uncommitted(local_store, write, "s3", 30)
    committed = local_store.committed_filter()
    table = _open(local_store)
    query = np.asarray(local_store.bag("s2").embeddings[0], np.float32)

    hits = (
        table.search(query, vector_column_name="embedding")
        .distance_type("l2")
        .where(committed, prefilter=True)
        .limit(5)
        .to_arrow()
    )
    assert hits.num_rows == 5
    assert set(hits.column("slide_id").to_pylist()) <= {"s1", "s2"}
    assert hits.column("_distance")[0].as_py() == pytest.approx(0.0, abs=1e-4)
    # The same search by the store itself (squared L2) ranks the same rows first.
    own = local_store.search(query, k=5)
    assert hits.column("_distance").to_pylist() == pytest.approx(
        own.column("distance").to_pylist(), abs=1e-3
    )

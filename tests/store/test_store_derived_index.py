"""Derived tables keep a ``slide_id`` B-tree, so ``delete_slide`` is a lookup (issue 27).

Without it, deleting a slide's row from the slide-embeddings table scanned every
slide's row (3.7 -> 17.6 ms a delete at 100 -> 10,000 slides). The store creates and
extends the index itself; the user never names it.
"""

from __future__ import annotations

import pyarrow as pa

from features.store import derived
from features.store.upkeep import DERIVED_INDEXED_COLUMNS, index_coverage
from tests._support.store import ENCODER

_INDEX = DERIVED_INDEXED_COLUMNS["slide_id"]


def _plan(dataset, slide_id: str) -> str:
    scanner = dataset.scanner(columns=["slide_id"], filter=f"slide_id = '{slide_id}'")
    return str(scanner.explain_plan(True))


def _covers_everything(dataset) -> bool:
    names = {i.name for i in dataset.describe_indices()}
    if _INDEX not in names:
        return False
    return int(index_coverage(dataset, _INDEX).get("num_unindexed_fragments", 1)) == 0


def test_every_derived_table_is_indexed_on_slide_id_and_deletes_use_it(local_store, write):
    store = local_store
    for group in range(3):  # several writes: the later fragments are folded in too
        ids = [f"s{group}{i}" for i in range(4)]
        store.commit([write(store, s, n=4, seed=hash(s) % 100) for s in ids])
        store.refresh_slide_embeddings(ids, encoder=ENCODER)
        store.write_derived("graphs", "g1", {s: pa.table({"n_tiles": [4]}) for s in ids})
    tables = store._tables
    refs = derived.list_tables(tables)
    assert {(r.kind, r.name) for r in refs} == {("slide_embeddings", ENCODER), ("graphs", "g1")}
    for ref in refs:
        dataset = tables.open(ref.uri)
        assert len(dataset.get_fragments()) > 1
        assert _covers_everything(dataset), ref
        plan = _plan(dataset, "s11")
        assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan

    assert store.delete_slide("s11") > 0
    for ref in refs:
        dataset = tables.open(ref.uri)
        assert dataset.count_rows(filter="slide_id = 's11'") == 0
        assert dataset.count_rows(filter="slide_id = 's12'") == 1
    store.refresh_slide_embeddings(["s12"], encoder=ENCODER)  # a rewrite keeps it whole
    assert _covers_everything(tables.open(derived.list_tables(tables, "slide_embeddings")[0].uri))


def test_compact_indexes_a_derived_table_written_before_the_index(local_store, write, monkeypatch):
    store = local_store
    monkeypatch.setattr(derived, "derived_upkeep", lambda dataset: 0)  # an older store
    store.write_derived("graphs", "g1", {"a": pa.table({"n_tiles": [1]})})
    ref = derived.list_tables(store._tables, "graphs")[0]
    assert not _covers_everything(store._tables.open(ref.uri))
    monkeypatch.undo()
    store.compact()
    assert _covers_everything(store._tables.open(ref.uri))

"""The gate after a commit is updated from the rows the commit changed, not rebuilt.

Issue 27: the first read after each commit rebuilt the gate from every slides row
(22 -> 48 ms at 100 -> 10,000 slides). Each check compares the updated gate with a
full rebuild of the same version.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from features.store import FeatureStore, SlideKey, failed_slide
from features.store import _gate as gate_module
from features.store.reader import gate_state
from tests._support.store import CONFIG, ENCODER, slide_info


def _sorted(rows: pa.Table) -> list[dict]:
    columns = [c for c in gate_module.GATE_COLUMNS if c in rows.column_names]
    return sorted(rows.select(columns).to_pylist(), key=lambda r: (r["slide_id"], r["config_hash"]))


def _check(store: FeatureStore) -> gate_module.GateState:
    """The cached gate of the store's version equals a rebuild from every row."""
    view = store._view()
    state = gate_state(view, ENCODER)
    fresh = gate_module.build(view.slides(), ENCODER)
    assert _sorted(state.rows) == _sorted(fresh.rows)
    assert state.by_slide.keys() == fresh.by_slide.keys()
    assert state.table.filter(pa.array(state.alive)).equals(state.rows)
    for slide, rows in state.by_slide.items():
        assert state.alive[rows].all()
        assert {state.table.column("write_id")[i].as_py() for i in rows} == {
            fresh.rows.column("write_id")[i].as_py() for i in fresh.by_slide[slide]
        }
    return state


def test_bag_after_commit_reads_only_the_appended_slides_rows(local_store, write):
    store = local_store
    store.commit([write(store, f"s{i}", n=5, seed=i) for i in range(12)])
    assert store.bag("s3", encoder=ENCODER).embeddings.shape[0] == 5
    assert _check(store).rows_read == 12  # first read: every row
    store.commit([write(store, "s0", n=5, seed=50)])  # a replacement: a deletion file
    _check(store)

    store.commit([write(store, "new", n=7, seed=99)])
    assert store.bag("new", encoder=ENCODER).embeddings.shape[0] == 7
    state = _check(store)
    assert state.rows_read == 1  # the one appended row, not the table's 13
    assert state.rows.num_rows == 13


@pytest.mark.parametrize("compact_dead", [False, True])
def test_updated_gate_matches_a_rebuild_through_every_kind_of_change(
    local_store, write, monkeypatch, compact_dead
):
    # A tiny table would be rebuilt whenever a change reads more than half of it; here
    # every change goes through the update (with the gate's replaced rows dropped at
    # once, or kept as they are below the thresholds).
    monkeypatch.setattr(gate_module, "_REBUILD_SHARE", float("inf"))
    if compact_dead:
        monkeypatch.setattr(gate_module, "_MIN_DEAD", 0)
        monkeypatch.setattr(gate_module, "_DEAD_RATIO", 0.0)
    store = local_store
    store.commit([write(store, f"s{i}", n=3, seed=i) for i in range(4)])
    _check(store)
    first = store.version

    # A replacement: the new row wins and the commit's tidy deletes the older one.
    store.commit([write(store, "s1", n=6, seed=10)])
    _check(store)
    assert store.bag("s1", encoder=ENCODER).embeddings.shape[0] == 6

    # A failed attempt never takes over from a done row.
    key = SlideKey("s2", ENCODER, CONFIG)
    store.commit([failed_slide(key, slide_info("s2"), RuntimeError("boom"))])
    _check(store)
    assert store.bag("s2", encoder=ENCODER).embeddings.shape[0] == 3

    # A second config of a slide, then deletes (of one encoder, and of the whole slide).
    store.commit([write(store, "s0", n=2, seed=11, config="cfg0002")])
    _check(store)
    store.delete_slide("s3", encoder=ENCODER)
    assert "s3" not in _check(store).by_slide
    store.delete_slide("s0")
    assert "s0" not in _check(store).by_slide

    # Another writer (its own tables and caches, as another process has) commits
    # enough groups for the slides table's small fragments to be merged (a rewrite).
    other = FeatureStore.open(store.uri)
    for i in range(20):
        other.commit([write(other, f"o{i}", n=2, seed=100 + i)])
        if i % 6 == 0:
            _check(store)
    state = _check(store)
    assert len(store._tables.slides().get_fragments()) < 20  # the merge happened
    assert {"s1", "s2", "o19"} <= state.by_slide.keys()

    # Time travel: an older version, updated from the newest cached one, and back.
    past = store.checkout(first)
    past_state = _check(past)
    assert past_state.by_slide.keys() == {"s0", "s1", "s2", "s3"}
    assert past.bag("s1", encoder=ENCODER).embeddings.shape[0] == 3
    _check(store)

"""The store owns what training writes back: attention, tissue modules, graphs, codebooks,
slide embeddings. Deleting a slide removes its rows from each, a rewrite replaces a
slide's rows, and cleanup removes old versions.

The checks that matter read the raw Lance tables under the store root, not the store's
reader, so they hold whatever layout the derived tables have.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from features.store import FeatureStore, StoreReadOnlyError, StoreSchemaError
from tests._support.store import ENCODER

_STORE_OWN = ("slides.lance", "runs.lance")


def _lance_tables(store: FeatureStore) -> list[str]:
    """Every Lance table under the store root except the gate and the run log."""
    fs, root = store.location.filesystem()
    root = root.rstrip("/")
    found = fs.find(root, withdirs=True, detail=False)
    tables = {
        p.rstrip("/")
        for p in found
        if p.rstrip("/").endswith(".lance") and ".lance/" not in p.rstrip("/")[len(root) :]
    }
    return sorted(t for t in tables if t[len(root) + 1 :] not in _STORE_OWN)


def _raw_rows(store: FeatureStore, slide_id: str) -> dict[str, int]:
    """Rows naming ``slide_id`` in each such table, replaced or not (tiles included)."""
    import lance

    out = {}
    for path in _lance_tables(store):
        dataset = lance.dataset(path, storage_options=store.location.lance_options() or None)
        out[path] = dataset.count_rows(filter=f"slide_id = '{slide_id}'")
    return out


def _two_slides(store: FeatureStore, write: Callable[..., Any]) -> FeatureStore:
    store.commit([write(store, "s1", 12, seed=1), write(store, "s2", 12, seed=2)])
    return store.latest()


def _attention(store: FeatureStore, sid: str) -> None:
    from training.mil.attention import write_attention

    bag = store.bag(sid)
    write_attention(store, sid, bag.coords, np.linspace(0, 1, len(bag)), name="run-1")


def _codebook(store: FeatureStore) -> tuple[Any, str]:
    from training.spatial.modules import ModuleCodebook, ModuleSpec
    from training.spatial.store_io import save_codebook

    centroids = store.bag("s1").embeddings[:3].astype(np.float32)
    book = ModuleCodebook(centroids, ModuleSpec(k=3, smooth=0.0), ("s1",), ENCODER)
    return book, save_codebook(store, book)


def _modules(store: FeatureStore, sid: str) -> None:
    from training.spatial.plots import apply_modules

    book, digest = _codebook(store)
    apply_modules(store, book, digest, [sid], encoder=ENCODER)


def _graph(store: FeatureStore, sid: str) -> None:
    from training.spatial.store_io import cached_graph

    cached_graph(store, sid, store.bag(sid).coords)


def _predictions(store: FeatureStore, sid: str) -> None:
    from training.spatial.store_io import write_tile_values

    bag = store.bag(sid)
    write_tile_values(store, "probe-1", sid, bag.coords, np.arange(len(bag), dtype=float))


def _slide_embeddings(store: FeatureStore, sid: str) -> None:
    store.refresh_slide_embeddings([sid])


WRITERS = {
    "attention": _attention,
    "modules": _modules,
    "graphs": _graph,
    "predictions": _predictions,
    "slide_embeddings": _slide_embeddings,
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_deleting_a_slide_leaves_no_row_in_the_derived_table(local_store, write, kind):
    store = _two_slides(local_store, write)
    for sid in ("s1", "s2"):
        WRITERS[kind](store, sid)
    derived = [t for t in _lance_tables(store) if "/tiles/" not in t]
    assert derived, f"the {kind} writer wrote no table"
    assert all(n > 0 for p, n in _raw_rows(store, "s1").items() if p in derived)

    store.delete_slide("s1")

    assert {p: n for p, n in _raw_rows(store, "s1").items() if n} == {}
    assert all(n > 0 for p, n in _raw_rows(store, "s2").items() if p in derived)
    assert [t.kind for t in store.derived_tables()] == [kind]


def test_deleting_a_slide_for_one_encoder_keeps_its_other_derived_rows(local_store, write):
    store = _two_slides(local_store, write)
    _attention(store, "s1")
    _slide_embeddings(store, "s1")
    store.delete_slide("s1", encoder=ENCODER)
    assert store.derived("attention", "run-1", slide_ids=["s1"]).num_rows == 12
    (embeddings,) = store.derived_tables("slide_embeddings")
    import lance

    assert lance.dataset(embeddings.uri).count_rows(filter="slide_id = 's1'") == 0


def test_reapplying_a_codebook_leaves_one_copy(local_store, write):
    store = _two_slides(local_store, write)
    _modules(store, "s1")
    _modules(store, "s1")
    _modules(store, "s2")
    raw = {p: n for p, n in _raw_rows(store, "s1").items() if "/tiles/" not in p}
    assert list(raw.values()) == [12]
    (table,) = store.derived_tables("modules")
    rows = store.derived("modules", table.name)
    assert rows.num_rows == 24 and sorted(set(rows.column("slide_id").to_pylist())) == ["s1", "s2"]


def test_rewriting_attention_replaces_it_and_pictures_read_the_new_values(
    local_store, write, tmp_path
):
    from slidebank.pictures_api import attention_names, heatmap
    from training.mil.attention import write_attention

    store = _two_slides(local_store, write)
    store.arrays("s1").write_thumbnail(np.full((256, 256, 3), 200, np.uint8), mpp=8.0)
    bag = store.bag("s1")
    write_attention(store, "s1", bag.coords, np.zeros(len(bag)), name="run-1")
    newer = np.linspace(0, 1, len(bag))
    write_attention(store, "s1", bag.coords, newer, name="run-1")

    assert attention_names(store) == ["run-1"]
    rows = store.derived("attention", "run-1", slide_ids=["s1"]).to_pandas()
    assert len(rows) == len(bag)
    by_xy = {
        (int(x), int(y)): v for x, y, v in zip(rows["x"], rows["y"], rows["attention"], strict=True)
    }
    expected = {(int(x), int(y)): v for (x, y), v in zip(bag.coords, newer, strict=True)}
    assert by_xy == pytest.approx(expected)
    png = heatmap(store, "s1", tmp_path / "heat.png", attention="run-1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_map_reads_back_after_reapplying(local_store, write, tmp_path):
    from training.spatial.plots import render_module_map

    store = _two_slides(local_store, write)
    _modules(store, "s1")
    _modules(store, "s1")
    (table,) = store.derived_tables("modules")
    rows = store.derived("modules", table.name, slide_ids=["s1"]).to_pylist()
    grid = store.arrays("s1").read_image(f"heatmaps/modules-{table.name}")
    assert len(rows) == 12
    assert all(grid[r["y"] // 256, r["x"] // 256] == r["module"] for r in rows)
    png = render_module_map(store, "s1", table.name, tmp_path / "map.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cleanup_removes_old_versions_of_derived_tables(local_store, write):
    import lance

    store = _two_slides(local_store, write)
    for kind in ("attention", "modules", "slide_embeddings"):
        for _ in range(2):
            WRITERS[kind](store, "s1")
    derived = [t for t in _lance_tables(store) if "/tiles/" not in t]
    assert len(derived) == 3 and all(len(lance.dataset(t).versions()) > 1 for t in derived)

    report = store.cleanup(older_than=timedelta(0))

    assert all(len(lance.dataset(t).versions()) == 1 for t in derived)
    assert {k.split("/")[0] for k in report} >= {"attention", "modules", "slide_embeddings"}
    assert store.derived("attention", "run-1").num_rows == 12


def test_a_writer_dying_before_its_delete_leaves_no_visible_copy(local_store, write, monkeypatch):
    store = _two_slides(local_store, write)
    bag = store.bag("s1")
    store.write_tile_values("attention", "run-1", "s1", bag.coords, np.zeros(len(bag)))

    from features.store import derived as derived_module

    def died(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("writer died between its append and its delete")

    monkeypatch.setattr(derived_module, "_delete_where", died)
    with pytest.raises(RuntimeError, match="writer died"):
        store.write_tile_values("attention", "run-1", "s1", bag.coords, np.ones(len(bag)))
    monkeypatch.undo()

    raw = {p: n for p, n in _raw_rows(store, "s1").items() if "/tiles/" not in p}
    assert list(raw.values()) == [24]  # both copies are stored ...
    rows = store.derived("attention", "run-1")
    assert rows.num_rows == 12 and set(rows.column("attention").to_pylist()) == {
        1.0
    }  # ... one is seen
    assert store.derived("attention", "run-1", where="attention < 0.5").num_rows == 0
    with pytest.raises(PermissionError):  # a predicate may not break out of the gate
        store.derived("attention", "run-1", where="1 = 1) OR (1 = 1")
    assert store.compact().orphan_rows_deleted["attention/run-1"] == 12
    assert list(
        {p: n for p, n in _raw_rows(store, "s1").items() if "/tiles/" not in p}.values()
    ) == [12]


def test_derived_writes_are_checked(local_store, write):
    store = _two_slides(local_store, write)
    bag = store.bag("s1")
    with pytest.raises(ValueError, match="derived kind"):
        store.write_tile_values("heatmaps", "x", "s1", bag.coords, np.zeros(len(bag)))
    with pytest.raises(ValueError, match="12 tiles but 3"):
        store.write_tile_values("attention", "run-1", "s1", bag.coords, np.zeros(3))
    with pytest.raises(ValueError, match="invalid"):
        store.write_tile_values("attention", "../up", "s1", bag.coords, np.zeros(len(bag)))
    import pyarrow as pa

    store.write_derived("graphs", "g1", {"s1": pa.table({"n_tiles": [12]})})
    with pytest.raises(StoreSchemaError, match="graphs/g1"):
        store.write_derived("graphs", "g1", {"s1": pa.table({"edges": [3]})})
    past = store.checkout(store.version)
    with pytest.raises(StoreReadOnlyError):
        past.write_tile_values("attention", "run-1", "s1", bag.coords, np.zeros(len(bag)))


@pytest.mark.slow_on_s3
def test_derived_tables_and_codebooks_are_listed_on_each_location(store, write):
    from training.spatial.store_io import list_codebooks, load_codebook

    store = _two_slides(store, write)
    _attention(store, "s1")
    book, digest = _codebook(store)
    assert list_codebooks(store) == [digest]
    assert np.array_equal(load_codebook(store, digest).centroids, book.centroids)
    assert [(t.kind, t.name) for t in store.derived_tables()] == [("attention", "run-1")]
    store.delete_slide("s1")
    assert store.derived("attention", "run-1").num_rows == 0
    assert list_codebooks(store) == [digest]  # a codebook is not a slide's row

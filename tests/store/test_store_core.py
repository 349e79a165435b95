"""Feature store conformance: every test runs on a local path and on S3 (moto).

Covers the two-phase commit (visibility, failure between fragment write and commit,
idempotent recommit), reading (slides, tiles, bags, SQL), versions and deletes.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import features.store.writer as writer_module
from features.store import (
    FeatureStore,
    RunRecord,
    SlideKey,
    StoreReadOnlyError,
    StoreSchemaError,
    StoreVersionError,
    failed_slide,
)
from infra.errors import ConfigError, InvalidSlideIdError
from tests._support.store import CONFIG, DIM, ENCODER, slide_info, tile_payload


def _raw_rows(fs: FeatureStore, slide_id: str, encoder: str = ENCODER) -> int:
    """Rows physically in the tiles table for a slide, visible or not."""
    dataset = fs._tables.tiles(encoder)
    return dataset.count_rows(filter=f"slide_id = '{slide_id}'")


@pytest.mark.slow_on_s3
def test_uncommitted_fragments_are_invisible_until_commit(store, write):
    # Workers and driver are different processes: the store and results travel pickled.
    worker_store = pickle.loads(pickle.dumps(store))
    pending = [write(worker_store, "s1", 30), write(worker_store, "s2", 20, seed=1)]
    pending = pickle.loads(pickle.dumps(pending))
    assert store.slides().num_rows == 0
    assert store.tiles().num_rows == 0
    assert _raw_rows(store, "s1") == 0  # written as fragments, not in any version

    result = store.commit(pending)

    assert {k.slide_id for k in result.committed} == {"s1", "s2"}
    row = store.slides(slide_ids=["s1"]).to_pylist()[0]
    assert (row["status"], row["tile_count"], row["mpp"]) == ("done", 30, 0.25)
    assert row["level_dimensions"] == [[8192, 8192], [2048, 2048]]
    assert store.tiles().num_rows == 50
    bag = store.bag("s1")
    assert bag.embeddings.shape == (30, DIM)
    expected = tile_payload(30)
    np.testing.assert_array_equal(bag.coords[:, 0], expected.column("x").to_numpy())
    np.testing.assert_allclose(
        bag.embeddings, np.stack(expected.column("embedding").to_numpy(zero_copy_only=False))
    )


@pytest.mark.slow_on_s3
@pytest.mark.parametrize("failing_step", ["_append_tiles", "_merge_slides"])
def test_failure_between_write_and_commit_keeps_previous_version(
    store, write, monkeypatch, failing_step
):
    store.commit([write(store, "s1", 30, seed=1)])
    version_before = store.version
    bag_before = store.bag("s1")
    slides_before = store.slides().to_pylist()

    pending = write(store, "s1", 25, seed=2)  # fragments written by the "worker"
    original = getattr(writer_module, failing_step)

    def crash(*args, **kwargs):
        # "_merge_slides" dies in the worst spot: tiles appended, the gate not yet moved.
        raise RuntimeError("driver died")

    monkeypatch.setattr(writer_module, failing_step, crash)
    with pytest.raises(RuntimeError, match="driver died"):
        store.commit([pending])
    monkeypatch.setattr(writer_module, failing_step, original)

    assert store.version == version_before
    assert store.slides().to_pylist() == slides_before
    after = store.bag("s1")
    np.testing.assert_array_equal(after.embeddings, bag_before.embeddings)
    assert store.tiles().num_rows == 30

    # The rerun writes again and commits: exactly one copy, visible and physical.
    store.commit([write(store, "s1", 25, seed=3)])
    assert store.bag("s1").embeddings.shape == (25, DIM)
    assert store.tiles().num_rows == 25
    assert _raw_rows(store, "s1") == 25
    assert store.slides().num_rows == 1


def test_recommit_replaces_and_retry_never_duplicates(store, write):
    first = write(store, "s1", 30, seed=1)
    store.commit([first])
    again = write(store, "s1", 12, seed=2)
    result = store.commit([again])
    assert [k.slide_id for k in result.committed] == ["s1"]
    assert store.slides().num_rows == 1
    assert _raw_rows(store, "s1") == 12
    # A driver retrying the very same commit (e.g. after a timeout) adds nothing.
    store.commit([again])
    assert _raw_rows(store, "s1") == 12
    assert store.bag("s1").embeddings.shape == (12, DIM)
    # A stale, older write arriving late cannot roll the slide back.
    late = store.commit([first])
    assert [k.slide_id for k in late.superseded] == ["s1"]
    assert store.bag("s1").embeddings.shape == (12, DIM)
    assert _raw_rows(store, "s1") == 12


def test_a_first_commit_skips_the_tiles_scan_and_a_recommit_tidies(store, write, monkeypatch):
    """Scanning the tiles table for replaced copies on every commit makes a run O(N²) in
    its tiles; only a group that replaced a slides row has copies to remove."""
    import features.store.writer as writer_module

    scanned: list[list[str]] = []
    real = writer_module._tidy_tiles

    def spy(tables, keys, current):
        scanned.append(sorted(k.slide_id for k in keys))
        return real(tables, keys, current)

    monkeypatch.setattr(writer_module, "_tidy_tiles", spy)
    store.commit([write(store, "s1", 5, seed=1), write(store, "s2", 5, seed=2)])
    store.commit([write(store, "s3", 6, seed=3), write(store, "s1", 7, seed=4)])
    assert scanned == [[], ["s1", "s3"]]
    assert _raw_rows(store, "s1") == 7 and store.tiles().num_rows == 5 + 6 + 7


@pytest.mark.slow_on_s3
def test_read_past_version_and_run_tag(store, write):
    store.commit([write(store, "s1", 30, seed=1), write(store, "s2", 10)])
    store.record_run(
        RunRecord(run_id="r1", config={"tile": 256}, encoder=ENCODER, code_version="t")
    )
    v1 = store.version
    store.commit([write(store, "s1", 5, seed=2), write(store, "s3", 7)])
    store.delete_slide("s2")

    past = store.checkout(v1)
    assert past.read_only
    assert past.bag("s1").embeddings.shape == (30, DIM)
    assert sorted(past.slides().column("slide_id").to_pylist()) == ["s1", "s2"]
    assert past.tiles().num_rows == 40
    by_tag = store.checkout("run-r1")
    assert by_tag.version == v1
    assert by_tag.bag("s2").embeddings.shape == (10, DIM)
    assert store.bag("s1").embeddings.shape == (5, DIM)
    assert sorted(store.slides().column("slide_id").to_pylist()) == ["s1", "s3"]
    runs = store.runs().to_pylist()
    assert runs[0]["tag"] == "run-r1" and runs[0]["slides_version"] == v1
    with pytest.raises(StoreReadOnlyError):
        past.commit([write(store, "s9", 3)])
    with pytest.raises(StoreVersionError):
        store.checkout(10_000)


UNSAFE_IDS = ["../x", "/etc/passwd", "a/b", "", "..", ".hidden", "x y", "s1'; --"]


def test_unsafe_slide_ids_are_refused_before_any_path(store, write):
    store.commit([write(store, "s1", 3)])
    fs, root = store.location.filesystem()
    before = sorted(fs.find(root))
    for bad in UNSAFE_IDS:
        with pytest.raises(InvalidSlideIdError):
            SlideKey(bad, ENCODER, CONFIG)
        with pytest.raises(InvalidSlideIdError):
            store.arrays(bad)
        with pytest.raises(InvalidSlideIdError):
            store.delete_slide(bad)
        with pytest.raises(InvalidSlideIdError):
            store.slides(slide_ids=[bad])
        with pytest.raises(InvalidSlideIdError):
            store.bag(bad)
        with pytest.raises(InvalidSlideIdError):
            store.search_by_tile(bad, 0, 0)
    assert sorted(fs.find(root)) == before
    assert store.bag("s1").embeddings.shape == (3, DIM)


def test_failed_slides_are_recorded_and_never_replace_done(store, write):
    store.commit([write(store, "ok", 10)])
    boom = failed_slide(
        SlideKey("bad", ENCODER, CONFIG),
        slide_info("bad"),
        OSError("cannot read s3://b/x?aws_secret_access_key=abc123"),
    )
    retry_failure = failed_slide(SlideKey("ok", ENCODER, CONFIG), slide_info("ok"), OSError("x"))
    result = store.commit([boom, retry_failure])
    failed = store.slides(status="failed").to_pylist()
    assert [r["slide_id"] for r in failed] == ["bad"]
    assert failed[0]["error_type"] == "OSError"
    assert "abc123" not in failed[0]["error_message"]
    assert [k.slide_id for k in result.superseded] == ["ok"]
    assert store.bag("ok").embeddings.shape == (10, DIM)
    assert store.bag("bad").embeddings.shape == (0, DIM)


@pytest.mark.slow_on_s3
def test_slides_filters_and_cohort_tiles(store, write):
    store.commit([write(store, f"s{i}", 10 + i, seed=i) for i in range(4)])
    assert store.slides(where="tile_count >= 12").column("slide_id").to_pylist() == ["s2", "s3"]
    assert store.slides(slide_ids=["s1"]).num_rows == 1
    cohort = store.tiles(slide_ids=["s0", "s3"], columns=["slide_id", "x", "y"])
    assert cohort.num_rows == 23
    assert set(cohort.column("slide_id").to_pylist()) == {"s0", "s3"}
    rest = store.tiles(exclude_slide_ids=["s0"], columns=["slide_id"], where="x >= 256")
    assert "s0" not in set(rest.column("slide_id").to_pylist())
    frame = store.tiles_pandas(slide_ids=["s1"])
    assert isinstance(frame, pd.DataFrame) and len(frame) == 11
    tensors = store.tiles_torch(slide_ids=["s2"], columns=["x", "y", "embedding"])
    assert tuple(tensors["embedding"].shape) == (12, DIM)
    bags = list(store.iter_bags(["s3", "s1"]))
    assert [(b.slide_id, len(b)) for b in bags] == [("s3", 13), ("s1", 11)]
    emb, coords = bags[0].to_torch()
    assert tuple(emb.shape) == (13, DIM) and tuple(coords.shape) == (13, 2)
    pieces = list(store.iter_bag_batches("s3", batch_size=4))
    assert [len(p) for p in pieces] == [4, 4, 4, 1]


@pytest.mark.slow_on_s3
def test_sql_joins_tiles_with_an_omics_table(store, write):
    store.commit([write(store, f"s{i}", 5 * (i + 1), seed=i) for i in range(3)])
    omics = pd.DataFrame({"slide_id": ["s0", "s1", "s2"], "tp53": [0.1, 2.5, 1.0]})
    result = store.sql(
        "SELECT o.slide_id, o.tp53, count(*) AS n_tiles, avg(t.tissue_fraction) AS tissue "
        "FROM tiles t JOIN omics o USING (slide_id) WHERE o.tp53 > 0.5 "
        "GROUP BY ALL ORDER BY o.slide_id",
        tables={"omics": omics},
    ).to_pylist()
    assert [(r["slide_id"], r["n_tiles"]) for r in result] == [("s1", 10), ("s2", 15)]
    counts = store.sql("SELECT status, count(*) AS n FROM slides GROUP BY status").to_pylist()
    assert counts == [{"status": "done", "n": 3}]
    with pytest.raises(ConfigError):
        store.sql("SELECT 1", tables={"bad name": omics})


def test_sql_hides_replaced_rows_until_tidied(local_store, write, monkeypatch):
    local_store.commit([write(local_store, "s1", 8, seed=1)])
    # Skip step 4 so the replaced copy stays in the table; readers must still see one.
    monkeypatch.setattr(writer_module, "_tidy_tiles", lambda *a, **k: None)
    local_store.commit([write(local_store, "s1", 6, seed=2)])
    assert _raw_rows(local_store, "s1") == 14
    assert local_store.sql("SELECT count(*) AS n FROM tiles").to_pylist() == [{"n": 6}]
    assert local_store.tiles().num_rows == 6
    assert local_store.bag("s1").embeddings.shape == (6, DIM)


def test_delete_slide_removes_rows_and_arrays(store, write):
    store.commit([write(store, "s1", 10), write(store, "s2", 10)])
    store.arrays("s1").write_mask(np.ones((64, 64), bool), mpp=16.0)
    removed = store.delete_slide("s1")
    assert removed == 11
    assert store.slides().column("slide_id").to_pylist() == ["s2"]
    assert store.tiles().num_rows == 10
    fs, root = store.location.filesystem()
    assert not fs.exists(f"{root}/zarr/s1")


def test_encoders_have_their_own_tables_and_schemas_are_enforced(local_store, write):
    local_store.commit(
        [write(local_store, "s1", 10), write(local_store, "s1", 6, encoder="wide", dim=32)]
    )
    assert local_store.encoders() == [ENCODER, "wide"]
    assert local_store.bag("s1", encoder="wide").embeddings.shape == (6, 32)
    with pytest.raises(ConfigError, match="several encoders"):
        local_store.bag("s1")
    with pytest.raises(StoreSchemaError):
        write(local_store, "s2", 4, encoder="wide", dim=8)
    half = write(local_store, "h1", 5, encoder="half", dtype="float16")
    local_store.commit([half])
    assert local_store.bag("h1", encoder="half").embeddings.dtype == np.float16


def test_duplicate_coordinates_are_refused(local_store):
    batch = tile_payload(4)
    duplicated = pa.concat_tables([pa.Table.from_batches([batch])] * 2)
    with pytest.raises(StoreSchemaError, match="duplicate"):
        local_store.write_slide(SlideKey("s1", ENCODER, CONFIG), slide_info("s1"), duplicated)


def test_zero_tile_slide_is_done_with_an_empty_bag(local_store, write):
    local_store.commit([write(local_store, "s1", 3)])
    empty = local_store.write_slide(SlideKey("blank", ENCODER, CONFIG), slide_info("blank"), [])
    local_store.commit([empty])
    row = local_store.slides(slide_ids=["blank"]).to_pylist()[0]
    assert row["status"] == "done" and row["tile_count"] == 0
    assert local_store.bag("blank").embeddings.shape == (0, DIM)


def test_compact_collects_orphans_and_cleanup_keeps_tagged_versions(
    local_store, write, monkeypatch
):
    from datetime import timedelta

    local_store.commit([write(local_store, "s1", 10, seed=1)])
    local_store.tag("keep")
    tagged = local_store.version
    # An attempt that died after appending tiles leaves invisible orphan rows.
    monkeypatch.setattr(
        writer_module, "_merge_slides", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("died"))
    )
    with pytest.raises(RuntimeError):
        local_store.commit([write(local_store, "s2", 7)])
    monkeypatch.undo()
    assert _raw_rows(local_store, "s2") == 7
    report = local_store.compact(orphan_grace=timedelta(0))
    assert report.orphan_rows_deleted[ENCODER] == 7
    assert _raw_rows(local_store, "s2") == 0
    local_store.commit([write(local_store, "s1", 4, seed=2)])
    local_store.cleanup(older_than=timedelta(0))
    kept = [v.version for v in local_store.versions()]
    assert tagged in kept and local_store.version in kept
    assert local_store.checkout("keep").bag("s1").embeddings.shape == (10, DIM)
    assert local_store.bag("s1").embeddings.shape == (4, DIM)


def test_storage_options_are_translated_and_never_shown():
    from features.store import StoreLocation

    fsspec_style = {
        "key": "AKIAEXAMPLE",
        "secret": "s3cr3t-value",
        "endpoint_url": "http://127.0.0.1:9000",
        "skip_instance_cache": True,
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    location = StoreLocation("s3://bucket/root/", fsspec_style)
    options = location.lance_options()
    assert options == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "s3cr3t-value",
        "aws_endpoint": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1",
        "allow_http": "true",
    }
    assert location.uri == "s3://bucket/root"
    assert "s3cr3t-value" not in repr(location)
    assert StoreLocation("/tmp/x", fsspec_style).lance_options() == {}


def test_iter_bags_reads_one_snapshot_while_commits_land(local_store, write):
    local_store.commit([write(local_store, "s1", 8, seed=1), write(local_store, "s2", 9, seed=2)])
    bags = local_store.iter_bags(["s1", "s2"])
    assert len(next(bags)) == 8
    # A new ingestion replaces s2 (and tidies its old rows) while an epoch iterates:
    # the epoch keeps reading the version it started on, the next one sees the new s2.
    local_store.commit([write(local_store, "s2", 5, seed=3)])
    assert len(next(bags)) == 9
    assert [len(b) for b in local_store.iter_bags(["s1", "s2"])] == [8, 5]

"""A killed ingest: its run row is recorded ``aborted`` and its orphan fragments removed.

The kill is simulated without Ray: fragments written with the store's ``write_slide``
(commit step 1) and never committed, under a ``running`` run row whose pid is dead.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import lance
import pyarrow as pa
import pytest

from features.store import FeatureStore, RunRecord
from features.store.runs import FailureRecorder
from features.store.schema import RUN_LIFECYCLE_FIELDS, runs_schema
from tests._support.store import ENCODER

_LIFECYCLE = {f.name for f in RUN_LIFECYCLE_FIELDS}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer names a process
    return proc.pid


def _run(run_id: str, **kwargs) -> RunRecord:
    return RunRecord(
        run_id=run_id, config={"tile": 256}, encoder=ENCODER, code_version="t", **kwargs
    )


def _data_files(fs: FeatureStore) -> dict[str, int]:
    files, root = fs._tables.filesystem()
    data = f"{root.rstrip('/')}/tiles/{ENCODER}.lance/data"
    files.invalidate_cache(data)
    return {str(i["name"]).rsplit("/", 1)[-1]: int(i["size"]) for i in files.ls(data, detail=True)}


def _snapshot(fs: FeatureStore) -> dict[int, list[dict]]:
    """Every store version's visible tiles, in a stable order."""
    out = {}
    for version in fs.versions():
        table = fs.checkout(version.version).tiles(columns=["slide_id", "x", "y", "embedding"])
        out[version.version] = table.sort_by(
            [("slide_id", "ascending"), ("x", "ascending"), ("y", "ascending")]
        ).to_pylist()
    return out


def _runs(fs: FeatureStore) -> dict[str, dict]:
    return {row["run_id"]: row for row in fs.runs().to_pylist()}


@pytest.mark.slow_on_s3
def test_killed_run_is_aborted_and_its_orphans_removed_but_live_fragments_kept(store, write):
    # Committed history: several store versions, a tagged one, a replaced slide.
    store.commit([write(store, "s1", 30, seed=1), write(store, "s2", 10)])
    store.record_run(_run("r0"))
    store.commit([write(store, "s1", 12, seed=2)])
    before = _snapshot(store)
    tiles_versions = [v["version"] for v in store._tables.tiles(ENCODER).versions()]
    committed_files = set(_data_files(store))

    # A run killed after its workers wrote fragments: never appended, row left running.
    dead = _run("dead", pid=_dead_pid(), started_at=datetime.now(UTC) - timedelta(minutes=5))
    store.begin_run(dead, recover=False)
    write(store, "s3", 20, seed=3)
    write(store, "s4", 8, seed=4)
    orphans = set(_data_files(store)) - committed_files
    assert len(orphans) == 2
    assert _runs(store)["dead"]["status"] == "running"

    # S3 stamps files to the second: start the live run clearly after the orphans.
    time.sleep(2.1)
    store.begin_run(_run("live"), recover=False)  # this process: alive
    live_pending = write(store, "s5", 16, seed=5)
    live_files = set(_data_files(store)) - committed_files - orphans
    assert len(live_files) == 1

    report = store.recover(min_file_age=timedelta(0), clock_skew=timedelta(seconds=1))

    assert report.aborted_runs == ("dead",)
    assert report.live_runs == ("live",)
    assert report.files_removed == 2 and report.per_table[ENCODER][0] == 2
    remaining = _data_files(store)
    assert report.bytes_removed > 0
    assert set(remaining) == committed_files | live_files  # orphans gone, nothing else
    runs = _runs(store)
    assert runs["dead"]["status"] == "aborted" and runs["dead"]["finished_at"] is not None
    assert runs["dead"]["pid"] == dead.pid and runs["dead"]["host"] == socket.gethostname()
    assert runs["live"]["status"] == "running" and runs["r0"]["status"] == "done"
    # Every version still reads back identically; no version was dropped.
    assert _snapshot(store) == before
    assert [v["version"] for v in store._tables.tiles(ENCODER).versions()] == tiles_versions
    assert store.checkout("run-r0").bag("s2").embeddings.shape == (10, 16)

    # The live run's fragment survived intact: it commits and reads back.
    store.commit([live_pending])
    assert store.bag("s5").embeddings.shape == (16, 16)
    store.record_run(_run("live", n_slides_done=1))
    closed = _runs(store)["live"]
    assert closed["status"] == "done" and closed["started_at"] == runs["live"]["started_at"]
    # Nothing left to do: a second recovery removes nothing.
    again = store.recover(min_file_age=timedelta(0), clock_skew=timedelta(seconds=1))
    assert (again.aborted_runs, again.files_removed) == ((), 0)


def test_run_from_another_host_is_aborted_by_its_heartbeat_not_its_age(local_store):
    from features.store.liveness import remove_heartbeat
    from features.store.recovery import recover

    old = datetime.now(UTC) - timedelta(hours=30)
    local_store.begin_run(_run("far-old", host="elsewhere", pid=1, started_at=old), recover=False)
    local_store.begin_run(_run("legacy", host="elsewhere", pid=1, started_at=old), recover=False)
    remove_heartbeat(local_store.location, "legacy")  # begun by a version without heartbeats
    report = local_store.recover()
    assert report.aborted_runs == ("legacy",)  # no heartbeat: its start is all there is
    assert report.live_runs == ("far-old",)  # a 30-hour run that still beats is alive
    later = recover(local_store._tables, stale_after=timedelta(0))
    assert later.aborted_runs == ("far-old",)
    runs = _runs(local_store)
    assert (runs["far-old"]["status"], runs["legacy"]["status"]) == ("aborted", "aborted")


def test_begin_run_recovers_and_failure_recorder_closes_failed(local_store, write):
    local_store.begin_run(_run("dead", pid=_dead_pid()), recover=False)
    write(local_store, "s1", 5)  # orphan, but younger than the default min_file_age
    n_files = len(_data_files(local_store))

    def failing_run() -> None:
        with FailureRecorder() as guard:
            local_store.begin_run(_run("next"))  # recovers first
            guard.arm(lambda: local_store.record_run(_run("next", status="failed")))
            raise RuntimeError("encoder blew up")

    with pytest.raises(RuntimeError, match="blew up"):
        failing_run()
    runs = _runs(local_store)
    assert runs["dead"]["status"] == "aborted"
    assert runs["next"]["status"] == "failed" and runs["next"]["finished_at"] is not None
    assert len(_data_files(local_store)) == n_files  # default grace keeps a fresh file


def test_store_written_before_the_status_column_still_opens_and_migrates(tmp_path, write):
    uri = str(tmp_path / "store")
    fs = FeatureStore.open(uri, create=True)
    fs.commit([write(fs, "s1", 4)])
    legacy = pa.schema([f for f in runs_schema() if f.name not in _LIFECYCLE])
    now = datetime.now(UTC)
    row = {name: None for name in legacy.names}
    row.update(run_id="old", config_json="{}", encoder=ENCODER, recorded_at=now, started_at=now)
    lance.write_dataset(
        pa.Table.from_pylist([row], schema=legacy), f"{uri}/runs.lance", mode="overwrite"
    )

    fs = FeatureStore.open(uri)
    assert _LIFECYCLE.isdisjoint(fs._tables.runs().schema.names)
    assert _runs(fs)["old"]["status"] == "done"  # legacy rows were recorded on finishing
    assert fs.recover().aborted_runs == ()  # migrates the table, aborts nothing
    fs.begin_run(_run("new", pid=_dead_pid()), recover=False)
    assert fs.recover().aborted_runs == ("new",)
    runs = _runs(fs)
    assert runs["old"]["status"] == "done" and runs["new"]["status"] == "aborted"
    assert fs.bag("s1").embeddings.shape == (4, 16)

"""One ingest's recovery must never destroy another, live run (issue 24, item 2).

Runs are driven as the ingest driver drives them, without Ray: ``begin_run`` (which
recovers first), workers' ``write_slide``, the driver's ``commit`` and ``record_run``.
Fragment files are aged with ``os.utime`` so they are older than recovery's 10-minute
grace, as the fragments of a long run are.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from features.store import FeatureStore, FragmentMissingError, PendingSlide, RunRecord
from features.store.liveness import (
    Heartbeat,
    RunHeartbeat,
    machine_identity,
    read_heartbeat,
    write_heartbeat,
)
from infra.errors import StoreError
from tests._support.store import ENCODER

_DATA = f"tiles/{ENCODER}.lance/data"


def _run(run_id: str, **kwargs) -> RunRecord:
    return RunRecord(
        run_id=run_id, config={"tile": 256}, encoder=ENCODER, code_version="t", **kwargs
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _files(store: FeatureStore, pending: PendingSlide) -> list[str]:
    names = [f["path"] for text in pending.fragments for f in json.loads(text)["files"]]
    return [os.path.join(store.location.uri, _DATA, name) for name in names]


def _age_data_files(store: FeatureStore, minutes: int = 20) -> None:
    stamp = time.time() - minutes * 60
    data = os.path.join(store.location.uri, _DATA)
    for name in os.listdir(data):
        os.utime(os.path.join(data, name), (stamp, stamp))


def _status(store: FeatureStore) -> dict[str, str]:
    return {row["run_id"]: row["status"] for row in store.runs().to_pylist()}


def _other_machine(run_id: str, *, host: str, pid: int, beat_at: datetime) -> Heartbeat:
    return Heartbeat(run_id, pid, host, f"{host}/another-boot-id/pid:[4026531836]", beat_at)


def test_day_old_live_run_keeps_its_fragments_when_a_second_ingest_recovers(local_store, write):
    local_store.commit([write(local_store, "s0", 12)])  # committed long before
    started = datetime.now(UTC) - timedelta(hours=25)
    local_store.begin_run(_run("long", started_at=started))  # this process: alive
    long_pending = write(local_store, "s1", 20, seed=1)
    _age_data_files(local_store)  # written 20 minutes ago, by a run 25 hours old

    local_store.begin_run(_run("short"))  # the second ingest recovers first
    assert _status(local_store) == {"long": "running", "short": "running"}
    assert all(os.path.exists(path) for path in _files(local_store, long_pending))

    local_store.commit([write(local_store, "s2", 8, seed=2)], run_id="short")
    local_store.record_run(_run("short", n_slides_done=1))
    local_store.commit([long_pending], run_id="long")
    local_store.record_run(_run("long", n_slides_done=1))
    assert _status(local_store) == {"long": "done", "short": "done"}
    assert [local_store.bag(s).embeddings.shape[0] for s in ("s0", "s1", "s2")] == [12, 20, 8]
    assert local_store.latest().tiles(columns=["slide_id"]).num_rows == 40


def test_run_on_a_cloned_hostname_is_judged_by_its_heartbeat_not_a_local_pid(local_store, write):
    if machine_identity() is None:
        pytest.skip("no boot id on this platform: pids are never probed")
    # A clone shares our hostname; its pid means nothing here (it is dead here).
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    row = local_store.begin_run(
        _run("clone", pid=_dead_pid(), started_at=an_hour_ago), recover=False
    )
    beat = _other_machine(
        "clone", host=socket.gethostname(), pid=row["pid"], beat_at=datetime.now(UTC)
    )
    write_heartbeat(local_store.location, beat)
    pending = write(local_store, "s1", 10)
    _age_data_files(local_store)

    local_store.begin_run(_run("here"))
    assert _status(local_store)["clone"] == "running"
    local_store.commit([pending], run_id="clone")
    assert local_store.bag("s1").embeddings.shape == (10, 16)


def test_gone_drivers_are_aborted_and_their_fragments_removed(local_store, write):
    local_store.commit([write(local_store, "s0", 6)])
    # Killed a moment ago on this machine: its heartbeat is fresh but its pid is gone.
    local_store.begin_run(_run("killed", pid=_dead_pid()), recover=False)
    killed = write(local_store, "s1", 10, seed=1)
    # Two hours old on another machine, silent for 45 minutes (its pid is alive here).
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    local_store.begin_run(
        _run("silent", host="node-7", pid=os.getpid(), started_at=two_hours_ago), recover=False
    )
    beat_at = datetime.now(UTC) - timedelta(minutes=45)
    write_heartbeat(
        local_store.location,
        _other_machine("silent", host="node-7", pid=os.getpid(), beat_at=beat_at),
    )
    silent = write(local_store, "s2", 10, seed=2)
    _age_data_files(local_store)

    local_store.begin_run(_run("next"))
    assert _status(local_store) == {"killed": "aborted", "silent": "aborted", "next": "running"}
    assert not any(
        os.path.exists(p) for p in _files(local_store, killed) + _files(local_store, silent)
    )
    assert read_heartbeat(local_store.location, "silent") is None
    assert local_store.bag("s0").embeddings.shape == (6, 16)
    with pytest.raises(FragmentMissingError):
        local_store.commit([silent], run_id="silent")  # a driver that wakes up is refused


def test_commit_with_a_missing_fragment_file_is_refused_and_the_store_stays_readable(
    local_store, write
):
    local_store.commit([write(local_store, "s0", 12)])
    lost, kept = write(local_store, "s1", 10, seed=1), write(local_store, "s2", 8, seed=2)
    os.remove(_files(local_store, lost)[0])

    with pytest.raises(FragmentMissingError, match=r"\['s1'\]") as caught:
        local_store.commit([lost, kept])
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, FileNotFoundError)
    assert local_store.latest().tiles(columns=["slide_id"]).num_rows == 12
    assert local_store.bag("s0").embeddings.shape == (12, 16)
    local_store.commit([kept])
    assert local_store.bag("s2").embeddings.shape == (8, 16)


@pytest.mark.timeout(120)  # the bound on the wait below: no deadline inside the test
def test_heartbeat_is_refreshed_while_running_and_removed_when_the_run_closes(local_store):
    local_store.begin_run(_run("r1"), recover=False)
    stale = datetime.now(UTC) - timedelta(hours=1)
    write_heartbeat(local_store.location, Heartbeat("r1", os.getpid(), "h", None, stale))
    with RunHeartbeat(timedelta(milliseconds=20)) as heartbeat:
        heartbeat.start(local_store.location, "r1")
        while read_heartbeat(local_store.location, "r1").beat_at == stale:  # type: ignore[union-attr]
            time.sleep(0.02)
    beat = read_heartbeat(local_store.location, "r1")
    assert beat is not None and beat.pid == os.getpid() and beat.machine == machine_identity()
    local_store.record_run(_run("r1"))
    assert read_heartbeat(local_store.location, "r1") is None

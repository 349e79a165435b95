"""Whether an ingest run's driver is alive: a heartbeat file it refreshes, and its pid.

Each running run has ``_heartbeats/<run_id>.json`` under the store root, written by
:func:`features.store.runs.begin_run` *before* the run's row (so recovery never sees a
``running`` row without one), refreshed by its driver (:class:`RunHeartbeat`, a timer
thread) and removed when the run is closed or aborted. It records the driver's pid and
:func:`machine_identity`, and when it last beat.

A run's age says nothing about its liveness (thousands of slides on CPU take days), so
:func:`driver_gone` never uses it when a heartbeat exists:

* same machine identity: the pid decides. An alive pid is never dead (a reused pid
  keeps a dead run's files a little longer, which is harmless); a gone pid is dead at once.
* another machine (or this one before a reboot): dead once the heartbeat is older than
  ``stale_after``. A hostname alone is no identity: cloned VMs and containers share them.
* no heartbeat: a run begun by a version without heartbeats; its start is its only
  sign of life, so it is dead once older than ``max_age``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from features.store._keys import validate_run_id
from features.store.location import StoreLocation
from infra.files import write_bytes_uri

__all__ = [
    "DEFAULT_BEAT_INTERVAL",
    "DEFAULT_STALE_AFTER",
    "Heartbeat",
    "RunHeartbeat",
    "driver_gone",
    "machine_identity",
    "pid_alive",
    "read_heartbeat",
    "remove_heartbeat",
    "write_heartbeat",
]

log = logging.getLogger(__name__)

HEARTBEATS_DIR = "_heartbeats"
DEFAULT_BEAT_INTERVAL = timedelta(seconds=60)
# Thirty missed beats: a driver on another machine is only declared dead when it has
# certainly stopped (a paused VM, a partition), never for a slow storage write.
DEFAULT_STALE_AFTER = timedelta(minutes=30)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=1)
def machine_identity() -> str | None:
    """This boot of this machine, seen from this pid namespace; None where unknowable.

    The boot id is random per boot, so cloned machines (same hostname, same
    ``/etc/machine-id``) differ, and pids from before a reboot are not compared. Containers
    share their host's boot id but not its pids, so the pid namespace is part of it.
    """
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot is None:
        return None
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "pid:?"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (a reused pid counts as alive)."""
    if pid <= 0:
        return True  # not a real pid: cannot prove the driver gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Heartbeat:
    """A run driver's last sign of life. ``machine`` None: a machine that cannot be probed."""

    run_id: str
    pid: int | None
    host: str | None
    machine: str | None
    beat_at: datetime

    @classmethod
    def here(cls, run_id: str, pid: int | None = None) -> Heartbeat:
        return cls(
            validate_run_id(run_id),
            os.getpid() if pid is None else pid,
            socket.gethostname(),
            machine_identity(),
            datetime.now(UTC),
        )

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "beat_at": self.beat_at.isoformat()}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        raw = json.loads(data)
        stamp = datetime.fromisoformat(raw["beat_at"])
        return cls(
            run_id=str(raw["run_id"]),
            pid=None if raw.get("pid") is None else int(raw["pid"]),
            host=raw.get("host"),
            machine=raw.get("machine"),
            beat_at=stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
        )


def _path(location: StoreLocation, run_id: str) -> str:
    return location.join(HEARTBEATS_DIR, f"{validate_run_id(run_id)}.json")


def write_heartbeat(location: StoreLocation, beat: Heartbeat) -> None:
    """Write (replace) a run's heartbeat: atomically on local disk, one PUT on object stores."""
    write_bytes_uri(_path(location, beat.run_id), beat.to_json(), location.storage_options)


def read_heartbeat(location: StoreLocation, run_id: str) -> Heartbeat | None:
    """A run's heartbeat; None when it has none (or an unreadable one, logged)."""
    fs, _ = location.filesystem()
    path = _path(location, run_id)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return Heartbeat.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable heartbeat %s (%s): ignored", path, exc)
        return None


def remove_heartbeat(location: StoreLocation, run_id: str) -> None:
    fs, _ = location.filesystem()
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(_path(location, run_id))


def driver_gone(
    row: dict[str, Any],
    beat: Heartbeat | None,
    now: datetime,
    *,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    max_age: timedelta = timedelta(hours=24),
) -> bool:
    """Whether the driver of a ``running`` run (its runs row and heartbeat) is provably gone."""
    if beat is None:
        started = row.get("started_at")
        return started is not None and now - started > max_age
    here = machine_identity()
    if here is not None and beat.machine == here and beat.pid is not None:
        return not pid_alive(beat.pid)
    return now - beat.beat_at > stale_after


class RunHeartbeat:
    """Context manager: once started, refreshes a run's heartbeat from a timer thread.

    The ingest driver starts it right after recording its run ``running`` and leaves the
    block before closing the run, so no beat lands after the heartbeat is removed. A
    failed beat is logged and retried at the next tick: a passing storage error must not
    fail a day-long run (stale heartbeats take ``stale_after`` to matter).
    """

    def __init__(self, interval: timedelta = DEFAULT_BEAT_INTERVAL) -> None:
        self._interval = interval.total_seconds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, location: StoreLocation, run_id: str) -> None:
        if self._thread is not None:
            raise RuntimeError("this RunHeartbeat is already running")
        beat = functools.partial(self._beat, location, validate_run_id(run_id))
        self._thread = threading.Thread(
            target=self._loop, args=(beat,), name=f"heartbeat-{run_id}", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _beat(location: StoreLocation, run_id: str) -> None:
        write_heartbeat(location, Heartbeat.here(run_id))

    def _loop(self, beat: Any) -> None:
        while not self._stop.wait(self._interval):
            try:
                beat()
            except Exception as exc:  # a dead timer thread would let the run go stale
                log.warning("heartbeat not written (%s: %s); retrying", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> RunHeartbeat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # on success or failure alike

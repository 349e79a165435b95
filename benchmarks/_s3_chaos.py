"""The chaos run on S3 (issue 27 item 3): ingestion into an ``s3://`` store on moto while
S3 misbehaves and a stage actor is killed every minute.

Used by ``python -m benchmarks.ingest_10k --s3-chaos N``. The store's requests go through
the fault proxy of ``tests/_support/s3_faults.py`` (loopback) to a moto server that
counts them (``benchmarks/_s3_counting.py``). Faults, for the whole run:

* every ``slowdown_every``-th request of any method is answered ``503 SlowDown`` (not
  forwarded: S3's throttling);
* every ``reset_every``-th GET (object reads and listings) is forwarded, and the
  connection is reset halfway through the answer's body;
* every ``kill_every`` s a fused stage actor's process (a descendant of this driver's Ray)
  gets SIGKILL wherever it is: reading, encoding, or writing its fragment to S3. Ray
  restarts it and the pool resubmits its slides with the same write ids.

A run that ends with slides not done (or raises) is run again, as a user reruns the same
command, with the faults and kills still on. At the end, with the faults off:
``cleanup(older_than=0, delete_unverified=True)``, then the store must hold exactly the
uninterrupted local run's tile set, no duplicates, and no data file of the tiles table
that no retained version references (an orphan fragment from a killed write).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests._support.s3_faults import Fault

__all__ = ["EveryNth", "StageKiller", "run_chaos", "s3_chaos"]

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "chaos",
    "AWS_SECRET_ACCESS_KEY": "chaos",
    "AWS_SESSION_TOKEN": "chaos",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class EveryNth(Fault):
    """A fault on every ``every``-th matching request, for the whole run."""

    every: int = 1

    def take(self, method: str, path: str) -> bool:
        if not (re.fullmatch(self.method, method) and re.search(self.path, path)):
            return False
        self.seen += 1
        if self.seen % self.every or self.fired >= self.times:
            return False
        self.fired += 1
        return True


class StageKiller(threading.Thread):
    """SIGKILL one fused stage actor process every ``every`` seconds, in turn.

    Only descendants of this process (the embedded Ray it started) are candidates, found
    by the process title Ray gives an actor's worker (``ray::FusedStage``)."""

    def __init__(self, every: float, prefix: str = "ray::FusedStage") -> None:
        super().__init__(daemon=True)
        self.every, self.prefix, self._halt = every, prefix, threading.Event()
        self.kills: list[dict[str, Any]] = []
        self._t0 = time.monotonic()

    def _stages(self) -> list[Any]:
        import psutil

        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.cmdline()[:1] and proc.cmdline()[0].startswith(self.prefix):
                    found.append(proc)
            except psutil.Error:
                continue
        return sorted(found, key=lambda p: p.pid)

    def run(self) -> None:
        while not self._halt.wait(self.every):
            stages = self._stages()
            if not stages:
                continue
            victim = stages[len(self.kills) % len(stages)]
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append({"t_s": round(time.monotonic() - self._t0, 1), "pid": victim.pid})

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _options(endpoint: str) -> dict[str, Any]:
    # The retry policy tests/test_s3_faults.py gives s3fs (the driver's listings, heartbeats);
    # Lance's object_store retries 503s and dropped connections with its own defaults.
    return {
        "key": _CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret": _CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": endpoint,
        "skip_instance_cache": True,
        "config_kwargs": {
            "read_timeout": 20,
            "connect_timeout": 5,
            "retries": {"max_attempts": 8, "mode": "standard"},
        },
    }


def orphan_files(store: Any, encoder: str) -> list[str]:
    """Data files of the tiles table that no retained version references."""
    from features.store._tables import TILES_DIR
    from features.store.recovery import _unreferenced

    tables = store._tables
    fs, root = tables.filesystem()
    data_dir = f"{root.rstrip('/')}/{TILES_DIR}/{encoder}.lance/data"
    fs.invalidate_cache(data_dir)
    names = {str(p).rsplit("/", 1)[-1] for p in fs.ls(data_dir, detail=False)}
    return sorted(_unreferenced(tables, encoder, {n for n in names if n.endswith(".lance")}))


def _attempt(paths: list[Path], uri: str, options: dict[str, Any], encoder: str) -> dict[str, Any]:
    from features.store import FeatureStore
    from infra.errors import SlidebankError
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    started = time.perf_counter()
    try:
        result = run_ingest(
            [SlideSource(str(p), p.stem) for p in paths],
            FeatureStore.open(uri, options, create=True),
            IngestConfig(encoder=encoder, stain="none"),
            RunOptions(progress=False),
            storage_options=options,
        )
    except Exception as exc:  # recorded: a run that S3 broke is this benchmark's result
        typed = isinstance(exc, SlidebankError)
        return {
            "raised": f"{type(exc).__name__}: {str(exc)[:300]}",
            "typed_error": typed,
            "seconds": time.perf_counter() - started,
        }
    statuses: dict[str, int] = {}
    for outcome in result.outcomes:
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
    return {
        "seconds": time.perf_counter() - started,
        "outcomes": statuses,
        "skipped": len(result.skipped),
        "failed": [f"{o.slide_id}:{o.error_type}" for o in result.failed][:20],
    }


def s3_chaos(
    paths: list[Path], reference: Path, encoder: str, *, kill_every: float = 60.0
) -> dict[str, Any]:
    """:func:`run_chaos` in a fresh process (one embedded Ray per process: the caller's
    own run has had its Ray); ``reference`` is the uninterrupted run's local store."""
    import json
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="slidebank-s3-chaos-") as tmp:
        out = Path(tmp) / "result.json"
        args = [[str(p) for p in paths], str(reference), encoder, kill_every, str(out)]
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks._s3_chaos", json.dumps(args)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not out.exists():
            return {"exit_code": proc.returncode, "stderr_tail": proc.stderr[-3000:]}
        return dict(json.loads(out.read_text()))


def run_chaos(
    paths: list[Path],
    want: Any,
    encoder: str,
    *,
    kill_every: float = 60.0,
    slowdown_every: int = 40,
    reset_every: int = 60,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """Ingest ``paths`` into s3:// under faults until every slide is done (at most
    ``max_attempts`` runs); compare with ``want`` (slide_id, x, y of the uninterrupted run)."""
    import s3fs

    from benchmarks._s3_counting import counting_moto, read_counts
    from features.store import FeatureStore
    from infra.environ import patched_environ
    from infra.ray_runtime import connect, shutdown
    from tests._multinode import with_startup_retries
    from tests._support.s3_faults import fault_proxy

    env = {**os.environ, **_CREDENTIALS}
    attempts: list[dict[str, Any]] = []
    with (
        patched_environ(_CREDENTIALS),
        counting_moto(env) as moto,
        fault_proxy(moto) as proxy,
    ):
        direct = _options(moto)
        s3fs.S3FileSystem(**direct).mkdir("chaos")
        uri = "s3://chaos/store"
        proxy.add(
            EveryNth(
                "slowdown", method="GET|HEAD|PUT|POST|DELETE", times=10**9, every=slowdown_every
            ),
            EveryNth("reset", method="GET", times=10**9, every=reset_every),
        )
        started = time.perf_counter()
        for _ in range(max_attempts):
            # Ray waits a fixed 30 s for its raylet: too short at load 20, so try again
            ray_started = with_startup_retries(
                lambda: connect(address="local", num_cpus=os.cpu_count() or 1)
            )
            killer = StageKiller(kill_every)
            killer.start()
            try:
                attempt = _attempt(paths, uri, _options(proxy.endpoint), encoder)
            finally:
                killer.stop()
                shutdown(ray_started)
            attempt["stage_kills"] = killer.kills
            attempts.append(attempt)
            if "raised" not in attempt and set(attempt["outcomes"]) <= {"done"}:
                break
        seconds = time.perf_counter() - started
        proxy.clear()
        faults = {"slowdown": proxy.fired("slowdown"), "reset": proxy.fired("reset")}
        requests = read_counts(moto)["ops"]
        store = FeatureStore.open(uri, direct)
        orphans_before = orphan_files(store, encoder)
        cleanup = store.cleanup(older_than=timedelta(0), delete_unverified=True)
        store = FeatureStore.open(uri, direct)
        orphans_after = orphan_files(store, encoder)
        slides = store.latest().slides(encoder=encoder).to_pandas()
        got = store.latest().tiles_pandas(encoder=encoder, columns=["slide_id", "x", "y"])
    got_set = set(map(tuple, got.to_numpy().tolist()))
    want_set = set(map(tuple, want.to_numpy().tolist()))
    return {
        "slides": len(paths),
        "store": uri + " (moto on loopback, through the fault proxy)",
        "kill_every_s": kill_every,
        "slowdown_every_nth_request": slowdown_every,
        "reset_every_nth_get": reset_every,
        "attempts": attempts,
        "seconds_all_attempts": seconds,
        "faults_fired": faults,
        "proxy_requests": proxy.requests,
        "requests_reaching_moto": requests,
        "stage_kills": sum(len(a["stage_kills"]) for a in attempts),
        "done": int((slides["status"] == "done").sum()),
        "tiles": len(got),
        "duplicate_tiles": int(got.duplicated().sum()),
        "same_tile_set_as_uninterrupted": got_set == want_set,
        "missing_tiles": len(want_set - got_set),
        "extra_tiles": len(got_set - want_set),
        "orphan_files_before_cleanup": len(orphans_before),
        "cleanup_old_versions": cleanup,
        "orphan_files_after_cleanup": len(orphans_after),
    }


def main(argv: list[str]) -> None:
    import json

    from features.store import FeatureStore

    paths, reference, encoder, kill_every, out = json.loads(argv[0])
    paths = [Path(p) for p in paths]
    want = (
        FeatureStore.open(reference)
        .latest()
        .tiles_pandas(encoder=encoder, columns=["slide_id", "x", "y"])
    )
    want = want[want["slide_id"].isin({p.stem for p in paths})]
    result = run_chaos(paths, want, encoder, kill_every=kill_every)
    Path(out).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

"""Custom Ray metrics (shown on the Ray dashboard, exported to Prometheus).

Created lazily in each process once Ray is up; before that (or outside Ray, in plain
function calls) they are no-ops, so stage code never branches on where it runs. A call
made before ``ray.init`` does not switch metrics off for the rest of the process: only a
successful creation is cached.

Counters are also tallied in the process (:func:`local_count`), Ray or not, so a test or
a run record can read what happened in this process without a metrics agent.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from typing import Any

__all__ = [
    "METRIC_NAMES",
    "local_count",
    "observe_stage",
    "record_bytes",
    "record_decode_fallback",
    "record_encode_oom_retry",
    "record_failure",
    "record_retry",
    "record_slide",
    "record_tiles",
]

log = logging.getLogger(__name__)

_LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]

#: every metric slidebank emits: name -> (kind, description, tag keys). Dashboards and
#: their tests read this table, so a plotted metric is always one the code emits.
METRIC_NAMES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "slidebank_slides_total": ("counter", "Slides finished, by status", ("status",)),
    "slidebank_tiles_total": ("counter", "Tiles encoded", ()),
    "slidebank_bytes_read_total": ("counter", "Slide bytes opened", ()),
    "slidebank_failures_total": ("counter", "Slide failures, by error type", ("error_type",)),
    "slidebank_retries_total": ("counter", "Slide reads retried after a worker died", ()),
    "slidebank_decode_fallbacks_total": (
        "counter",
        "Slides whose GPU decode failed and fell back to CPU decode",
        (),
    ),
    "slidebank_encode_oom_retries_total": (
        "counter",
        "Encoder forwards retried at half the batch after a device out-of-memory",
        (),
    ),
    "slidebank_stage_seconds": ("histogram", "Stage latency per slide or batch", ("stage",)),
}

_lock = threading.Lock()
_cache: dict[str, Any] | None = None
_warned = False
_local: Counter[str] = Counter()


def _metrics() -> dict[str, Any] | None:
    global _cache, _warned
    if _cache is not None:
        return _cache
    if "ray" not in sys.modules:
        return None  # Ray never started in this process (an in-process run): don't import it
    try:
        import ray
        from ray.util import metrics as m
    except ImportError:
        return None
    if not ray.is_initialized():
        return None  # not cached: Ray may start later in this process
    with _lock:
        if _cache is not None:
            return _cache
        try:
            built: dict[str, Any] = {}
            for name, (kind, description, tags) in METRIC_NAMES.items():
                if kind == "histogram":
                    built[name] = m.Histogram(
                        name, description, boundaries=_LATENCY_BOUNDARIES, tag_keys=tags
                    )
                else:
                    built[name] = m.Counter(name, description, tag_keys=tags)
        except Exception as exc:  # metrics must never break a run (e.g. no metrics agent)
            if not _warned:
                log.debug("Ray metrics unavailable, continuing without them: %s", exc)
                _warned = True
            return None
        _cache = built
        return built


def _inc(name: str, n: int = 1, tags: dict[str, str] | None = None) -> None:
    with _lock:
        _local[name] += n
    if (m := _metrics()) is None:
        return
    if tags:
        m[name].inc(n, tags=tags)
    else:
        m[name].inc(n)


def local_count(name: str) -> int:
    """How often counter ``name`` was incremented in this process (all tags together)."""
    if name not in METRIC_NAMES:
        raise KeyError(f"no metric named {name!r}")
    with _lock:
        return _local[name]


def record_slide(status: str) -> None:
    _inc("slidebank_slides_total", tags={"status": status})


def record_tiles(n: int) -> None:
    if n:
        _inc("slidebank_tiles_total", n)


def record_bytes(n: int) -> None:
    if n:
        _inc("slidebank_bytes_read_total", n)


def record_failure(error_type: str) -> None:
    _inc("slidebank_failures_total", tags={"error_type": error_type})


def record_retry() -> None:
    _inc("slidebank_retries_total")


def record_decode_fallback() -> None:
    _inc("slidebank_decode_fallbacks_total")


def record_encode_oom_retry() -> None:
    _inc("slidebank_encode_oom_retries_total")


def observe_stage(stage: str, seconds: float) -> None:
    if (m := _metrics()) is not None:
        m["slidebank_stage_seconds"].observe(seconds, tags={"stage": stage})

"""Custom Ray metrics (shown on the Ray dashboard, exported to Prometheus).

Created lazily in each process once Ray is up; before that (or outside Ray, in plain
function calls) they are no-ops, so stage code never branches on where it runs. A call
made before ``ray.init`` does not switch metrics off for the rest of the process: only a
successful creation is cached.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["METRIC_NAMES", "observe_stage", "record_bytes", "record_failure", "record_retry",
           "record_slide", "record_tiles"]

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
    "slidebank_stage_seconds": ("histogram", "Stage latency per slide or batch", ("stage",)),
}

_lock = threading.Lock()
_cache: dict[str, Any] | None = None
_warned = False


def _metrics() -> dict[str, Any] | None:
    global _cache, _warned
    if _cache is not None:
        return _cache
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
                    built[name] = m.Histogram(name, description, boundaries=_LATENCY_BOUNDARIES,
                                              tag_keys=tags)
                else:
                    built[name] = m.Counter(name, description, tag_keys=tags)
        except Exception as exc:  # metrics must never break a run (e.g. no metrics agent)
            if not _warned:
                log.debug("Ray metrics unavailable, continuing without them: %s", exc)
                _warned = True
            return None
        _cache = built
        return built


def record_slide(status: str) -> None:
    if (m := _metrics()) is not None:
        m["slidebank_slides_total"].inc(1, tags={"status": status})


def record_tiles(n: int) -> None:
    if (m := _metrics()) is not None and n:
        m["slidebank_tiles_total"].inc(n)


def record_bytes(n: int) -> None:
    if (m := _metrics()) is not None and n:
        m["slidebank_bytes_read_total"].inc(n)


def record_failure(error_type: str) -> None:
    if (m := _metrics()) is not None:
        m["slidebank_failures_total"].inc(1, tags={"error_type": error_type})


def record_retry() -> None:
    if (m := _metrics()) is not None:
        m["slidebank_retries_total"].inc(1)


def observe_stage(stage: str, seconds: float) -> None:
    if (m := _metrics()) is not None:
        m["slidebank_stage_seconds"].observe(seconds, tags={"stage": stage})

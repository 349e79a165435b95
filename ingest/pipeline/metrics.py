"""Custom Ray metrics (shown on the Ray dashboard, exported to Prometheus).

Created lazily in each worker process; outside Ray (plain function calls in tests)
they are no-ops, so stage code never branches on where it runs.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["observe_stage", "record_bytes", "record_failure", "record_slide", "record_tiles"]

_LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]


@functools.cache
def _metrics() -> dict[str, Any] | None:
    try:
        import ray
        from ray.util import metrics as m

        if not ray.is_initialized():
            return None
        return {
            "slides": m.Counter("slidebank_slides_total", "Slides finished, by status",
                                tag_keys=("status",)),
            "tiles": m.Counter("slidebank_tiles_total", "Tiles encoded"),
            "bytes": m.Counter("slidebank_bytes_read_total", "Slide bytes opened"),
            "failures": m.Counter("slidebank_failures_total", "Slide failures, by error type",
                                  tag_keys=("error_type",)),
            "latency": m.Histogram("slidebank_stage_seconds", "Stage latency per slide or batch",
                                   boundaries=_LATENCY_BOUNDARIES, tag_keys=("stage",)),
        }
    except Exception:  # metrics must never break ingestion (e.g. no metrics agent)
        return None


def record_slide(status: str) -> None:
    if (m := _metrics()) is not None:
        m["slides"].inc(1, tags={"status": status})


def record_tiles(n: int) -> None:
    if (m := _metrics()) is not None and n:
        m["tiles"].inc(n)


def record_bytes(n: int) -> None:
    if (m := _metrics()) is not None and n:
        m["bytes"].inc(n)


def record_failure(error_type: str) -> None:
    if (m := _metrics()) is not None:
        m["failures"].inc(1, tags={"error_type": error_type})


def observe_stage(stage: str, seconds: float) -> None:
    if (m := _metrics()) is not None:
        m["latency"].observe(seconds, tags={"stage": stage})

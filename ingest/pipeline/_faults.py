"""Test-only fault injection for the ingestion pipeline (private; not part of RunOptions).

Tests activate a plan with ``with injected(FaultPlan(...)):`` around ``run_ingest``; the
driver reads it once per run and hands it to the read actors, so nothing in the public
configuration, the CLI or ``--help`` can switch it on, and a typo is a TypeError rather
than a silently ignored dict key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FaultPlan", "active", "injected"]


@dataclass(frozen=True)
class FaultPlan:
    #: kill the read worker the first time it reaches this slide (marker file records it)
    exit_once_slide: str | None = None
    exit_once_marker: str | None = None
    #: kill the read worker every time it reaches this slide (a poison slide)
    exit_always_slide: str | None = None
    #: kill the driver right after its n-th commit
    driver_exit_after_commits: int | None = None

    def before_read(self, slide_id: str) -> None:
        if self.exit_always_slide == slide_id:
            os._exit(1)
        if self.exit_once_slide == slide_id and self.exit_once_marker:
            marker = Path(self.exit_once_marker)
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)

    def after_commit(self, commits: int) -> None:
        if self.driver_exit_after_commits == commits:
            os._exit(17)


_active: FaultPlan | None = None


def active() -> FaultPlan | None:
    return _active


@contextlib.contextmanager
def injected(plan: FaultPlan) -> Iterator[FaultPlan]:
    global _active
    previous, _active = _active, plan
    try:
        yield plan
    finally:
        _active = previous

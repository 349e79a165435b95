"""Test-only fault injection for the ingestion pipeline (private; not part of RunOptions).

Tests activate a plan with ``with injected(FaultPlan(...)):`` around ``run_ingest``; the
driver reads it once per run and hands it to the read actors. The mechanism is
:mod:`infra.faults`; this module holds only what can fail during ingestion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from infra.faults import FaultSlot, first_time

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
        if (
            self.exit_once_slide == slide_id
            and self.exit_once_marker
            and first_time(self.exit_once_marker)
        ):
            os._exit(1)

    def after_commit(self, commits: int) -> None:
        if self.driver_exit_after_commits == commits:
            os._exit(17)


_slot: FaultSlot[FaultPlan] = FaultSlot()
active = _slot.active
injected = _slot.injected

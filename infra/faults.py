"""Test-only fault injection: how a package's private fault plan is switched on.

Each package keeps its own ``FaultPlan`` (what can fail there: a read worker, a driver
after a commit, a training fold), but they share this mechanism: a plan is active only
inside ``with slot.injected(plan):``, which a test writes; the driver reads
``slot.active()`` once per run and hands the plan to its workers explicitly (a Ray worker
never sees the driver's module state). Nothing in a public config or the CLI can switch a
plan on, and a typo in a plan is a TypeError rather than a silently ignored key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["FaultSlot", "first_time"]

P = TypeVar("P")


class FaultSlot(Generic[P]):
    """Where one package's active fault plan lives (``None`` outside ``injected``)."""

    def __init__(self) -> None:
        self._plan: P | None = None

    def active(self) -> P | None:
        return self._plan

    @contextlib.contextmanager
    def injected(self, plan: P) -> Iterator[P]:
        previous, self._plan = self._plan, plan
        try:
            yield plan
        finally:
            self._plan = previous


def first_time(marker: str | os.PathLike[str]) -> bool:
    """True once per marker file: it is written (with this process id) before the fault
    fires, so a retry or a rerun of the same work gets past a fault meant to happen once."""
    path = Path(marker)
    if path.exists():
        return False
    path.write_text(str(os.getpid()))
    return True

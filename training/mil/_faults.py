"""Test-only fault injection for training (private; not part of any config or the CLI).

Like ``ingest.pipeline._faults``: a test wraps a run in ``with injected(FaultPlan(...)):``;
the driver reads the plan once and hands it to the fold loop (in the Ray workers'
``train_loop_config``, since a worker never sees the driver's module state), so nothing a
user can set switches it on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.errors import SlidebankError

__all__ = ["FaultPlan", "InjectedFault", "active", "injected"]


class InjectedFault(SlidebankError, RuntimeError):
    """Raised by a ``FaultPlan`` with ``mode="raise"``: an in-process stand-in for a dead worker."""


@dataclass(frozen=True)
class FaultPlan:
    #: fail when this fold (its key) has finished this epoch
    fold: str | None = None
    epoch: int = 0
    #: ``exit``: the worker process dies (os._exit); ``raise``: InjectedFault
    mode: str = "exit"
    #: fail only while this file does not exist (it is written first): a fault that
    #: happens once, so a retry or a rerun gets past it
    once_marker: str | None = None

    def after_epoch(self, fold: str, epoch: int) -> None:
        if self.fold != fold or self.epoch != epoch:
            return
        if self.once_marker:
            marker = Path(self.once_marker)
            if marker.exists():
                return
            marker.write_text(str(os.getpid()))
        if self.mode == "exit":
            os._exit(1)
        raise InjectedFault(f"injected fault in fold {fold} after epoch {epoch}")


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

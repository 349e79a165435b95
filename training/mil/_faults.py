"""Test-only fault injection for training (private; not part of any config or the CLI).

A test wraps a run in ``with injected(FaultPlan(...)):``; the driver reads the plan once
and hands it to the fold loop (in the Ray workers' ``train_loop_config``). The mechanism
is :mod:`infra.faults`; this module holds only what can fail during training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from infra.errors import SlidebankError
from infra.faults import FaultSlot, first_time

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
        if self.once_marker and not first_time(self.once_marker):
            return
        if self.mode == "exit":
            os._exit(1)
        raise InjectedFault(f"injected fault in fold {fold} after epoch {epoch}")


_slot: FaultSlot[FaultPlan] = FaultSlot()
active = _slot.active
injected = _slot.injected

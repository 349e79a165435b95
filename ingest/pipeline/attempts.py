"""Count how often reading a slide killed its worker, so a poison slide cannot loop.

Ray restarts a dead read actor and retries its task without limit, which is what a
worker lost to a node failure or an out-of-memory kill needs. A slide whose decoder
crashes the process (a segfault in native code on malformed bytes) would then be
retried forever. Each read registers its start here and its end; a start without an
end is a crash. After ``MAX_CRASHES`` crashes the next attempt records the slide as
failed instead of reading it, and the run goes on.

Stages get the ledger by name, not by handle: an actor handle among an actor's
constructor arguments makes Ray print a C++ warning to the terminal for every restartable
actor (the handle counts as an argument "in the object store"). The ledger is pinned to
the driver's node, so losing a worker node never takes the crash counts with it.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

__all__ = ["MAX_CRASHES", "AttemptLedger", "ledger_by_name", "new_ledger"]

MAX_CRASHES = 2


class AttemptLedger:
    """Driver-owned actor: write_id → (reads started, reads finished)."""

    def __init__(self) -> None:
        self._started: dict[str, int] = {}
        self._finished: dict[str, int] = {}

    def begin(self, write_id: str) -> int:
        """Register a read; returns how many earlier reads of it died unfinished."""
        crashes = self._started.get(write_id, 0) - self._finished.get(write_id, 0)
        self._started[write_id] = self._started.get(write_id, 0) + 1
        return crashes

    def finish(self, write_id: str) -> None:
        self._finished[write_id] = self._finished.get(write_id, 0) + 1


def new_ledger() -> tuple[Any, str]:
    """Start the ledger actor on this (the driver's) node, no CPU reserved: it only counts.
    Returns its handle (for the driver to kill it) and its name (for the stages)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"slidebank-attempts-{uuid.uuid4().hex}"
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    handle = (
        ray.remote(num_cpus=0, max_restarts=0)(AttemptLedger)
        .options(name=name, scheduling_strategy=here)
        .remote()
    )
    return handle, name


@functools.lru_cache(maxsize=8)
def ledger_by_name(name: str) -> Any:
    """The ledger's handle in a stage process (names are unique per run)."""
    import ray

    return ray.get_actor(name)

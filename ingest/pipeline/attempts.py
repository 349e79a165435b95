"""Count how often reading a slide killed its worker, so a poison slide cannot loop.

Ray restarts a dead read actor and retries its task without limit, which is what a
worker lost to a node failure or an out-of-memory kill needs. A slide whose decoder
crashes the process (a segfault in native code on malformed bytes) would then be
retried forever. Each read registers its start here and its end; a start without an
end is a crash. After ``MAX_CRASHES`` crashes the next attempt records the slide as
failed instead of reading it, and the run goes on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_CRASHES", "AttemptLedger", "new_ledger"]

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


def new_ledger() -> Any:
    """Start the ledger actor (no CPU reserved: it only counts)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(AttemptLedger).remote()

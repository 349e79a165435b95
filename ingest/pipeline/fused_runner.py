"""Driver side of the fused engine: hand slides to :class:`FusedStage` actors, collect rows.

Each actor gets one slide per call and at most two calls in flight (so it never waits
for the driver between slides); the next slide goes to whichever actor finishes first,
which balances slides of different sizes. Rows stream back as Ray generator items.

Crashes: an actor that dies mid-slide (a segfault in native decoding, an OOM kill) is
restarted by Ray, and its unfinished slides are resubmitted with the same ``write_id``
once it answers again (the collector keeps one copy of each batch, so a slide
half-delivered before the crash is never duplicated). Which slide killed the worker is
counted by the same attempt ledger the Ray Data engine uses (a read registered as
begun but never finished); after :data:`MAX_CRASHES` the read stage records the slide as
failed (``SlideCrashError``) instead of reading it again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.pipeline.fused_stage import FusedStage

__all__ = ["FusedPool"]

log = logging.getLogger(__name__)

_IN_FLIGHT = 2
#: resubmissions of one slide after actor deaths it was not running for (e.g. a neighbour's
#: crash, a node loss) before the run gives up: a guard against a pool that cannot start
_MAX_REQUEUES = 8
_RESTART_WAIT_S = 300.0


@dataclass
class _Actor:
    handle: Any
    calls: deque = field(default_factory=deque)  # (generator, item) in submission order


class FusedPool:
    """A pool of fused actors fed from a queue of slide items."""

    def __init__(self, n_actors: int, cpus_per_actor: float, constructor: Mapping[str, Any]) -> None:
        import ray

        remote = ray.remote(num_cpus=cpus_per_actor, max_restarts=-1, max_task_retries=0)(FusedStage)
        self._actors = [_Actor(remote.remote(**constructor)) for _ in range(n_actors)]
        self._requeues: dict[str, int] = {}

    def run(self, items: list[dict[str, Any]], on_row: Callable[[Mapping[str, Any]], None],
            on_tick: Callable[[], None] = lambda: None) -> None:
        """Process every item; ``on_row`` gets each post-write row, ``on_tick`` runs at
        least once a second (a live progress display)."""
        import ray

        queue = deque(items)
        try:
            self._fill(queue)
            while any(a.calls for a in self._actors):
                pending = {id(c[0]): (a, c) for a in self._actors for c in a.calls}
                ready, _ = ray.wait([c[0] for _, c in pending.values()], num_returns=1, timeout=1.0)
                on_tick()
                for generator in ready:
                    actor, call = pending[id(generator)]
                    self._advance(actor, call, queue, on_row)
                self._fill(queue)
        finally:
            for actor in self._actors:
                ray.kill(actor.handle)  # a shared cluster would otherwise keep them

    def _fill(self, queue: deque) -> None:
        for actor in self._actors:
            while queue and len(actor.calls) < _IN_FLIGHT:
                item = queue.popleft()
                generator = actor.handle.run.options(num_returns="streaming").remote(item)
                actor.calls.append((generator, item))

    def _advance(self, actor: _Actor, call: tuple[Any, dict[str, Any]], queue: deque,
                 on_row: Callable[[Mapping[str, Any]], None]) -> None:
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        generator = call[0]
        try:
            ref = next(generator)
            row = ray.get(ref)
        except StopIteration:
            actor.calls.remove(call)
            return
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            self._actor_died(actor, queue, exc)
            return
        on_row(row)

    def _actor_died(self, actor: _Actor, queue: deque, exc: BaseException) -> None:
        """Requeue the actor's unfinished slides and wait until Ray has restarted it."""
        import ray
        from ray.exceptions import RayActorError

        calls, actor.calls = list(actor.calls), deque()
        for _, item in calls:
            sid = item["slide_id"]
            self._requeues[sid] = self._requeues.get(sid, 0) + 1
            if self._requeues[sid] > _MAX_REQUEUES:
                raise RuntimeError(f"slide {sid} was requeued {_MAX_REQUEUES} times after worker "
                                   "deaths; the worker pool cannot run") from exc
        log.warning("a fused worker died (%s); %d slide(s) requeued", type(exc).__name__, len(calls))
        queue.extendleft(reversed([item for _, item in calls]))
        # Calls sent while Ray restarts the actor fail at once; wait until it answers, so
        # the requeued slides are not bounced straight back.
        deadline = time.monotonic() + _RESTART_WAIT_S
        while True:
            try:
                ray.get(actor.handle.ready.remote(), timeout=_RESTART_WAIT_S)
                return
            except (RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

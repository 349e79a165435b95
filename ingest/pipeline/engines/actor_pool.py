"""Driver side of the one-actor-per-slot engines: hand slides to stage actors, collect rows.

(Formerly ``ingest.pipeline.fused_runner.FusedPool``: it drives the device engine too.)

Used by the fused CPU engine (:class:`~ingest.pipeline.fused_stage.FusedStage`, one per
core) and the GPU-resident engine (:class:`~ingest.pipeline.device_stage.DeviceStage`,
one per GPU). Each actor gets one slide per call; every actor gets a slide before any
gets a second call in flight (which saves it the wait for the driver between slides),
and the last slides go to whichever actor finishes first, which balances slides of
different sizes (:func:`next_actor`). Rows stream back as Ray
generator items.

Crashes: an actor that dies mid-slide (a segfault in native decoding, an OOM kill, its
node lost) is restarted by Ray, and its unfinished slides go back to the front of the
queue with the same ``write_id`` (the collector keeps one copy of each batch, so a slide
half-delivered before the crash is never duplicated). The surviving actors take them at
once; the dead actor rejoins only after it answers a probe. Waiting for it instead
(the first version) failed after a node loss: the replacement actor stays pending while
the surviving nodes are full, and slides resubmitted to it died a second time, which
the ledger then counted as a poison slide. Which slide killed its worker is counted by
the attempt ledger the Ray Data engine uses (a read registered as begun but never
finished); after :data:`MAX_CRASHES` the read stage records the slide as failed
(``SlideCrashError``) instead of reading it again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorPool", "next_actor"]

log = logging.getLogger(__name__)

_IN_FLIGHT = 2
#: resubmissions of one slide after actor deaths it was not running for (e.g. a neighbour's
#: crash, a node loss) before the run gives up: a guard against a pool that cannot start
_MAX_REQUEUES = 8
#: how long the whole pool may be without a live actor (every actor dead or restarting)
_RESTART_WAIT_S = 300.0
_PROBE_EVERY_S = 1.0


@dataclass
class _Actor:
    handle: Any
    calls: deque = field(default_factory=deque)  # (generator, item) in submission order
    #: after a death, until it answers a ``ready()`` probe: no slides for it
    restarting: bool = False
    probe: Any = None  # the pending probe, if one is out
    retry_at: float = 0.0  # when to send the next probe after a failed one
    died_at: float = 0.0


def next_actor(actors: list[_Actor], waiting: int) -> _Actor | None:
    """The actor the next of ``waiting`` queued slides goes to, or None to keep it queued.

    Breadth first: an actor with no slide before a second call to a busy one. A second
    call only hides the driver's round trip between slides, so it is handed out only
    while at least as many slides wait as there are actors; the last ones go to
    whichever actor frees first. (Filling each actor to two calls in turn gave both
    slides of a 2-slide run to the first actor while the second idled: 0.68x slide2vec,
    benchmarks/results/peers_vit_two.json.)"""
    live = [a for a in actors if not a.restarting]
    if not live:
        return None
    actor = min(live, key=lambda a: len(a.calls))  # the first of the least busy
    if len(actor.calls) >= _IN_FLIGHT or (actor.calls and waiting < len(live)):
        return None
    return actor


class ActorPool:
    """A pool of stage actors fed from a queue of slide items (dicts with ``slide_id``).

    ``stage`` is the actor class (it needs ``ready()`` and a generator ``run(item)``),
    ``resources`` its Ray resources (``num_cpus``, ``num_gpus``). ``before_fill`` sees the
    queue before items are handed out (the GPU engine starts planning tasks ahead there).
    GPU actors get slides only once they answer ``ready()``: a pool sized for GPUs the
    autoscaler is still bringing (their pending actors are the demand it scales for)
    grows as they join, and no slide waits on an actor whose node may never come.
    """

    def __init__(
        self,
        stage: type,
        n_actors: int,
        resources: Mapping[str, float],
        constructor: Mapping[str, Any],
        before_fill: Callable[[deque], None] = lambda queue: None,
    ) -> None:
        import ray

        remote: Any = ray.remote(stage).options(
            num_cpus=resources.get("num_cpus", 1.0),
            num_gpus=resources.get("num_gpus", 0.0),
            max_restarts=-1,
            max_task_retries=0,
        )
        self._actors = [_Actor(remote.remote(**constructor)) for _ in range(n_actors)]
        if resources.get("num_gpus", 0.0) > 0:  # the gate of an actor Ray is restarting
            now = time.monotonic()
            for actor in self._actors:
                actor.restarting, actor.died_at = True, now
                actor.probe = actor.handle.ready.remote()
        self._requeues: dict[str, int] = {}
        self._before_fill = before_fill

    def run(
        self,
        items: list[dict[str, Any]],
        on_row: Callable[[Mapping[str, Any]], None],
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        """Process every item; ``on_row`` gets each post-write row, ``on_tick`` runs at
        least once a second (a live progress display)."""
        import ray

        queue = deque(items)
        try:
            self._fill(queue)
            while queue or any(a.calls for a in self._actors):
                waits = {id(c[0]): (a, c) for a in self._actors for c in a.calls}
                probes = {id(a.probe): a for a in self._actors if a.probe is not None}
                refs = [c[0] for _, c in waits.values()] + [a.probe for a in probes.values()]
                if refs:
                    ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                else:  # every actor restarting between probes
                    ready = []
                    time.sleep(0.2)
                on_tick()
                for ref in ready:
                    if id(ref) in probes:
                        self._probed(probes[id(ref)])
                    else:
                        self._advance(*waits[id(ref)], queue, on_row)
                self._reprobe()
                self._fill(queue)
        finally:
            for actor in self._actors:
                ray.kill(actor.handle)  # a shared cluster would otherwise keep them

    def _fill(self, queue: deque) -> None:
        self._before_fill(queue)
        while queue and (actor := next_actor(self._actors, len(queue))) is not None:
            item = queue.popleft()
            generator = actor.handle.run.options(num_returns="streaming").remote(item)
            actor.calls.append((generator, item))

    def _advance(
        self,
        actor: _Actor,
        call: tuple[Any, dict[str, Any]],
        queue: deque,
        on_row: Callable[[Mapping[str, Any]], None],
    ) -> None:
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
        """Requeue the actor's unfinished slides in front; probe it until Ray has restarted it."""

        calls, actor.calls = list(actor.calls), deque()
        for _, item in calls:
            sid = item["slide_id"]
            self._requeues[sid] = self._requeues.get(sid, 0) + 1
            if self._requeues[sid] > _MAX_REQUEUES:
                raise RuntimeError(
                    f"slide {sid} was requeued {_MAX_REQUEUES} times after worker "
                    "deaths; the worker pool cannot run"
                ) from exc
        log.warning("a worker died (%s); %d slide(s) requeued", type(exc).__name__, len(calls))
        queue.extendleft(reversed([item for _, item in calls]))
        # Calls sent while Ray restarts the actor fail at once, so it gets no slides until
        # it answers a probe; the surviving actors take the requeued slides meanwhile.
        actor.restarting, actor.died_at = True, time.monotonic()
        actor.probe = actor.handle.ready.remote()

    def _probed(self, actor: _Actor) -> None:
        """A probe answered: the actor is back, or (still restarting) probe again later."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        probe, actor.probe = actor.probe, None
        try:
            ray.get(probe)
        except (ActorUnavailableError, RayActorError):
            actor.retry_at = time.monotonic() + _PROBE_EVERY_S
            return
        actor.restarting = False
        log.info(
            "a worker answers; %d of %d take slides",
            sum(not a.restarting for a in self._actors),
            len(self._actors),
        )

    def _reprobe(self) -> None:
        now = time.monotonic()
        for actor in self._actors:
            if actor.restarting and actor.probe is None and now >= actor.retry_at:
                actor.probe = actor.handle.ready.remote()
        if all(a.restarting for a in self._actors):
            since = min(now - a.died_at for a in self._actors)
            if since > _RESTART_WAIT_S:
                raise RuntimeError(
                    f"no worker of the pool has answered for {since:.0f} s; "
                    "the cluster cannot run its actors"
                )

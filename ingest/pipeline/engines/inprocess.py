"""The in-process engine: small jobs without waiting for Ray.

Starting Ray (GCS, raylet, agents, one worker per actor, a model load in each) takes 10-15 s
on a laptop, while reading and encoding a small slide takes a second or two: for a few
slides the start-up is almost the whole run. With no cluster to use, the driver runs the
fused engine's stage (:class:`~ingest.pipeline.fused_stage.FusedStage`: the same
``read_slides`` → ``EncodeStage`` → ``write_batches``) itself, one slide after another,
and hands every post-write row to the same :class:`~ingest.pipeline.collector.
SlideCollector`: the same tiles and rows, the same invisible fragments committed in
groups by the driver, only no other process. The model loads in a thread while the first
slide is planned, as in a fused actor.

``--engine auto`` picks it (:func:`use_inprocess`) when all of these hold: no cluster is
named or running (``--address``, ``RAY_ADDRESS``, ``slidebank cluster up``) and Ray is not
already up in this process; at most :data:`MAX_SLIDES` slides to do, all local files; no
GPU autoscaling asked for.

The rule counts slides, not tiles. Here the encoder gets every core's threads, so the
tiles cost the same in either engine; what the fused actors add is planning and reading
several slides at once (about 3.5 s per 8192² slide on 2 cores), and what they cost is
Ray's start-up (10-17 s to the first tile, against 3 s here). Two 8192² ViT-S slides on
2 cores took 49.4 s in-process and 57.0 s on fused actors; the earlier cap of 2,000 grid
tiles sent them to Ray. With more slides the actors' parallel planning pays back the
start-up.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from infra.storage import is_local
from ingest.pipeline import _faults
from ingest.pipeline.config import RunOptions
from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.engines.fused import fused_constructor
from ingest.pipeline.fused_stage import FusedStage
from ingest.pipeline.sources import SlideSource

__all__ = ["MAX_SLIDES", "InProcessEngine", "head_start", "use_inprocess"]

log = logging.getLogger(__name__)

#: at most this many slides to do for ``auto`` to run in-process
MAX_SLIDES = 4


def use_inprocess(options: RunOptions, todo: Sequence[SlideSource]) -> bool:
    """Whether this run goes without Ray (see the module docstring for the rule)."""
    if options.engine != "auto":
        return options.engine == "inprocess"
    if _cluster_available(options) or options.max_gpus is not None or _kills_workers():
        return False
    return len(todo) <= MAX_SLIDES and all(is_local(s.uri) for s in todo)


def head_start(options: RunOptions, todo: Sequence[SlideSource]) -> int:
    """How many of ``todo`` (its first, or none) the driver runs itself while the
    embedded Ray it is about to start boots in the background.

    Ray's start-up (GCS, raylet, agents, then each actor's imports and model load) takes
    10-17 s on 2 cores before the first tile; during it the driver can already plan,
    read, encode and stage the first slide with the in-process engine, so a user sees
    tiles within seconds and the start-up overlaps useful work. Only where the run
    starts its own CPU Ray (no cluster, no GPU: the fused engine follows), with the
    first slide a local file, and never under a fault plan that kills workers."""
    if options.engine not in ("auto", "fused") or len(todo) <= MAX_SLIDES:
        return 0
    if _cluster_available(options) or options.max_gpus is not None or _kills_workers():
        return 0
    from infra.arrays import cuda_driver_absent

    on_cpu = options.device == "cpu" or cuda_driver_absent()
    return 1 if on_cpu and is_local(todo[0].uri) else 0


def _cluster_available(options: RunOptions) -> bool:
    from infra.local_cluster import resolve_address

    ray = sys.modules.get("ray")  # never imported just to ask: that alone costs a second
    return resolve_address(options.address) is not None or bool(ray and ray.is_initialized())


def _kills_workers() -> bool:
    """A test's fault plan that kills read workers needs workers to kill."""
    plan = _faults.active()
    return plan is not None and bool(plan.exit_once_slide or plan.exit_always_slide)


class InProcessEngine(Engine):
    """The fused stage in this process, one slide after another (no Ray)."""

    name = "inprocess"

    def run(self, ctx: RunContext) -> None:
        stage = FusedStage(**fused_constructor(ctx, None, _cores(), device=ctx.options.device))
        for item in ctx.items():
            for row in stage.run(item):
                ctx.on_row(row)
                ctx.progress.tick()


def _cores() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)

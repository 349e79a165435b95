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
already up in this process; at most :data:`MAX_SLIDES` slides to do, all local files, whose
tile grids (an upper bound on the planned tiles, from their size and resolution) add up
to at most :data:`MAX_TILES`; no GPU autoscaling asked for. Beyond that the fused actors'
parallelism (one slide per core) pays for Ray's start-up.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from infra.errors import SlidebankError
from infra.storage import is_local
from ingest.pipeline import _faults
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.engines.fused import fused_constructor
from ingest.pipeline.fused_stage import FusedStage
from ingest.pipeline.sources import SlideSource

__all__ = ["MAX_SLIDES", "MAX_TILES", "InProcessEngine", "grid_tiles", "use_inprocess"]

log = logging.getLogger(__name__)

#: at most this many slides to do for ``auto`` to run in-process
MAX_SLIDES = 4
#: and at most this many tiles in their grids (about 2 minutes of ViT-S on two CPU cores,
#: against the 10-15 s Ray's start-up costs; the weight-free encoder does it in seconds)
MAX_TILES = 2000


def use_inprocess(
    options: RunOptions,
    todo: Sequence[SlideSource],
    config: IngestConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Whether this run goes without Ray (see the module docstring for the rule)."""
    if options.engine != "auto":
        return options.engine == "inprocess"
    if _cluster_available(options) or options.max_gpus is not None or _kills_workers():
        return False
    if len(todo) > MAX_SLIDES or not all(is_local(s.uri) for s in todo):
        return False
    return sum(grid_tiles(s, config, storage_options) for s in todo) <= MAX_TILES


def _cluster_available(options: RunOptions) -> bool:
    from infra.local_cluster import resolve_address

    ray = sys.modules.get("ray")  # never imported just to ask: that alone costs a second
    return resolve_address(options.address) is not None or bool(ray and ray.is_initialized())


def _kills_workers() -> bool:
    """A test's fault plan that kills read workers needs workers to kill."""
    plan = _faults.active()
    return plan is not None and bool(plan.exit_once_slide or plan.exit_always_slide)


def grid_tiles(
    source: SlideSource, config: IngestConfig, storage_options: Mapping[str, Any] | None = None
) -> int:
    """Tiles in the slide's full grid at the target resolution (the planned tiles are those
    over tissue, so never more); 0 for a slide that does not open or has no resolution:
    it fails in the run, at no cost."""
    from ingest.slides import open_slide

    tiling = config.tiling
    try:
        with open_slide(
            source.uri,
            storage_options=storage_options,
            mpp=source.mpp,
            device="cpu",
            require_mpp=False,
        ) as slide:
            (width, height), mpp = slide.metadata.dimensions, slide.metadata.mpp
    except (SlidebankError, OSError, ValueError) as exc:
        log.debug("%s: no tile estimate (%s)", source.slide_id, exc)
        return 0
    if not mpp:
        return 0
    stride_um = tiling.tile_size * (1.0 - tiling.overlap) * tiling.target_mpp
    return math.ceil(width * mpp / stride_um) * math.ceil(height * mpp / stride_um)


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

"""The GPU-resident engine: planning tasks on the CPUs, one device actor per GPU.

See :mod:`ingest.pipeline.device_stage` for the stage; the actors are driven by
:class:`~ingest.pipeline.engines.actor_pool.ActorPool`, which also lets the planning
tasks run ahead of the actors.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, cast

from ingest.pipeline.config import RunOptions
from ingest.pipeline.engines.actor_pool import ActorPool
from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.resources import DevicePlan, plan_device
from ingest.pipeline.slide_steps import slide_item

__all__ = ["DeviceEngine", "actor_cpus", "stage_kwargs"]

log = logging.getLogger(__name__)

#: the most CPUs a device actor asks for by default (its reader's decode threads)
DEFAULT_ACTOR_CPUS = 4


class DeviceEngine(Engine):
    name = "device"

    def run(self, ctx: RunContext) -> None:
        import ray

        from ingest.pipeline.device_stage import DeviceStage, plan_for_device

        config, options = ctx.config, ctx.options
        plan = plan_device(options, len(ctx.todo))
        # Any: Ray's stubs type remote functions by arity and reject keyword-only arguments.
        planner: Any = ray.remote(num_cpus=1)(cast(Any, plan_for_device))
        shared = {
            "config": ray.put(config),
            "options": ray.put(options),
            "store": ray.put(ctx.store.location),
            "storage_options": ray.put(ctx.storage_options),
        }

        def plan_ahead(queue: deque) -> None:
            # The first `planners_ahead` queued slides have a planning task; a requeued slide
            # keeps its plan. The ref sits in a list so the actor, not Ray, resolves it: a
            # planning task that died then becomes that slide's failed row.
            for item in itertools.islice(queue, plan.planners_ahead):
                if "plan" not in item:
                    item["plan"] = [planner.remote(slide_item(item), **shared)]

        cpus = actor_cpus(options, plan, ray.nodes())
        pool = ActorPool(
            DeviceStage,
            plan.actors,
            {"num_cpus": cpus, "num_gpus": plan.gpus_per_actor},
            stage_kwargs(ctx, plan.device, read_threads=max(1, int(cpus))),
            before_fill=plan_ahead,
        )
        # Plain dicts: the planning-ahead hook adds each item's ``plan``.
        pool.run([dict(item) for item in ctx.items()], ctx.on_row, on_tick=ctx.progress.tick)


def actor_cpus(options: RunOptions, plan: DevicePlan, nodes: Iterable[Mapping[str, Any]]) -> float:
    """CPUs one device actor asks Ray for; its reader decodes with that many threads.

    ``options.cpus_per_device_actor`` when set (at most the largest node's CPUs, or the
    actor could never start); with GPUs, min(4, the fewest CPUs per GPU
    on a live GPU node of ``nodes`` (``ray.nodes()``)), so every GPU's actor fits its
    node; 1 while no GPU node has joined (GPUs from zero: the nodes are not known yet).
    Without GPUs (the NumPy stand-in) the plan's share of a core."""
    live = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if plan.gpus_per_actor:
        live = [r for r in live if float(r.get("GPU", 0)) > 0]
    if options.cpus_per_device_actor is not None:
        asked = float(options.cpus_per_device_actor)
        largest = max((float(r.get("CPU", 0)) for r in live), default=asked)
        if asked > largest >= 1:  # Ray would never place the actor: wait forever
            log.warning(
                "cpus_per_device_actor=%g: no node has that many CPUs; asking for %g",
                asked,
                largest,
            )
            return largest
        return asked
    if not plan.gpus_per_actor:
        return plan.cpus_per_actor
    per_gpu = [float(r.get("CPU", 0)) / float(r["GPU"]) for r in live]
    if not per_gpu:
        return plan.cpus_per_actor
    return float(max(1, min(DEFAULT_ACTOR_CPUS, int(min(per_gpu) * plan.gpus_per_actor))))


def stage_kwargs(ctx: RunContext, device: str, read_threads: int = 1) -> dict[str, Any]:
    """What each :class:`~ingest.pipeline.device_stage.DeviceStage` actor is built with.
    The encoder's own batch size is the stage's ``encode_batch`` (the stage sets it);
    ``read_threads``: the actor's CPUs, its reader's decode threads."""
    config, options = ctx.config, ctx.options
    return {
        "config": config,
        "options": options,
        "storage_options": ctx.storage_options,
        "encoder_kwargs": {
            "encoder": config.encoder,
            "weights": config.weights,
            "cpu_dtype": options.cpu_dtype,
            "runtime": options.runtime,
        },
        "write_kwargs": ctx.write_kwargs(),
        "device": device,
        "encode_batch": options.encode_batch,
        "pool_fraction": options.device_pool_fraction,
        "fragment_tiles": options.device_fragment_tiles,
        "compile": options.device_compile,
        "read_threads": read_threads,
    }

"""The fused CPU engine: one actor per core reads, encodes and writes a slide.

Fewest processes, and no pixels through the object store (see
:mod:`ingest.pipeline.fused_stage`); the actors are driven by
:class:`~ingest.pipeline.engines.actor_pool.ActorPool`.
"""

from __future__ import annotations

from typing import Any

from ingest.pipeline import _faults
from ingest.pipeline.attempts import new_ledger
from ingest.pipeline.engines.actor_pool import ActorPool
from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.fused_stage import FusedStage
from ingest.pipeline.resources import plan_fused

__all__ = ["FusedEngine", "fused_constructor"]


class FusedEngine(Engine):
    name = "fused"

    def run(self, ctx: RunContext) -> None:
        import ray

        plan = plan_fused(ctx.options, len(ctx.todo))
        ledger, ledger_name = new_ledger()  # counts which slide killed its worker (see attempts.py)
        constructor = fused_constructor(ctx, ledger_name, plan.threads_per_actor, device="cpu")
        pool = ActorPool(FusedStage, plan.actors, {"num_cpus": plan.cpus_per_actor}, constructor)
        try:
            pool.run([dict(item) for item in ctx.items()], ctx.on_row, on_tick=ctx.progress.tick)
        finally:
            ray.kill(ledger)  # on a shared cluster it would otherwise live as long as the driver


def fused_constructor(
    ctx: RunContext, ledger: str | None, threads: int, device: str
) -> dict[str, Any]:
    """:class:`FusedStage`'s arguments (the fused actors' and the in-process engine's)."""
    config, options = ctx.config, ctx.options
    return {
        "read_kwargs": {
            "config": config,
            "options": options,
            "store": ctx.store.location,
            "storage_options": ctx.storage_options,
            "ledger": ledger,
            "faults": _faults.active(),
        },
        "encoder_kwargs": {
            "encoder": config.encoder,
            "weights": config.weights,
            "device": device,
            "batch_size": options.tiles_per_batch,
            "num_threads": threads,
            "cpu_dtype": options.cpu_dtype,
            "runtime": options.runtime,
        },
        "write_kwargs": ctx.write_kwargs(),
    }

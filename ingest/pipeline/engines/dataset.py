"""The Ray Data engine (on request): actor pools read → encode → write.

Every stage is a pool of long-lived actors (see :class:`~ingest.pipeline.read_stage.
ReadStage` for why). Ray restarts a dead actor and retries its task; the attempt ledger
stops that for a slide that kills its reader every time. Application errors never reach
Ray: the read stage turns them into failed rows.
"""

from __future__ import annotations

from typing import Any

from ingest.pipeline import _faults
from ingest.pipeline.attempts import new_ledger
from ingest.pipeline.encode_stage import EncodeStage
from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.read_stage import ReadStage
from ingest.pipeline.resources import plan_resources
from ingest.pipeline.write_stage import WriteStage

__all__ = ["DatasetEngine", "slides_per_task"]


class DatasetEngine(Engine):
    name = "dataset"

    def run(self, ctx: RunContext) -> None:
        import ray

        data = ray.data.DataContext.get_current()
        saved = data.enable_progress_bars, data.target_max_block_size
        data.enable_progress_bars = False  # our own progress display is on the driver
        # Blocks of at most 16 MiB (about 80 tiles of 256² px): a read task then hands its
        # batches on as it reads instead of holding up to the default 128 MiB, so encoding a
        # slide overlaps with reading it, and memory per reader stays small.
        data.target_max_block_size = 16 << 20
        try:
            _stream(ray, ctx)
        finally:
            data.enable_progress_bars, data.target_max_block_size = saved


def _stream(ray: Any, ctx: RunContext) -> None:
    config, options = ctx.config, ctx.options
    plan = plan_resources(options)
    items = ctx.items()
    location = ctx.store.location
    ledger, ledger_name = new_ledger()
    per_task = options.slides_per_task or slides_per_task(len(items), plan.readers)
    blocks = -(-len(items) // per_task)
    # No pool larger than its inputs: every read task yields at least one block, so no
    # stage receives fewer than ``blocks`` inputs, and a bigger pool would start idle actors.
    ds: Any = ray.data.from_items(list(items), override_num_blocks=blocks)
    ds = ds.map_batches(
        ReadStage,
        batch_size=per_task,
        num_cpus=plan.cpus_per_reader,
        compute=ray.data.ActorPoolStrategy(size=min(plan.readers, blocks)),
        fn_constructor_kwargs={
            "config": config,
            "options": options,
            "store": location,
            "storage_options": ctx.storage_options,
            "ledger": ledger_name,
            "faults": _faults.active(),
        },
    )
    ds = ds.map_batches(
        EncodeStage,
        batch_size=None,
        num_cpus=plan.cpus_per_encoder,
        num_gpus=plan.gpus_per_encoder,
        compute=ray.data.ActorPoolStrategy(size=min(plan.encoder_actors, blocks)),
        fn_constructor_kwargs={
            "encoder": config.encoder,
            "weights": config.weights,
            "device": options.device,
            "batch_size": options.tiles_per_batch,
            "num_threads": None if plan.gpus_per_encoder else 1,
            "cpu_dtype": options.cpu_dtype,
            "runtime": options.runtime,
        },
    )
    ds = ds.map_batches(
        WriteStage,
        batch_size=1,
        num_cpus=plan.cpus_per_writer,
        compute=ray.data.ActorPoolStrategy(size=min(plan.writers, blocks)),
        fn_constructor_kwargs=ctx.write_kwargs(),
    )
    try:
        for row in ds.iter_rows():
            ctx.on_row(row)
    finally:
        ray.kill(ledger)  # on a shared cluster it would otherwise live as long as the driver


def slides_per_task(n_slides: int, readers: int) -> int:
    """Several slides per read task once there are plenty: each task costs Ray Data tens of
    milliseconds of scheduling, as much as reading a small slide. Eight tasks per reader
    still balance the load at the end of the run; more than 8 slides per task would make
    a retried task redo too much."""
    return max(1, min(8, n_slides // (8 * max(readers, 1))))

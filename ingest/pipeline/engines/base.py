"""The engine contract: :class:`Engine` runs a :class:`RunContext`'s slides.

An engine turns the run's slides into post-write rows (one per stored tile batch, or a
slide's failed or empty row) and hands each to :meth:`RunContext.on_row`; the runner
chose the engine, started Ray where one is needed, made the context (with the slides'
write ids and the collector that commits them), and after :meth:`Engine.run` flushes the
collector and gathers the outcomes. The per-slide steps an engine's workers run are
:mod:`ingest.pipeline.slide_steps`; the engines differ only in where they run them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ingest.pipeline.slide_steps import SlideItem, slide_items

if TYPE_CHECKING:
    from features.store import FeatureStore
    from features.store.location import StoreLocation
    from ingest.pipeline.collector import SlideCollector
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.progress import Progress
    from ingest.pipeline.result import IngestResult
    from ingest.pipeline.sources import SlideSource

__all__ = ["Engine", "RunContext", "write_kwargs"]


@dataclass(frozen=True)
class RunContext:
    """Everything an engine needs for one run (the slides to do and where their rows go)."""

    todo: Sequence[SlideSource]
    store: FeatureStore
    config: IngestConfig
    options: RunOptions
    storage_options: Mapping[str, Any] | None
    config_hash: str
    result: IngestResult
    progress: Progress
    write_ids: Mapping[str, str]
    collector: SlideCollector

    def items(self) -> list[SlideItem]:
        return slide_items(self.todo, self.write_ids)

    def write_kwargs(self) -> dict[str, Any]:
        return write_kwargs(self.store.location, self.config, self.config_hash)

    def on_row(self, row: Mapping[str, Any]) -> None:
        """One post-write row from a worker: collected (committed in groups), shown."""
        runtime = row.get("runtime")
        if runtime and str(runtime) not in self.result.runtimes:
            self.result.runtimes.append(str(runtime))
        outcome = self.collector.add(row)
        self.progress.batch(int(row.get("n_tiles") or 0))
        if outcome is not None:
            self.progress.slide(outcome)


class Engine(ABC):
    """Runs every slide of a :class:`RunContext` through the per-slide steps."""

    #: the ``--engine`` name, recorded with the run
    name: ClassVar[str]

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Hand every slide's post-write rows to ``ctx.on_row``; a slide's failure is its
        failed row, never an exception."""


def write_kwargs(location: StoreLocation, config: IngestConfig, config_hash: str) -> dict[str, Any]:
    """The write stage's arguments (:func:`ingest.pipeline.write_stage.write_batches`)."""
    return {
        "store": location,
        "encoder": config.encoder_id,
        "config_hash": config_hash,
        "dtype": config.embedding_dtype,
        "tile_size": config.tiling.tile_size,
        "read_mpp": config.tiling.target_mpp,
    }

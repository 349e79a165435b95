"""The ingestion engines behind one contract (:class:`~ingest.pipeline.engines.base.Engine`).

``fused`` (one actor per core), ``device`` (CPU planning tasks, one actor per GPU),
``dataset`` (Ray Data actor pools) and ``inprocess`` (no Ray: a small local job). Which
one runs is :func:`ingest.pipeline.resources.choose_engine`'s or
:func:`~ingest.pipeline.engines.inprocess.use_inprocess`'s choice.
"""

from __future__ import annotations

from ingest.pipeline.engines.base import Engine, RunContext
from ingest.pipeline.engines.dataset import DatasetEngine
from ingest.pipeline.engines.device import DeviceEngine
from ingest.pipeline.engines.fused import FusedEngine
from ingest.pipeline.engines.inprocess import InProcessEngine

__all__ = ["ENGINES", "Engine", "RunContext", "engine"]

ENGINES: dict[str, type[Engine]] = {
    e.name: e for e in (FusedEngine, DeviceEngine, DatasetEngine, InProcessEngine)
}


def engine(name: str) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINES`)."""
    from infra.errors import ConfigError

    if name not in ENGINES:
        raise ConfigError(f"unknown ingest engine {name!r}; expected one of {sorted(ENGINES)}")
    return ENGINES[name]()

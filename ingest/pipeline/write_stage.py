"""Stage 3 (CPU tasks): write each tile batch as invisible Lance fragments.

All batches of a slide carry the ``write_id`` the driver chose for it, so a retried task
rewrites the same logical batch; the driver keeps one copy per batch index, and
fragments it never commits stay invisible until cleanup removes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from infra import metrics
from ingest.pipeline.rows import column_value

if TYPE_CHECKING:
    from features.store.location import StoreLocation

__all__ = ["WriteStage", "write_batches"]


class WriteStage:
    """Ray Data actor UDF around :func:`write_batches` (an actor for the reason given in
    :class:`ingest.pipeline.read_stage.ReadStage`: no worker churn, imports paid once)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return write_batches(batch, **self._kwargs)


def write_batches(
    batch: Mapping[str, Any],
    *,
    store: StoreLocation,
    encoder: str,
    config_hash: str,
    dtype: str,
    tile_size: int,
    read_mpp: float,
) -> dict[str, Any]:
    from features.store import SlideInfo, SlideKey, tile_batch
    from features.store.writer import write_slide

    fragments, counts, dims = [], [], []
    for i in range(len(batch["slide_id"])):
        status = str(column_value(batch, "status", i))
        embedding = np.asarray(column_value(batch, "embedding", i))
        if status != "tiles" or len(embedding) == 0:
            fragments.append("[]")
            counts.append(0)
            dims.append(0)
            continue
        start = time.perf_counter()
        sid, write_id = (
            str(column_value(batch, "slide_id", i)),
            str(column_value(batch, "write_id", i)),
        )
        tiles = tile_batch(
            column_value(batch, "x", i),
            column_value(batch, "y", i),
            embedding,
            tile_size=tile_size,
            level=int(column_value(batch, "level", i)),
            read_mpp=read_mpp,
            tissue_fraction=column_value(batch, "tissue_fraction", i),
            qc_flags=column_value(batch, "qc_flags", i),
            dtype=dtype,
        )
        # table_ready: the driver created the encoder's table (run_ingest) before any worker ran
        pending = write_slide(
            store,
            SlideKey(sid, encoder, config_hash),
            SlideInfo(source_uri=""),
            tiles,
            dtype=dtype,
            write_id=write_id,
            table_ready=True,
        )
        fragments.append(json.dumps(list(pending.fragments)))
        counts.append(pending.n_tiles)
        dims.append(int(embedding.shape[1]))
        metrics.observe_stage("write", time.perf_counter() - start)
    out = {k: v for k, v in batch.items() if k != "embedding"}
    out.update(
        fragments=np.array(fragments),
        n_tiles=np.array(counts, np.int64),
        dim=np.array(dims, np.int64),
    )
    for heavy in ("x", "y", "tissue_fraction", "qc_flags"):
        out.pop(heavy, None)  # the driver needs only what to commit
    return out

"""One actor that reads, encodes and writes a slide: the CPU-only engine.

On a node without GPUs the three Ray Data actor pools (read → encode → write) cost more
than they give: every pool is a process to start, every tile crosses the object store
twice, and on a 2-core machine seven processes compete for two cores at start-up. A
fused actor runs the same three stage functions (:func:`read_slides`,
:class:`EncodeStage`, :func:`write_batches`) in one process, one slide per call, and
streams the small post-write rows (fragment names, counts) back to the driver. Pixels
never leave the process that decoded them.

The model loads in a background thread while the first slide is opened, its tissue
mask computed, its tiles planned and its stain fitted, so model load and planning
overlap. The actor's first batch is small (``FIRST_BATCH`` tiles): with a foundation
model on CPU a full batch of 64 takes ten seconds or more, and the first stored tiles
are what tells a user the run works.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ingest.pipeline.encode_stage import EncodeStage
from ingest.pipeline.read_stage import read_slides
from ingest.pipeline.slide_steps import ITEM_KEYS
from ingest.pipeline.write_stage import write_batches

__all__ = ["FIRST_BATCH", "FusedStage", "scalar_row"]

log = logging.getLogger(__name__)

FIRST_BATCH = 8


class FusedStage:
    """read → encode → write for one slide per call (a Ray actor; also usable in-process)."""

    def __init__(
        self,
        *,
        read_kwargs: Mapping[str, Any],
        encoder_kwargs: Mapping[str, Any],
        write_kwargs: Mapping[str, Any],
    ) -> None:
        from ingest.slides.backends.cucim_reader import warm_up

        warm_up()  # load cuCIM before PyTorch in this process (see cucim_reader)
        self._read_kwargs = dict(read_kwargs)
        self._write_kwargs = dict(write_kwargs)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self._encoder: Future[EncodeStage] = self._pool.submit(EncodeStage, **encoder_kwargs)
        self._first = True

    def ready(self) -> bool:
        """Returns once the actor exists (the model may still be loading)."""
        return True

    def run(self, source: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the post-write rows of one slide (``source``: uri, slide_id, patient_id,
        mpp, write_id), one per tile batch, as plain scalars for the collector."""
        batch = {k: [source[k]] for k in ITEM_KEYS}
        first, self._first = self._first, False
        for row in read_slides(
            batch, **self._read_kwargs, first_batch=FIRST_BATCH if first else None
        ):
            encoded = self._encode(row)
            yield scalar_row(write_batches(encoded, **self._write_kwargs))

    def _encode(self, row: dict[str, Any]) -> dict[str, Any]:
        if str(row["status"][0]) == "tiles":
            return self._encoder.result()(row)
        out = {k: v for k, v in row.items() if k != "image"}  # failed/empty: no model needed
        out["embedding"] = np.zeros((1, 0, 0), np.float32)
        return out


def scalar_row(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A one-row batch as the row Ray Data's ``iter_rows`` would give."""
    return {k: (v[0].item() if isinstance(v[0], np.generic) else v[0]) for k, v in batch.items()}

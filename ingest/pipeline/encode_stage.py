"""Stage 2 (actor pool): one encoder per actor — one per GPU, or per CPU worker."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ingest.pipeline import metrics
from ingest.pipeline.rows import column_value

__all__ = ["EncodeStage"]


class EncodeStage:
    """Replaces each row's ``image`` (B, H, W, 3) with ``embedding`` (B, D) float32."""

    def __init__(self, encoder: str, weights: str | None, device: str, batch_size: int,
                 num_threads: int | None = None) -> None:
        from features.encoders import Encoder

        self._encoder = Encoder(encoder, weights=weights, device=device,  # type: ignore[arg-type]
                                batch_size=batch_size, num_threads=num_threads)
        self.dim = int(self._encoder.spec.embed_dim)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k != "image"}
        embeddings = []
        for i in range(len(batch["slide_id"])):
            tiles = np.asarray(column_value(batch, "image", i))
            if len(tiles) == 0 or str(column_value(batch, "status", i)) != "tiles":
                embeddings.append(np.zeros((0, self.dim), np.float32))
                continue
            start = time.perf_counter()
            embeddings.append(np.asarray(self._encoder(tiles), dtype=np.float32))
            metrics.observe_stage("encode", time.perf_counter() - start)
            metrics.record_tiles(len(tiles))
        out["embedding"] = _stack(embeddings)
        return out


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)  # Ray Data stores ragged rows this way
    ragged[:] = arrays
    return ragged

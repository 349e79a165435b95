"""Stage 2 (actor pool): one encoder per actor — one per GPU, or per CPU worker."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from infra import metrics
from ingest.pipeline.rows import column_value

__all__ = ["EncodeStage"]


class EncodeStage:
    """Replaces each row's ``image`` (B, H, W, 3) with ``embedding`` (B, D) float32."""

    def __init__(
        self,
        encoder: str,
        weights: str | None,
        device: str,
        batch_size: int,
        num_threads: int | None = None,
        cpu_dtype: str = "float32",
        runtime: str = "torch",
    ) -> None:
        from features.encoders import Encoder

        self._encoder = Encoder(
            encoder,
            weights=weights,
            device=device,  # type: ignore[arg-type]
            batch_size=batch_size,
            num_threads=num_threads,
            cpu_dtype=cpu_dtype,
            runtime=runtime,
        )
        self.dim = int(self._encoder.spec.embed_dim)
        #: what ran the model (torch, openvino...; see features.encoders.runtimes): each row
        #: carries it to the driver, which records it with the run
        self.runtime = str(self._encoder.provenance.get("runtime", "numpy"))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k != "image"}
        rows = [
            np.asarray(column_value(batch, "image", i))
            if str(column_value(batch, "status", i)) == "tiles"
            else None
            for i in range(len(batch["slide_id"]))
        ]
        parts = [r for r in rows if r is not None and len(r)]
        embedded = np.zeros((0, self.dim), np.float32)
        if parts:
            # One call over every row of the block: small slides give rows of a few
            # tiles, and the encoder batches best when it sees them together.
            start = time.perf_counter()
            tiles = parts[0] if len(parts) == 1 else np.concatenate(parts)
            embedded = np.asarray(self._encoder(tiles), dtype=np.float32)
            metrics.observe_stage("encode", time.perf_counter() - start)
            metrics.record_tiles(len(tiles))
        embeddings, offset = [], 0
        for r in rows:
            n = 0 if r is None else len(r)
            embeddings.append(embedded[offset : offset + n])
            offset += n
        out["embedding"] = _stack(embeddings)
        out["runtime"] = np.array([self.runtime] * len(rows))
        return out


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)  # Ray Data stores ragged rows this way
    ragged[:] = arrays
    return ragged

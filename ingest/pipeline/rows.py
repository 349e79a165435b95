"""The rows that flow through the pipeline: one tile batch of one slide per row.

Every row has the same columns, whatever its status, so Ray Data can concatenate blocks:

* ``status``: ``tiles`` (a batch of tiles), ``empty`` (the slide has no tissue tiles) or
  ``failed`` (the slide could not be processed; ``error_type``/``error_message`` say why).
* ``batch_index`` / ``n_batches``: the driver knows a slide is complete when it holds
  every batch index of the slide's ``write_id`` (retried tasks repeat indices; the
  driver keeps one copy).
* ``info_json``: the slide's allowlisted facts for the slides table (small, repeated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["column_value", "make_row"]


def make_row(
    *,
    slide_id: str,
    write_id: str,
    status: str,
    batch_index: int = 0,
    n_batches: int = 0,
    image: np.ndarray | None = None,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    level: int = 0,
    tissue_fraction: np.ndarray | None = None,
    qc_flags: np.ndarray | None = None,
    info: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
) -> dict[str, np.ndarray]:
    """One row as a Ray Data batch of length 1 (leading axis of size 1 on every column)."""
    n = 0 if x is None else len(x)
    image = np.zeros((0, 1, 1, 3), np.uint8) if image is None else image
    return {
        "slide_id": np.array([slide_id]),
        "write_id": np.array([write_id]),
        "status": np.array([status]),
        "batch_index": np.array([batch_index], np.int64),
        "n_batches": np.array([n_batches], np.int64),
        "image": image[None],
        "x": (np.zeros(0, np.int64) if x is None else np.asarray(x, np.int64))[None],
        "y": (np.zeros(0, np.int64) if y is None else np.asarray(y, np.int64))[None],
        "level": np.array([level], np.int64),
        "tissue_fraction": (
            np.zeros(n, np.float32)
            if tissue_fraction is None
            else np.asarray(tissue_fraction, np.float32)
        )[None],
        "qc_flags": (np.zeros(n, np.int32) if qc_flags is None else np.asarray(qc_flags, np.int32))[
            None
        ],
        "info_json": np.array([json.dumps(dict(info or {}), sort_keys=True, default=str)]),
        "error_type": np.array([type(error).__name__ if error else ""]),
        "error_message": np.array([str(error)[:2000] if error else ""]),
    }


def column_value(batch: Mapping[str, Any], name: str, index: int = 0) -> Any:
    """Row ``index`` of a column, whether Ray gave a stacked tensor or an object array."""
    value = batch[name][index]
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        value = value.item()
    return value

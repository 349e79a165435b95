"""One finished fold on disk: ``<root>/fold<key>/model.pt`` and ``fold.json``.

A fold's record is written by the worker that trained it (rank 0) the moment the fold
ends, so a run that Ray loses later keeps every fold it finished, and a rerun of the
same run id trains only the rest. ``fold.json`` is written last and is the commit
marker (two-phase, as everywhere in slidebank): a ``model.pt`` without it is not a
finished fold. Each record carries the hash of what decides the fold's result (training
config, labels, encoder, store, the fold's slides); a record with another hash is
stale and trained again.

``root`` is a local folder (atomic temp-file-and-rename writes) or a URI (one PUT per
file, atomic on object stores).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.files import to_json_data, write_bytes_uri

__all__ = ["FoldRecord", "config_hash", "fold_uri", "read_fold", "write_fold"]

log = logging.getLogger(__name__)

_ROW_ARRAYS = ("target", "prediction")


@dataclass
class FoldRecord:
    key: str
    config_hash: str
    uri: str  # the fold's folder (holds model.pt)
    best_score: float
    best_epoch: int
    fit_s: float
    history: list[dict[str, Any]]
    predictions: dict[str, list[dict[str, Any]]]  # set name -> per-slide rows


def config_hash(payload: Any) -> str:
    """A short stable hash of JSON-able ``payload`` (dataclasses through ``to_json_data``)."""
    text = json.dumps(to_json_data(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fold_uri(root: str, key: str) -> str:
    return f"{root.rstrip('/')}/fold{key}"


def write_fold(
    root: str,
    key: str,
    digest: str,
    state: dict[str, Any],
    metrics: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the fold's weights, then its ``fold.json`` (the marker); returns the folder."""
    import torch

    folder = fold_uri(root, key)
    buffer = io.BytesIO()
    torch.save(
        {"state_dict": state, "metrics": {k: v for k, v in metrics.items() if k != "history"}},
        buffer,
    )
    write_bytes_uri(f"{folder}/model.pt", buffer.getvalue(), storage_options)
    rows = {name: [_row_json(r) for r in part] for name, part in predictions.items()}
    record = {"fold": key, "config_hash": digest, **metrics, "predictions": rows}
    text = json.dumps(to_json_data(record), sort_keys=True, allow_nan=False)
    write_bytes_uri(f"{folder}/fold.json", text.encode(), storage_options)
    return folder


def read_fold(
    root: str, key: str, digest: str, storage_options: dict[str, Any] | None = None
) -> FoldRecord | None:
    """The finished fold ``key`` under ``root`` when its hash is ``digest``; else None."""
    folder = fold_uri(root, key)
    raw = _read_text(f"{folder}/fold.json", storage_options)
    if raw is None:
        return None
    data = json.loads(raw)
    if data.get("config_hash") != digest:
        log.warning(
            "fold %s in %s was trained with another config (hash %s, now %s): training it again",
            key,
            folder,
            data.get("config_hash"),
            digest,
        )
        return None
    predictions = {
        name: [_row_from_json(r) for r in rows] for name, rows in data["predictions"].items()
    }
    return FoldRecord(
        key,
        digest,
        folder,
        _float(data.get("best_score")),
        int(data.get("best_epoch", -1)),
        _float(data.get("fit_s")),
        list(data.get("history", [])),
        predictions,
    )


def _read_text(uri: str, storage_options: dict[str, Any] | None) -> str | None:
    from infra.storage import open_filesystem

    fs, path = open_filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read().decode()
    except FileNotFoundError:
        return None


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    # Attention maps stay out of the record: the driver recomputes them from model.pt
    # when a run asks for them.
    out = {k: v for k, v in row.items() if k not in ("attention", "coords")}
    for name in _ROW_ARRAYS:
        out[name] = np.asarray(row[name]).tolist()
    return out


def _row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in _ROW_ARRAYS:
        out[name] = np.asarray(row[name], dtype=np.float64)
    return out

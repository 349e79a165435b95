"""Tile heads over stored embeddings (scikit-learn, CPU), and the context features.

``linear``: standardised logistic regression. ``mlp``: one hidden layer (64, ReLU, early
stopping). ``context_features`` is the HiTrans idea at its simplest: a tile is
described by its own embedding and the mean embedding of its neighbours within
``hops`` grid steps (Chebyshev), so a head sees the region a tile sits in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infra.errors import ConfigError

__all__ = ["HEADS", "context_features", "fit_head", "predict_proba"]

#: scikit-learn heads over (context) features; the spatial models train in
#: training.tiles.spatial (``tile_gnn``, ``region_transformer``)
HEADS = ("linear", "mlp", "tile_gnn", "region_transformer")


def fit_head(kind: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0, c: float = 1.0) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in ("linear", "mlp"):
        raise ConfigError(f"fit_head fits linear or mlp heads, not {kind!r}")
    if len(np.unique(y)) < 2:
        raise ConfigError("a training fold has tiles of one class only; more slides or fewer folds")
    if kind == "linear":
        model = LogisticRegression(C=c, max_iter=2000)
    else:
        model = MLPClassifier(
            hidden_layer_sizes=(64,),
            alpha=1e-3,
            early_stopping=True,
            max_iter=300,
            random_state=seed,
        )
    return make_pipeline(StandardScaler(), model).fit(x, y)


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(x)[:, 1], np.float64)


def _grid_index(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from features.store.arrays import grid_from_coords

    rows, cols, _, _, _ = grid_from_coords(coords, 1)
    return rows.astype(np.int64), cols.astype(np.int64)


def context_features(
    coords: np.ndarray, embeddings: np.ndarray, slide_ids: np.ndarray, hops: int
) -> np.ndarray:
    """``[own embedding, mean of neighbours within hops]`` per tile (neighbours on the
    slide's tile grid; a tile without any uses its own embedding)."""
    if hops < 1:
        return embeddings
    out = np.empty((len(embeddings), 2 * embeddings.shape[1]), np.float32)
    for sid in np.unique(slide_ids):
        idx = np.flatnonzero(slide_ids == sid)
        out[idx] = np.concatenate(
            [embeddings[idx], _neighbour_mean(coords[idx], embeddings[idx], hops)], axis=1
        )
    return out


def _window_sums(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, hops: int) -> np.ndarray:
    """Sum of ``values`` over each tile's (2·hops+1)² window on the grid (integral image)."""
    h, w = int(rows.max()) + 1, int(cols.max()) + 1
    grid = np.zeros((h + 2 * hops + 1, w + 2 * hops + 1, values.shape[1]), np.float64)
    grid[rows + hops + 1, cols + hops + 1] = values
    integral = grid.cumsum(0).cumsum(1)
    r1, c1 = rows + 2 * hops + 1, cols + 2 * hops + 1
    return integral[r1, c1] - integral[rows, c1] - integral[r1, cols] + integral[rows, cols]


def _neighbour_mean(coords: np.ndarray, emb: np.ndarray, hops: int, chunk: int = 64) -> np.ndarray:
    """Mean embedding of the other tiles in each window; dims in chunks bound memory."""
    rows, cols = _grid_index(coords)
    count = _window_sums(rows, cols, np.ones((len(emb), 1)), hops)[:, 0] - 1.0
    out = np.empty_like(emb, dtype=np.float32)
    for start in range(0, emb.shape[1], chunk):
        part = emb[:, start : start + chunk].astype(np.float64)
        sums = _window_sums(rows, cols, part, hops) - part
        out[:, start : start + chunk] = np.where(
            count[:, None] > 0, sums / np.maximum(count, 1)[:, None], part
        )
    return out

"""Tile-level heads on the spatial models: ``tile_gnn`` and ``region_transformer``
trained on tile labels (issue 31, item 4: the HiTrans idea, a tile classified with its
neighbourhood).

Each model's ``tile_logits(x, coords)`` is its slide head applied to every tile's state
after the spatial layers: ``tile_gnn``'s message passing over the 8-neighbour grid
(``layers`` hops: the neighbourhood a tile sees), ``region_transformer``'s attention
among the tiles of each ``region`` × ``region`` block (with distance-bucket biases) and
then among regions. Here that output is trained with a per-tile cross-entropy on the
coverage labels, one slide per step, on standardised embeddings (scaler fitted on the
training tiles). Coordinates matter only through the models: shuffling them
(``TileClassifierConfig.shuffle_coords``) leaves each tile's own embedding and breaks
the neighbourhood, the control for any gain from context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SPATIAL_HEADS", "fit_predict_spatial"]

SPATIAL_HEADS = ("tile_gnn", "region_transformer")
#: small models: a few thousand tiles per fold, CPU
_OPTIONS: dict[str, dict[str, Any]] = {
    "tile_gnn": {"layers": 2, "invariant_branch": False},
    "region_transformer": {
        "region": 4,
        "tile_layers": 2,
        "region_layers": 1,
        "invariant_branch": False,
        "geometry_pools": 0,
    },
}


def _model(kind: str, in_dim: int, hidden: int, seed: int) -> Any:
    import torch

    from training.mil.models import MILConfig, build_model

    torch.manual_seed(seed)
    cfg = MILConfig(
        model=kind,
        in_dim=in_dim,
        n_outputs=2,
        hidden=hidden,
        attn_dim=min(32, hidden),
        dropout=0.1,
        n_heads=4,
        options=dict(_OPTIONS[kind]),
    )
    return build_model(cfg)


def fit_predict_spatial(
    kind: str,
    x: np.ndarray,
    coords: np.ndarray,
    slide_id: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 3e-3,
    hidden: int = 32,
) -> np.ndarray:
    """P(positive) for the tiles ``test`` (indices), from a ``kind`` model trained on the
    tiles ``train``; a slide's tiles are always all in one of them (patient folds)."""
    import torch

    mean = x[train].mean(0)
    std = x[train].std(0) + 1e-6
    z = ((x - mean) / std).astype(np.float32)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few thousand tiles: one thread is fastest, and shares CPUs
    try:
        return _fit_predict(kind, z, coords, slide_id, y, train, test, seed, epochs, lr, hidden)
    finally:
        torch.set_num_threads(threads)


def _fit_predict(
    kind: str,
    z: np.ndarray,
    coords: np.ndarray,
    slide_id: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
    epochs: int,
    lr: float,
    hidden: int,
) -> np.ndarray:
    import torch
    from torch.nn import functional

    def bags(idx: np.ndarray) -> list[tuple[Any, Any, Any, np.ndarray]]:
        out = []
        for sid in dict.fromkeys(slide_id[idx].tolist()):
            rows = idx[slide_id[idx] == sid]
            out.append(
                (
                    torch.from_numpy(z[rows]),
                    torch.from_numpy(coords[rows].astype(np.float32)),
                    torch.from_numpy(y[rows].astype(np.int64)),
                    rows,
                )
            )
        return out

    model = _model(kind, z.shape[1], hidden, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    train_bags = bags(np.asarray(train))
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        for i in rng.permutation(len(train_bags)):
            emb, xy, labels, _ = train_bags[i]
            loss = functional.cross_entropy(model.tile_logits(emb, xy), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    probs = np.full(len(z), np.nan)
    with torch.no_grad():
        for emb, xy, _, rows in bags(np.asarray(test)):
            probs[rows] = torch.softmax(model.tile_logits(emb, xy), dim=1)[:, 1].numpy()
    return np.asarray(probs[np.asarray(test)], np.float64)

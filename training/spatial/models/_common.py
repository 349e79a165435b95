"""Shared pieces of the spatial models: option parsing, coordinate checks, pooling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from infra.content_cache import ContentCache
from infra.errors import ConfigError
from training.mil.models import GatedAttention, MILConfig
from training.spatial.graphs import GraphSpec, tile_graph

__all__ = [
    "InvariantBranch",
    "drop_tiles",
    "edges_for",
    "fit_transform",
    "options",
    "require_coords",
]


def options(
    cfg: MILConfig, defaults: dict[str, Any], choices: dict[str, tuple[Any, ...]] | None = None
) -> dict[str, Any]:
    """``cfg.options`` over ``defaults``; unknown keys, and values outside ``choices``, are a
    one-line ConfigError naming the model, the option and what is allowed."""
    unknown = set(cfg.options) - set(defaults)
    if unknown:
        raise ConfigError(
            f"model {cfg.model!r}: unknown option(s) {sorted(unknown)}; known: {sorted(defaults)}"
        )
    out = {**defaults, **cfg.options}
    for key, allowed in (choices or {}).items():
        if out[key] not in allowed:
            raise ConfigError(
                f"model {cfg.model!r}: option {key}={out[key]!r} is not one of {list(allowed)}"
            )
    return out


def require_coords(model: str, x: Tensor, coords: Tensor | None) -> Tensor:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"a bag must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
    if coords is None:
        raise ConfigError(f"model {model!r} needs the tiles' coordinates (coords=...)")
    if coords.shape != (x.shape[0], 2):
        raise ConfigError(
            f"model {model!r}: coords {tuple(coords.shape)} do not match {x.shape[0]} tiles"
        )
    return coords


# Edge indices by (coordinates, graph spec) content: a slide's graph depends on its
# coordinates only, and training rebuilt it for every slide in every epoch. Bounded (an
# entry is 2 x E int64, ~30 KB for a 250-tile slide).
_EDGE_CACHE: ContentCache[np.ndarray] = ContentCache(4096)


def _tile_edges(coords: np.ndarray, spec: GraphSpec) -> np.ndarray:
    def compute() -> np.ndarray:
        index = np.stack(tile_graph(coords, spec)).astype(np.int64, copy=False)
        index.setflags(write=False)
        return index

    return _EDGE_CACHE.get(ContentCache.key(coords, spec), compute)


def edges_for(
    coords: Tensor,
    spec: GraphSpec,
    edges: tuple[Any, Any] | None,
    device: torch.device,
    *,
    cache: bool = True,
) -> Tensor:
    """(2, E) long edge index: the given edges, or the tile graph built from ``coords``
    (looked up by the coordinates' content unless ``cache`` is off: tiles dropped at
    random give a new graph every time)."""
    if edges is None:
        xy = coords.detach().cpu().numpy()
        if cache:
            # a copy: the cached array is shared and read-only
            return torch.from_numpy(_tile_edges(xy, spec).copy()).to(device)
        edges = tile_graph(xy, spec)
    src, dst = (np.asarray(e.cpu() if isinstance(e, Tensor) else e, dtype=np.int64) for e in edges)
    return torch.from_numpy(np.stack([src, dst])).to(device)


class InvariantBranch(nn.Module):
    """ABMIL on the tiles alone: the composition path, blind to arrangement by design."""

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(cfg.in_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        self.attention = GatedAttention(cfg.hidden, cfg.attn_dim, 1, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.n_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.embed(x)
        a = torch.softmax(self.attention(h), dim=1)
        return self.head((a @ h).squeeze(0)), a.squeeze(0)


def fit_transform(model: nn.Module, train_data: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Fit ``model.transform`` (a TileTransform) on the training bags; returns the bags
    (slide, transformed embeddings, coords) for whatever the model fits next."""
    from training.spatial.preprocess import TileTransform

    transform = model.transform
    if not isinstance(transform, TileTransform):
        raise ConfigError(f"{type(model).__name__}.transform is not a TileTransform")
    bags = [(item.slide_id, *train_data.read(item.slide_id)) for item in train_data.items]
    transform.fit([emb for _, emb, _ in bags])
    return [(sid, transform.transform(emb), coords) for sid, emb, coords in bags]


def drop_tiles(x: Tensor, coords: Tensor, p: float, training: bool) -> tuple[Tensor, Tensor]:
    """Training-time augmentation that keeps the label: drop a random share ``p`` of the
    tiles (at least one is kept); the graph is then rebuilt from the remaining tiles."""
    if not training or p <= 0 or len(x) < 2:
        return x, coords
    keep = torch.rand(len(x), device=x.device) >= p
    if not bool(keep.any()):
        keep[torch.randint(len(x), (1,), device=x.device)] = True
    return x[keep], coords[keep]

"""``tile_gnn``: message passing over the tile grid (Patch-GCN-like), plus an order-blind branch.

Tiles are nodes (embeddings in, linear to ``hidden``); edges are the exact grid
neighbourhood (or kNN) built from coordinates. ``layers`` residual GIN / GCN / GAT
layers from torch_geometric, the layer outputs concatenated (jumping knowledge) and
pooled with gated attention. An ABMIL branch over the raw tiles is summed at the
logits: the spatial-blindness result (arXiv 2605.17449) is that graph models often
collapse onto composition anyway, so composition gets its own path and the graph
branch is free to model arrangement; the coordinate-shuffle test checks it does.

Sum/mean aggregation over an edge *set* makes the output invariant to rotations, flips
and translations of the coordinates (the grid edges are the same set).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from infra.errors import ConfigError
from training.mil.models import GatedAttention, MILConfig, MILOutput, register_model
from training.spatial.graphs import GraphSpec
from training.spatial.models._common import (
    InvariantBranch,
    drop_tiles,
    edges_for,
    fit_transform,
    options,
    require_coords,
)
from training.spatial.models.module_stats import StatsReadout
from training.spatial.modules import ModuleSpec, fit_modules
from training.spatial.preprocess import TileTransform

__all__ = ["TileGNN"]

DEFAULTS: dict[str, Any] = {
    "conv": "gin",
    "layers": 2,
    "graph": "grid8",
    "k": 8,
    "invariant_branch": True,
    "centre": False,
    "whiten": False,
    "project": 0,
    "tile_dropout": 0.0,
    "nodes": "embedding",
    "modules": 8,
    "module_seed": 0,
    "stats_readout": False,
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "conv": ("gin", "gcn", "gat"),
    "graph": ("grid8", "grid4", "knn", "radius"),
    "nodes": ("embedding", "modules"),
}


def _conv(kind: str, dim: int, heads: int) -> nn.Module:
    from torch_geometric.nn import GATConv, GCNConv, GINConv

    if kind == "gin":
        return GINConv(
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)), train_eps=True
        )
    if kind == "gcn":
        return GCNConv(dim, dim, add_self_loops=True, normalize=True)
    if kind == "gat":
        return GATConv(dim, dim // heads, heads=heads, add_self_loops=True)
    raise ConfigError(f"tile_gnn conv must be gin, gcn or gat, got {kind!r}")


class TileGNN(nn.Module):
    centroids: Tensor
    modules_fitted: Tensor
    uses_coords = True

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.cfg = cfg
        opts = options(cfg, DEFAULTS, CHOICES)
        if int(opts["layers"]) < 1:
            raise ConfigError(
                f"model 'tile_gnn': option layers must be >= 1, got {opts['layers']!r}"
            )
        if int(opts["project"]) < 0 or not 0.0 <= float(opts["tile_dropout"]) < 1.0:
            raise ConfigError(
                f"model 'tile_gnn': project must be >= 0 and tile_dropout in [0, 1), got {opts}"
            )
        # ``project``: a narrow tile projection, so message passing has fewer weights to
        # memorise the training slides with (the nodes' width is ``project``, not ``hidden``).
        width = int(opts["project"]) or cfg.hidden
        if opts["conv"] == "gat" and width % cfg.n_heads:
            raise ConfigError(
                f"tile_gnn gat: width ({width}) must be divisible by n_heads ({cfg.n_heads})"
            )
        self.spec = GraphSpec(kind=str(opts["graph"]), k=int(opts["k"]))
        self.tile_dropout = float(opts["tile_dropout"])
        self.transform = TileTransform(
            cfg.in_dim, centre=bool(opts["centre"]), whiten=opts["whiten"]
        )
        # ``nodes: modules``: each tile enters as the one-hot of its nearest tissue module
        # (k-means on the training fold's transformed tiles), so the graph layers cannot
        # memorise slides through per-tile noise; they can only read who touches whom.
        self.module_spec = (
            ModuleSpec(k=int(opts["modules"]), seed=int(opts["module_seed"]))
            if opts["nodes"] == "modules"
            else None
        )
        node_dim = self.module_spec.k if self.module_spec else cfg.in_dim
        if self.module_spec is not None:  # buffers only then: default checkpoints keep their keys
            self.register_buffer("centroids", torch.zeros(self.module_spec.k, cfg.in_dim))
            self.register_buffer("modules_fitted", torch.tensor(False))
        self.embed = nn.Sequential(nn.Linear(node_dim, width), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.convs = nn.ModuleList(
            _conv(str(opts["conv"]), width, cfg.n_heads) for _ in range(int(opts["layers"]))
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in self.convs)
        self.mix = nn.Sequential(nn.Linear(width * (len(self.convs) + 1), width), nn.ReLU())
        self.attention = GatedAttention(width, min(cfg.attn_dim, width), 1, cfg.dropout)
        self.head = nn.Linear(width, cfg.n_outputs)
        self.invariant = (
            InvariantBranch(replace(cfg, in_dim=node_dim)) if opts["invariant_branch"] else None
        )
        if opts["stats_readout"] and self.module_spec is None:
            raise ConfigError("model 'tile_gnn': option stats_readout needs nodes='modules'")
        # module_stats' standardised statistics as a linear branch (see module_graph)
        self.stats = (
            StatsReadout(self.module_spec.k, cfg.n_outputs, dropout=cfg.dropout)
            if self.module_spec is not None and opts["stats_readout"]
            else None
        )

    def prepare(self, train_data: Any) -> None:
        """Fit the whitening (option ``whiten``) and the modules (``nodes: modules``) on the
        training bags only."""
        if self.transform.whiten or self.module_spec is not None:
            bags = fit_transform(self, train_data)
            if self.module_spec is not None:
                book = fit_modules(
                    bags, self.module_spec, encoder=getattr(train_data, "encoder", None)
                )
                self.centroids.copy_(torch.from_numpy(book.centroids))
                self.modules_fitted.fill_(True)
                if self.stats is not None:
                    self.stats.fit(
                        self.module_of,
                        [train_data.read(item.slide_id) for item in train_data.items],
                    )

    def module_of(self, x: Tensor) -> Tensor:
        """Each tile's nearest module (``nodes: modules``), from raw embeddings."""
        if self.module_spec is None or not bool(self.modules_fitted):
            raise ConfigError(
                "tile_gnn (nodes: modules) has no fitted modules: call prepare(train_data) first"
            )
        c, z = self.centroids, self.transform(x).detach()
        return ((c * c).sum(1)[None, :] - 2 * z @ c.T).argmin(1)

    def nodes(self, x: Tensor) -> Tensor:
        """Node inputs: transformed embeddings, or one-hot module memberships."""
        if self.module_spec is None:
            return self.transform(x)
        return torch.nn.functional.one_hot(self.module_of(x), self.module_spec.k).to(x.dtype)

    def node_states(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.embed(self.nodes(x))
        states = [h]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + torch.relu(norm(conv(h, edge_index)))
            states.append(h)
        return self.mix(torch.cat(states, dim=1))

    def tile_logits(self, x: Tensor, coords: Tensor) -> Tensor:
        """(N, n_outputs): the graph head on each tile's node state (per-tile prediction map)."""
        coords = require_coords("tile_gnn", x, coords)
        return self.head(self.node_states(x, edges_for(coords, self.spec, None, x.device)))

    def forward(
        self,
        x: Tensor,
        label: int | None = None,
        *,
        coords: Tensor | None = None,
        edges: tuple[Any, Any] | None = None,
    ) -> MILOutput:
        coords = require_coords("tile_gnn", x, coords)
        dropped = self.training and self.tile_dropout > 0
        if dropped:
            x, coords = drop_tiles(x, coords, self.tile_dropout, True)
            edges = None
        edge_index = edges_for(coords, self.spec, edges, x.device, cache=not dropped)
        h = self.node_states(x, edge_index)
        a = torch.softmax(self.attention(h), dim=1)
        logits = self.head((a @ h).squeeze(0))
        extras = {"graph_logits": logits.detach()}
        if self.stats is not None:
            logits = logits + self.stats(self.module_of, x, coords)[0]
        if self.invariant is not None:
            inv_logits, inv_a = self.invariant(self.nodes(x))
            logits = logits + inv_logits
            extras["invariant_attention"] = inv_a.detach()
        return MILOutput(logits, a.squeeze(0), None, extras)


@register_model("tile_gnn")
def _build(cfg: MILConfig) -> nn.Module:
    return TileGNN(cfg)

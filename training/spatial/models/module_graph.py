"""``module_graph``: a small GNN over a slide's tissue-module interaction graph.

Each tile gets its nearest tissue module (centroids fitted by :meth:`ModuleGraphNet.prepare`
on the training bags only, kept in a buffer so the checkpoint carries them). The slide
becomes K nodes — proportion, presence, mean embedding of each module — joined by two
edge channels: the contact fraction (share of grid-neighbour pairs between modules i
and j) and the contact enrichment over random placement (:mod:`training.spatial.interactions`).
Two dense message-passing layers mix the nodes, gated attention pools the present
modules, and a linear read-out of the proportions and the contact matrix (the
interpretable reference: which modules, which contacts) is summed at the logits.

Contacts are counted on grid edges, so predictions are invariant to rotations, flips
and translations of the coordinates. Per-tile attention spreads each module's weight
evenly over its tiles.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from infra.errors import ConfigError
from training.mil.models import GatedAttention, MILConfig, MILOutput, register_model
from training.spatial.graphs import GraphSpec
from training.spatial.interactions import module_graph
from training.spatial.models._common import edges_for, fit_transform, options, require_coords
from training.spatial.models.module_stats import ModuleModel, StatsReadout
from training.spatial.modules import ModuleCodebook, fit_modules

__all__ = ["ModuleGraphNet"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "modules": 8,
    "module_seed": 0,
    "smooth": 0.0,
    "codebook": None,
    "save_codebook": True,
    "graph": "grid8",
    "max_fit_tiles": 200_000,
    "centre": False,
    "whiten": False,
    "stats_readout": False,
}


class ModuleGraphNet(ModuleModel):
    model_name = "module_graph"

    def __init__(self, cfg: MILConfig) -> None:
        opts = options(cfg, DEFAULTS, {"graph": ("grid8", "grid4", "knn", "radius")})
        super().__init__(cfg, opts, smooth=float(opts["smooth"]))
        k = self.k
        if self.opts["codebook"] and (self.transform.centre or self.transform.whiten):
            raise ConfigError(
                "module_graph: a stored codebook (option codebook) lives in the raw embedding "
                "space; it cannot be combined with centre or whiten"
            )
        self.spec = GraphSpec(kind=str(self.opts["graph"]))
        self.codebook: ModuleCodebook | None = None
        self.codebook_hash: str | None = None
        h = cfg.hidden
        self.node_in = nn.Sequential(
            nn.Linear(cfg.in_dim + 2, h), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        self.self_w = nn.ModuleList(nn.Linear(h, h) for _ in range(2))
        self.frac_w = nn.ModuleList(nn.Linear(h, h, bias=False) for _ in range(2))
        self.enr_w = nn.ModuleList(nn.Linear(h, h, bias=False) for _ in range(2))
        self.attention = GatedAttention(h, cfg.attn_dim, 1, cfg.dropout)
        self.head = nn.Linear(h, cfg.n_outputs)
        # Read-out of proportions (K) and contact fractions (K·K): the linear reference.
        self.direct = nn.Linear(k + k * k, cfg.n_outputs)
        # ``stats_readout``: module_stats' standardised statistics (shares, enrichment,
        # distances) as a further linear branch, so the graph needs only learn the rest.
        self.stats = (
            StatsReadout(k, cfg.n_outputs, dropout=cfg.dropout)
            if self.opts["stats_readout"]
            else None
        )

    # -- tissue modules --------------------------------------------------------------
    def set_codebook(self, codebook: ModuleCodebook) -> None:
        if codebook.k != self.k or codebook.dim != self.cfg.in_dim:
            raise ConfigError(
                f"codebook is {codebook.k}×{codebook.dim}, model wants {self.k}×{self.cfg.in_dim}"
            )
        self.codebook = codebook
        self.set_centroids(codebook.centroids)

    def prepare(self, train_data: Any) -> None:
        """Fit (or load) the module codebook from the training bags only, before training."""
        store = train_data.store() if hasattr(train_data, "store") else None
        if self.opts["codebook"]:
            from training.spatial.store_io import load_codebook

            if store is None:
                raise ConfigError("module_graph option 'codebook' needs a store-backed dataset")
            book = load_codebook(store, str(self.opts["codebook"]))
            overlap = set(book.slide_ids) & {item.slide_id for item in train_data.items}
            log.info(
                "loaded codebook %s (%d of its %d slides are in this training set)",
                self.opts["codebook"],
                len(overlap),
                len(book.slide_ids),
            )
        else:
            bags = fit_transform(self, train_data)
            book = fit_modules(bags, self.module_spec, encoder=getattr(train_data, "encoder", None))
        self.set_codebook(book)
        if self.stats is not None:
            self.stats.fit(
                self.assign, [train_data.read(item.slide_id) for item in train_data.items]
            )
        # A codebook fitted on centred/whitened tiles is only meaningful with this model's
        # transform, so it stays in the checkpoint and is not saved as a store codebook.
        plain = not (self.transform.centre or self.transform.whiten)
        if store is not None and self.opts["save_codebook"] and not self.opts["codebook"] and plain:
            from training.spatial.store_io import save_codebook

            try:
                self.codebook_hash = save_codebook(store, book)
            except (
                OSError
            ) as exc:  # a read-only store still trains; the codebook is in the checkpoint
                log.warning("could not save the module codebook to %s: %s", store.uri, exc)

    # -- model ---------------------------------------------------------------------
    def graph(self, x: Tensor, coords: Tensor, edges: tuple[Any, Any] | None = None) -> Any:
        edge_index = edges_for(coords, self.spec, edges, x.device)
        modules = self.assign(x.detach())
        x = self.transform(x)
        return modules, module_graph(x, modules, edge_index[0], edge_index[1], self.k)

    def forward(
        self,
        x: Tensor,
        label: int | None = None,
        *,
        coords: Tensor | None = None,
        edges: tuple[Any, Any] | None = None,
    ) -> MILOutput:
        coords = require_coords("module_graph", x, coords)
        modules, g, h = self._nodes(x, coords, edges)
        present = g.present
        scores = self.attention(h).masked_fill(~present[None, :], float("-inf"))
        a = torch.softmax(scores, dim=1).squeeze(0)
        logits = self.head(a @ h)
        logits = logits + self.direct(
            torch.cat([g.proportions, g.contact_fraction.reshape(-1)]) * self.k
        )
        if self.stats is not None:
            logits = logits + self.stats(self.assign, x, coords)[0]
        tile_attention = a[modules] / g.counts[modules]
        return MILOutput(
            logits,
            tile_attention,
            None,
            {
                "modules": modules,
                "module_attention": a.detach(),
                "enrichment": g.enrichment.detach(),
            },
        )

    def tile_logits(self, x: Tensor, coords: Tensor) -> Tensor:
        """(N, n_outputs): each tile gets the head applied to its module's node state."""
        modules, _, h = self._nodes(x, coords, None)
        return self.head(h)[modules]

    def _nodes(
        self, x: Tensor, coords: Tensor, edges: tuple[Any, Any] | None
    ) -> tuple[Tensor, Any, Tensor]:
        modules, g = self.graph(x, coords, edges)
        present = g.present
        nodes = torch.cat(
            [g.mean_embedding, g.proportions[:, None], present[:, None].to(x.dtype)], dim=1
        )
        h = self.node_in(nodes)
        frac = g.contact_fraction / g.contact_fraction.sum(1, keepdim=True).clamp_min(1e-12)
        enr = torch.tanh(g.enrichment) * (present[:, None] & present[None, :])
        for self_w, frac_w, enr_w in zip(self.self_w, self.frac_w, self.enr_w, strict=True):
            h = torch.relu(self_w(h) + frac @ frac_w(h) + enr @ enr_w(h) / self.k)
        return modules, g, h


@register_model("module_graph")
def _build(cfg: MILConfig) -> nn.Module:
    return ModuleGraphNet(cfg)


def tile_modules(model: ModuleGraphNet, embeddings: np.ndarray) -> np.ndarray:
    """Module ids for tiles, with a fitted model's centroids."""
    with torch.no_grad():
        return model.assign(torch.as_tensor(embeddings, dtype=torch.float32)).numpy()

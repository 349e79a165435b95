"""``module_stats``: the honest baseline for spatial models — module statistics → logistic head.

K tissue modules are fitted by k-means on the training fold's tiles only
(:meth:`ModuleStats.prepare`, optionally after per-slide centring and PCA whitening,
:mod:`training.spatial.preprocess`). Each slide becomes a fixed feature vector — module
shares, contact enrichment between modules and mean nearest distances between them
(:func:`training.spatial.stats.module_features`) — standardised with the training
slides' mean and sd, and a single linear layer reads it out: a logistic regression for
a binary task, trained by the MIL trainer with its weight decay and early stopping.

It has nothing to memorise beyond F weights, so when it learns, a spatial model that
does worse is failing to learn the arrangement, not lacking the information.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.mil.models import MILConfig, MILOutput, register_model
from training.spatial.models._common import fit_transform, options, require_coords
from training.spatial.modules import ModuleSpec, fit_modules
from training.spatial.preprocess import TileTransform
from training.spatial.stats import feature_names, module_features

__all__ = ["ModuleStats"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"modules": 8, "module_seed": 0, "centre": False, "whiten": False,
                            "distances": True, "max_fit_tiles": 200_000}


class ModuleStats(nn.Module):
    uses_coords = True

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.opts = options(cfg, DEFAULTS)
        self.k = int(self.opts["modules"])
        self.module_spec = ModuleSpec(k=self.k, seed=int(self.opts["module_seed"]),
                                      max_tiles=int(self.opts["max_fit_tiles"]))
        self.distances = bool(self.opts["distances"])
        self.names = feature_names(self.k, self.distances)
        f = len(self.names)
        self.transform = TileTransform(cfg.in_dim, centre=bool(self.opts["centre"]), whiten=bool(self.opts["whiten"]))
        self.register_buffer("centroids", torch.zeros(self.k, cfg.in_dim))
        self.register_buffer("feature_mean", torch.zeros(f))
        self.register_buffer("feature_sd", torch.ones(f))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(f, cfg.n_outputs)

    def assign(self, x: Tensor) -> Tensor:
        """Module of each tile, from raw embeddings (the transform is applied here)."""
        c, x = self.centroids, self.transform(x.float())
        return ((c * c).sum(1)[None, :] - 2 * x @ c.T).argmin(1)

    def features(self, x: Tensor, coords: Tensor) -> Tensor:
        """(F,) raw (unstandardised) module statistics of one slide."""
        with torch.no_grad():
            modules = self.assign(x).cpu().numpy()
        feats = module_features(modules, coords.detach().cpu().numpy(), self.k, distances=self.distances)
        return torch.from_numpy(feats).to(x.device)

    def prepare(self, train_data: Any) -> None:
        """Fit the transform, the modules and the feature scaling on the training bags only."""
        bags = [(item.slide_id, *train_data.read(item.slide_id)) for item in train_data.items]
        moved = fit_transform(self, train_data)
        book = fit_modules(moved, self.module_spec, encoder=getattr(train_data, "encoder", None))
        self.centroids.copy_(torch.from_numpy(book.centroids))
        self.fitted.fill_(True)
        feats = torch.stack([self.features(torch.from_numpy(np.asarray(emb)), torch.from_numpy(np.asarray(c)))
                             for _, emb, c in bags])
        self.feature_mean.copy_(feats.mean(0))
        sd = feats.std(0) if len(feats) > 1 else torch.ones_like(self.feature_sd)
        self.feature_sd.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))
        log.info("module_stats: %d modules, %d features from %d training slides", self.k, len(self.names), len(bags))

    def forward(self, x: Tensor, label: int | None = None, *, coords: Tensor | None = None,
                edges: Any = None) -> MILOutput:
        require_coords("module_stats", x, coords)
        if not bool(self.fitted):
            from infra.errors import ConfigError

            raise ConfigError("module_stats has no fitted modules: call prepare(train_data) or load a checkpoint")
        z = (self.features(x, coords) - self.feature_mean) / self.feature_sd
        n = x.shape[0]
        return MILOutput(self.head(self.dropout(z)), torch.full((n,), 1.0 / n, device=x.device), None, {"features": z})


@register_model("module_stats")
def _build(cfg: MILConfig) -> nn.Module:
    return ModuleStats(cfg)

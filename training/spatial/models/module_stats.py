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

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from infra.errors import ConfigError
from training.mil.models import MILConfig, MILOutput, register_model
from training.spatial.models._common import fit_transform, options, require_coords
from training.spatial.modules import ModuleSpec, fit_modules
from training.spatial.preprocess import TileTransform
from training.spatial.stats import cached_module_features, feature_names

__all__ = ["ModuleModel", "ModuleStats", "StatsReadout"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "modules": 8,
    "module_seed": 0,
    "centre": False,
    "whiten": False,
    "distances": True,
    "max_fit_tiles": 200_000,
}


class StatsReadout(nn.Module):
    """Standardised module statistics → linear: ``module_stats``' whole model, and an
    optional branch of ``module_graph`` (summed at its logits, so the graph learns what
    the statistics miss). ``modules_of(x)`` gives each tile's module."""

    feature_mean: Tensor
    feature_sd: Tensor

    def __init__(
        self, k: int, n_outputs: int, *, distances: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.k, self.distances = k, distances
        self.names = feature_names(k, distances)
        f = len(self.names)
        self.register_buffer("feature_mean", torch.zeros(f))
        self.register_buffer("feature_sd", torch.ones(f))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(f, n_outputs)
        self._cache: dict[bytes, np.ndarray] = {}
        # loaded weights bring other modules: features cached with the old ones are stale
        self.register_load_state_dict_post_hook(lambda module, _: module._cache.clear())

    def features(self, modules_of: Callable[[Tensor], Tensor], x: Tensor, coords: Tensor) -> Tensor:
        """(F,) raw statistics of one slide, cached by the bag's content (they depend only
        on the bag and the fitted modules): later epochs cost a hash, not k-d tree queries."""
        xs, cs = x.detach().cpu().numpy(), coords.detach().cpu().numpy()
        key = hashlib.blake2b(
            xs.tobytes() + cs.tobytes() + str(xs.shape).encode(), digest_size=16
        ).digest()
        feats = self._cache.get(key)
        if feats is None:
            with torch.no_grad():
                modules = modules_of(x).cpu().numpy()
            feats = cached_module_features(modules, cs, self.k, distances=self.distances)
            if len(self._cache) < 100_000:
                self._cache[key] = feats
        # a copy: the array is shared through the process-wide cache and read-only there
        return torch.from_numpy(feats.copy()).to(x.device)

    def fit(
        self, modules_of: Callable[[Tensor], Tensor], bags: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Feature mean and sd over the training bags (raw embeddings, coords)."""
        self._cache.clear()
        feats = torch.stack(
            [
                self.features(
                    modules_of, torch.from_numpy(np.asarray(emb)), torch.from_numpy(np.asarray(c))
                )
                for emb, c in bags
            ]
        )
        self.feature_mean.copy_(feats.mean(0))
        sd = feats.std(0) if len(feats) > 1 else torch.ones_like(self.feature_sd)
        self.feature_sd.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))

    def forward(
        self, modules_of: Callable[[Tensor], Tensor], x: Tensor, coords: Tensor
    ) -> tuple[Tensor, Tensor]:
        z = (self.features(modules_of, x, coords) - self.feature_mean) / self.feature_sd
        return self.head(self.dropout(z)), z


class ModuleModel(nn.Module):
    """What the models that give each tile its nearest tissue module share: the options
    parsed once, the per-slide transform (centring / whitening before the modules: under
    nuisance-dominated noise k-means on raw embeddings clusters the nuisance), the module
    spec, the centroid buffers (saved in checkpoints) and the assignment."""

    centroids: Tensor
    fitted: Tensor
    uses_coords = True
    #: the registry name, for messages
    model_name = ""

    def __init__(self, cfg: MILConfig, opts: dict[str, Any], *, smooth: float = 0.0) -> None:
        super().__init__()
        self.cfg, self.opts = cfg, opts
        self.k = int(opts["modules"])
        self.transform = TileTransform(
            cfg.in_dim, centre=bool(opts["centre"]), whiten=opts["whiten"]
        )
        self.module_spec = ModuleSpec(
            k=self.k,
            seed=int(opts["module_seed"]),
            smooth=smooth,
            max_tiles=int(opts["max_fit_tiles"]),
        )
        self.register_buffer("centroids", torch.zeros(self.k, cfg.in_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_centroids(self, centroids: np.ndarray) -> None:
        self.centroids.copy_(torch.from_numpy(centroids))
        self.fitted.fill_(True)

    def assign(self, x: Tensor) -> Tensor:
        """Module of each tile, from raw embeddings (the transform is applied here)."""
        if not bool(self.fitted):
            raise ConfigError(
                f"{self.model_name} has no fitted modules: call prepare(train_data) "
                "or load a checkpoint"
            )
        c, x = self.centroids, self.transform(x.float())
        return ((c * c).sum(1)[None, :] - 2 * x @ c.T).argmin(1)


class ModuleStats(ModuleModel):
    model_name = "module_stats"

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__(cfg, options(cfg, DEFAULTS))
        self.readout = StatsReadout(
            self.k, cfg.n_outputs, distances=bool(self.opts["distances"]), dropout=cfg.dropout
        )

    def prepare(self, train_data: Any) -> None:
        """Fit the transform, the modules and the feature scaling on the training bags only."""
        moved = fit_transform(self, train_data)
        book = fit_modules(moved, self.module_spec, encoder=getattr(train_data, "encoder", None))
        self.set_centroids(book.centroids)
        self.readout.fit(self.assign, [train_data.read(item.slide_id) for item in train_data.items])
        log.info(
            "module_stats: %d modules, %d features from %d training slides",
            self.k,
            len(self.readout.names),
            len(moved),
        )

    def forward(
        self,
        x: Tensor,
        label: int | None = None,
        *,
        coords: Tensor | None = None,
        edges: Any = None,
    ) -> MILOutput:
        require_coords("module_stats", x, coords)
        if not bool(self.fitted):
            raise ConfigError(
                "module_stats has no fitted modules: call prepare(train_data) or load a checkpoint"
            )
        logits, z = self.readout(self.assign, x, coords)
        n = x.shape[0]
        return MILOutput(logits, torch.full((n,), 1.0 / n, device=x.device), None, {"features": z})


@register_model("module_stats")
def _build(cfg: MILConfig) -> nn.Module:
    return ModuleStats(cfg)

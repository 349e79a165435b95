"""Tile-embedding preprocessing fitted on training tiles: per-slide centring and PCA whitening.

Real embeddings carry stain, scanner and patient directions that dominate the variance,
and offset each slide as a whole. Both fool k-means (its modules follow the nuisance,
not the tissue) and give a slide model something to memorise. Two cheap answers, used by
the spatial models before module fitting or message passing:

* ``centre``: subtract each slide's mean embedding (no fitting; removes slide offsets);
* ``whiten``: PCA on the (centred) training tiles, every kept direction scaled to unit
  variance, so a few high-variance nuisance directions no longer outweigh the rest.
* ``whiten: signal``: the same, keeping only the directions whose variance stands above
  the noise bulk (the Marchenko-Pastur edge of the median eigenvalue); the others are
  set to zero. Plain whitening also scales every pure-noise direction up to the tissue
  directions, which makes modules noisier when there is no nuisance to remove
  (isotropic noise); dropping them keeps whitening's gain under nuisance noise.

:class:`TileTransform` keeps the fitted mean and projection in buffers, so a checkpoint
carries them and held-out slides are transformed exactly as the training tiles were.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from infra.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["WHITEN", "TileTransform", "signal_components"]

#: values of the ``whiten`` option: off, every direction, the directions above the noise bulk
WHITEN = (False, True, "signal")


def signal_components(var: np.ndarray, n: int, margin: float = 1.0) -> np.ndarray:
    """Boolean mask of the principal components (variances ``var``, descending, from
    ``n`` samples) that stand above an isotropic noise bulk: variance over the
    Marchenko-Pastur upper edge ``sigma2 (1 + sqrt(d / n))^2`` times ``margin``, with the
    noise variance ``sigma2`` estimated by the median eigenvalue (robust while fewer than
    half the directions carry signal). At least one component is kept."""
    var = np.asarray(var, np.float64)
    d = len(var)
    edge = float(np.median(var)) * (1.0 + np.sqrt(d / max(n, 1))) ** 2 * margin
    keep = var > edge
    keep[0] = True
    return keep


class TileTransform(nn.Module):
    """x → (centre per slide) → (x − mean) @ projection (whitening); identity when both off."""

    mean: Tensor
    projection: Tensor
    fitted: Tensor

    def __init__(
        self, in_dim: int, *, centre: bool = False, whiten: bool | str = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if whiten not in WHITEN:
            raise ConfigError(f"whiten must be one of {list(WHITEN)}, got {whiten!r}")
        self.centre, self.whiten, self.eps = bool(centre), bool(whiten), float(eps)
        self.signal_only = whiten == "signal"
        # Buffers only when whitening: a model without it keeps the state-dict keys (and
        # loads the checkpoints) it had before these options existed.
        if self.whiten:
            self.register_buffer("mean", torch.zeros(in_dim))
            self.register_buffer("projection", torch.eye(in_dim))
            self.register_buffer("fitted", torch.tensor(False))

    def _centred(self, x: np.ndarray) -> np.ndarray:
        return x - x.mean(0, keepdims=True) if self.centre else x

    def fit(
        self, bags: Sequence[np.ndarray], max_tiles: int = 100_000, seed: int = 0
    ) -> TileTransform:
        """Fit the whitening on the training slides' tiles (a no-op without ``whiten``)."""
        if not self.whiten:
            return self
        if not bags:
            raise ConfigError("TileTransform.fit got no training slides")
        x = np.concatenate([self._centred(np.asarray(b, np.float64)) for b in bags])
        if len(x) > max_tiles:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_tiles, replace=False))]
        mean = x.mean(0)
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        # Every direction is kept (the output keeps the input's width, so checkpoints load
        # into a freshly built model); near-empty ones are floored rather than blown up.
        var = sv**2 / max(len(x) - 1, 1)
        var = np.maximum(var, self.eps * max(float(var.max()), 1e-12))
        if len(var) < x.shape[1]:
            raise ConfigError(f"whitening needs at least {x.shape[1]} training tiles, got {len(x)}")
        # Sign-fixed components so two fits on the same tiles give the same buffers.
        vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
        projection = vt.T / np.sqrt(var)
        if self.signal_only:
            keep = signal_components(var, len(x))
            projection[:, ~keep] = 0.0  # same width, so checkpoints keep their shapes
            log.info("whiten=signal keeps %d of %d directions", int(keep.sum()), len(keep))
        projection = projection.astype(np.float32)
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.projection = torch.from_numpy(projection)
        self.fitted.fill_(True)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.centre:
            x = x - x.mean(0, keepdim=True)
        if self.whiten:
            if not bool(self.fitted):
                raise ConfigError(
                    "whitening is not fitted: call prepare(train_data) or load a checkpoint"
                )
            x = (x - self.mean) @ self.projection
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(x, np.float32))).numpy()

"""Tissue modules: K clusters of tile embeddings, fitted on training slides only.

A :class:`ModuleCodebook` holds the k-means centroids, the slides it was fitted on, the
settings and a content hash. Mini-batch k-means with a fixed seed is deterministic and
assigns a new tile by its nearest centroid (one matrix product), which is what held-out
and external slides need; Leiden-style clustering cannot assign new tiles without a kNN
search against the training tiles.

Optional spatial smoothing (UTAG, Kim et al. 2022) averages each tile's embedding with
its grid neighbours before clustering/assignment, giving spatially coherent modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from infra.content_cache import ContentCache
from infra.errors import ConfigError

__all__ = ["ModuleCodebook", "ModuleSpec", "assign_modules", "fit_modules", "smooth_embeddings"]

log = logging.getLogger(__name__)

CODEBOOK_VERSION = 1

# k-means results by the content of the fitted sample and the settings. Cross-validation
# fits the same training fold once per training seed and once per model that shares the
# module settings (and again for the permuted-label control), and Lloyd's iterations on
# overlapping clusters are the slowest part of a module model's fold. Bounded: an entry
# is K x D floats.
_FIT_CACHE: ContentCache[tuple[np.ndarray, float]] = ContentCache(256)


@dataclass(frozen=True)
class ModuleSpec:
    k: int = 8
    seed: int = 0
    smooth: float = 0.0  # weight of the neighbour mean in UTAG smoothing (0: off)
    max_tiles: int = 200_000  # tiles sampled for fitting (evenly over slides)
    batch_size: int = 2048
    method: str = "kmeans"  # "kmeans" (Lloyd on the sample) or "minibatch"

    def __post_init__(self) -> None:
        if self.method not in ("kmeans", "minibatch"):
            raise ConfigError(f"module method must be kmeans or minibatch, got {self.method!r}")
        if self.k < 2:
            raise ConfigError(f"module count k must be >= 2, got {self.k}")
        if not 0.0 <= self.smooth < 1.0:
            raise ConfigError(f"smooth must be in [0, 1), got {self.smooth}")
        if self.max_tiles < self.k:
            raise ConfigError(f"max_tiles ({self.max_tiles}) must be >= k ({self.k})")


@dataclass(frozen=True)
class ModuleCodebook:
    """Centroids (K, D) float32 and the provenance needed to trust them."""

    centroids: np.ndarray
    spec: ModuleSpec
    slide_ids: tuple[str, ...]
    encoder: str | None = None
    version: int = CODEBOOK_VERSION
    meta: dict[str, float] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def config_hash(self) -> str:
        """Hash of the settings, the training slides and the centroid bytes."""
        from infra.provenance import array_digest, stable_hash

        digest = array_digest(self.centroids, dtype=np.float32)
        return stable_hash(
            "tissue-modules",
            self.version,
            {
                "spec": self.spec,
                "slides": list(self.slide_ids),
                "encoder": self.encoder,
                "centroids": digest,
            },
        )

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        return assign_modules(embeddings, self.centroids)


def smooth_embeddings(x: np.ndarray, src: np.ndarray, dst: np.ndarray, weight: float) -> np.ndarray:
    """(1 - w) · x + w · mean of grid neighbours (tiles with none keep their own)."""
    if weight <= 0 or len(src) == 0:
        return x
    total = np.zeros_like(x, dtype=np.float64)
    np.add.at(total, src, x[dst])
    degree = np.bincount(src, minlength=len(x)).astype(np.float64)[:, None]
    mean = np.where(degree > 0, total / np.maximum(degree, 1), x)
    return ((1 - weight) * x + weight * mean).astype(x.dtype, copy=False)


def assign_modules(
    embeddings: np.ndarray, centroids: np.ndarray, *, chunk: int = 16_384
) -> np.ndarray:
    """Nearest centroid per tile: argmin ‖x‖² − 2x·c + ‖c‖², with ‖x‖² dropped (constant per row).

    One float32 GEMM per chunk of rows, on one BLAS thread: the product is skinny (K
    columns), so extra threads only contend (on a busy 2-core host, 2 threads took 4x
    longer than 1), and chunks keep the (rows, K) scores in cache.
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ConfigError(f"embeddings {x.shape} do not match centroids {c.shape}")
    ct = np.ascontiguousarray(c.T) * np.float32(-2.0)
    norms = (c * c).sum(1)
    out = np.empty(len(x), np.int64)
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, len(x), chunk):
            scores = x[start : start + chunk] @ ct
            scores += norms
            out[start : start + chunk] = scores.argmin(1)
    return out


def _sample(bags: Sequence[np.ndarray], max_tiles: int, seed: int) -> np.ndarray:
    total = sum(len(b) for b in bags)
    if total <= max_tiles:
        return np.concatenate(bags).astype(np.float32)
    rng = np.random.default_rng(seed)
    per = max(1, max_tiles // len(bags))
    parts = [
        b if len(b) <= per else b[np.sort(rng.choice(len(b), per, replace=False))] for b in bags
    ]
    return np.concatenate(parts).astype(np.float32)


def fit_modules(
    bags: Iterable[tuple[str, np.ndarray, np.ndarray]],
    spec: ModuleSpec | None = None,
    *,
    encoder: str | None = None,
) -> ModuleCodebook:
    """Fit K modules on ``bags`` of (slide_id, embeddings, coords): the training slides.

    The caller passes training slides only; the codebook records them so a test or an
    auditor can check they never include validation, test or external patients.
    """
    from training.spatial.graphs import grid_edges

    spec = spec or ModuleSpec()
    ids, feats = [], []
    for slide_id, emb, coords in bags:
        emb = np.asarray(emb, dtype=np.float32)
        if spec.smooth > 0:
            emb = smooth_embeddings(emb, *grid_edges(coords), spec.smooth)
        ids.append(str(slide_id))
        feats.append(emb)
    if not feats:
        raise ConfigError("fit_modules got no training slides")
    if len(set(ids)) != len(ids):
        raise ConfigError("fit_modules got a slide twice")
    x = _sample(feats, spec.max_tiles, spec.seed)
    if len(x) < spec.k:
        raise ConfigError(f"{len(x)} tiles cannot make {spec.k} modules")
    key = ContentCache.key(x, spec.k, spec.seed, spec.method, spec.batch_size)
    centroids, inertia = _FIT_CACHE.get(key, lambda: _kmeans(x, spec))
    log.info("fitted %d modules on %d tiles from %d slides", spec.k, len(x), len(ids))
    return ModuleCodebook(
        centroids.copy(),
        spec,
        tuple(sorted(ids)),
        encoder,
        meta={"inertia": inertia, "n_tiles": float(len(x))},
    )


def _kmeans(x: np.ndarray, spec: ModuleSpec) -> tuple[np.ndarray, float]:
    """Centroids (canonical order) and inertia of k-means on the sample ``x``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if spec.method == "minibatch":
        km = MiniBatchKMeans(
            n_clusters=spec.k,
            random_state=spec.seed,
            batch_size=spec.batch_size,
            n_init=10,
            max_iter=100,
        )
    else:
        # Full Lloyd iterations on the (bounded) sample: mini-batch k-means fell into a
        # merged-cluster local minimum on imbalanced tile types (ARI 0.67 vs 1.0).
        km = KMeans(n_clusters=spec.k, random_state=spec.seed, n_init=3, max_iter=300)
    # scikit-learn's own thread count: one thread gave other centroids on S2 at 85%
    # (Lloyd's partial sums add up in another order), so a cached fit would not be what
    # the same call without the cache gives.
    km.fit(x)
    # A canonical order (by the centroids' first principal direction) so two fits that
    # find the same clusters number them the same way.
    centroids = km.cluster_centers_.astype(np.float32)
    centred = centroids - centroids.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    direction *= np.sign(direction[np.argmax(np.abs(direction))])
    centroids = centroids[np.argsort(centred @ direction, kind="stable")]
    return np.ascontiguousarray(centroids), float(km.inertia_)

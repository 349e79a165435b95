"""Tile classifiers: patient-level cross-validation, metrics with CIs, maps into the store.

Every tile gets an out-of-fold probability (its patient's slides were held out when
the head was fitted). Tile AUROC and AUPRC carry a patient-bootstrap 95% CI (tiles of
one patient are correlated, so patients are resampled). Per slide: area Dice and IoU
of the thresholded map against the annotation, and the same counted in tiles.

Written back: per-tile probabilities into the derived table ``predictions/<name>``,
a dense map into the slide's Zarr group (``heatmaps/<name>``), PNG overlays and
``metrics.json`` into ``out_dir``. CPU scikit-learn heads, fitted here; under
``slidebank train`` (``kind: tiles``, :mod:`training.tiles.job`) on Ray Train workers.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.store.runs import hash_config
from infra.errors import ConfigError
from training.tiles.data import TileData, TileTask, load_tiles
from training.tiles.heads import HEADS, context_features, fit_head, predict_proba
from training.tiles.spatial import SPATIAL_HEADS

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "TileClassifierConfig",
    "TileResult",
    "cross_validated_probs",
    "finish_tile_classifier",
    "fold_probs",
    "run_tile_classifier",
    "slide_metrics",
    "write_predictions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileClassifierConfig:
    """``context_hops`` > 0 adds the mean embedding of neighbours within that many grid
    steps (``linear``, ``mlp``); the ``tile_gnn`` and ``region_transformer`` heads see
    the neighbourhood through their own layers (:mod:`training.tiles.spatial`).
    ``shuffle_coords`` permutes tile positions within each slide first (the control
    that must erase any gain from context)."""

    task: TileTask
    head: str = "linear"
    folds: int = 5
    seed: int = 0
    n_boot: int = 200
    map_threshold: float = 0.5
    context_hops: int = 0
    shuffle_coords: bool = False
    c: float = 1.0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"folds must be an int >= 2, not {self.folds!r}")
        if not 0 <= self.context_hops <= 16:
            raise ConfigError(f"context_hops must be in [0, 16], not {self.context_hops!r}")
        if not 0 < self.map_threshold < 1:
            raise ConfigError(f"map_threshold must be in (0, 1), not {self.map_threshold!r}")

    def config_hash(self) -> str:
        return hash_config(asdict(self))

    def default_name(self) -> str:
        klass = re.sub(r"[^A-Za-z0-9._-]", "_", self.task.positive)[:40]
        return f"tiles-{klass}-{self.head}-{self.config_hash()[:10]}"


@dataclass
class TileResult:
    config: TileClassifierConfig
    name: str
    metrics: dict[str, dict[str, float]]
    per_slide: list[dict[str, Any]]
    probs: np.ndarray
    data: TileData
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def dice(self) -> float:
        return float(np.mean([s["dice"] for s in self.per_slide]))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": asdict(self.config),
            "config_hash": self.config.config_hash(),
            "n_tiles": len(self.data),
            "n_positive": int(self.data.labels.sum()),
            "n_slides": len(self.per_slide),
            "metrics": self.metrics,
            "dice_mean": self.dice,
            "iou_mean": float(np.mean([s["iou"] for s in self.per_slide])),
            "per_slide": self.per_slide,
            "outputs": self.outputs,
        }


def _coords(data: TileData, config: TileClassifierConfig) -> np.ndarray:
    """Tile positions; permuted within each slide with ``shuffle_coords`` (the control)."""
    coords = data.coords
    if config.shuffle_coords:
        rng = np.random.default_rng(config.seed)
        coords = coords.copy()
        for sid in data.slides():
            idx = np.flatnonzero(data.slide_id == sid)
            coords[idx] = coords[rng.permutation(idx)]
    return coords


def _features(data: TileData, config: TileClassifierConfig) -> np.ndarray:
    if config.head in SPATIAL_HEADS:  # the model sees the neighbourhood itself
        return data.embeddings
    return context_features(
        _coords(data, config), data.embeddings, data.slide_id, config.context_hops
    )


def fold_probs(
    config: TileClassifierConfig,
    x: np.ndarray,
    coords: np.ndarray,
    slide_id: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """P(positive) of the ``test`` tiles from a head fitted on the ``train`` tiles."""
    if config.head in SPATIAL_HEADS:
        from training.tiles.spatial import fit_predict_spatial

        return fit_predict_spatial(
            config.head, x, coords, slide_id, y, train, test, seed=config.seed
        )
    model = fit_head(config.head, x[train], y[train], seed=config.seed, c=config.c)
    return predict_proba(model, x[test])


def _folds(data: TileData, config: TileClassifierConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = len(np.unique(data.patient_id))
    n = min(config.folds, n_patients)
    if n < 2:
        raise ConfigError(f"patient-level folds need at least 2 patients, found {n_patients}")
    splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=config.seed)
    return list(splitter.split(data.embeddings, data.labels, groups=data.patient_id))


def cross_validated_probs(data: TileData, config: TileClassifierConfig) -> np.ndarray:
    """Out-of-fold P(positive) per tile, folds by patient."""
    x, coords = _features(data, config), _coords(data, config)
    probs = np.full(len(data), np.nan)
    for train, test in _folds(data, config):
        probs[test] = fold_probs(config, x, coords, data.slide_id, data.labels, train, test)
    return probs


def _truth(store: FeatureStore, slide_id: str, task: TileTask) -> Any:
    from features.annotations import load_annotations

    return load_annotations(store, slide_id, task.annotations).by_class().get(task.positive)


def slide_metrics(
    store: FeatureStore, data: TileData, probs: np.ndarray, config: TileClassifierConfig
) -> list[dict[str, Any]]:
    from training.tiles.maps import dice_iou, tile_dice_iou

    out = []
    for sid in data.slides():
        idx = data.slide_id == sid
        area = dice_iou(
            data.coords[idx],
            data.extent[idx],
            probs[idx],
            config.map_threshold,
            _truth(store, sid, config.task),
        )
        tiles = tile_dice_iou(data.labels[idx], probs[idx] >= config.map_threshold)
        out.append(
            {
                "slide_id": sid,
                **area,
                "tile_dice": tiles["dice"],
                "tile_iou": tiles["iou"],
                "n_tiles": int(idx.sum()),
                "n_positive": int(data.labels[idx].sum()),
            }
        )
    return out


def _metrics(
    data: TileData, probs: np.ndarray, config: TileClassifierConfig
) -> dict[str, dict[str, float]]:
    from training.probe.metrics import auroc, average_precision, patient_bootstrap

    out = {}
    for name, metric in (("auroc", auroc), ("auprc", average_precision)):
        lo, hi = patient_bootstrap(
            data.labels, probs, data.patient_id, metric, n_boot=config.n_boot, seed=config.seed
        )
        out[name] = {"value": float(metric(data.labels, probs)), "ci_low": lo, "ci_high": hi}
    return out


def write_predictions(store: FeatureStore, result: TileResult) -> str:
    """Every slide's tile probabilities into ``predictions/<name>``, in one write."""
    import pyarrow as pa

    data = result.data
    rows = {}
    for sid in data.slides():
        idx = data.slide_id == sid
        rows[sid] = pa.table(
            {
                "x": pa.array(data.coords[idx, 0], pa.int64()),
                "y": pa.array(data.coords[idx, 1], pa.int64()),
                "value": pa.array(result.probs[idx], pa.float32()),
            }
        )
    store.write_derived("predictions", result.name, rows)
    result.outputs["predictions"] = f"predictions/{result.name}"
    return result.outputs["predictions"]


def _write_maps(
    store: FeatureStore, result: TileResult, out_dir: Path | None, max_pngs: int
) -> None:
    from features.annotations.stored import slide_frame
    from training.tiles.maps import dense_grid, overlay_png

    data, name = result.data, result.name
    by_slide = {s["slide_id"]: s for s in result.per_slide}
    write_predictions(store, result)
    for i, sid in enumerate(data.slides()):
        idx = data.slide_id == sid
        coords, probs = data.coords[idx], result.probs[idx]
        frame = slide_frame(store, sid)
        if frame.mpp is None:
            continue
        grid, stride = dense_grid(coords, probs, frame.size)
        store.arrays(sid).write_heatmap(name, grid, mpp=stride * frame.mpp)
        if out_dir is not None and i < max_pngs:
            path = overlay_png(
                out_dir / f"{sid}.png",
                slide_id=sid,
                coords=coords,
                probs=probs,
                slide_size=frame.size,
                mpp=frame.mpp,
                truth=_truth(store, sid, result.config.task),
                label=result.config.task.positive,
                metrics=by_slide[sid],
            )
            result.outputs[f"png:{sid}"] = str(path)


def finish_tile_classifier(
    store: FeatureStore,
    config: TileClassifierConfig,
    data: TileData,
    probs: np.ndarray,
    *,
    out_dir: str | Path | None = None,
    name: str | None = None,
    write: bool = True,
    max_pngs: int = 8,
) -> TileResult:
    """Metrics, maps and ``metrics.json`` from out-of-fold ``probs`` (however they were
    fitted: here, or on Ray Train by :mod:`training.tiles.job`)."""
    from infra.files import atomic_write_json

    if np.isnan(probs).any():
        raise ConfigError(f"{int(np.isnan(probs).sum())} tiles got no out-of-fold probability")
    result = TileResult(
        config,
        name or config.default_name(),
        _metrics(data, probs, config),
        slide_metrics(store, data, probs, config),
        probs,
        data,
    )
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    if write:
        _write_maps(store, result, folder, max_pngs)
    if folder is not None:
        result.outputs["metrics"] = str(folder / "metrics.json")
        atomic_write_json(
            folder / "metrics.json", json.loads(json.dumps(result.summary(), default=str))
        )
    log.info(
        "tile classifier %s: AUROC %.3f, Dice %.3f over %d slides",
        result.name,
        result.metrics["auroc"]["value"],
        result.dice,
        len(result.per_slide),
    )
    return result


def run_tile_classifier(
    store: FeatureStore,
    config: TileClassifierConfig,
    *,
    slide_ids: list[str] | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    write: bool = True,
    max_pngs: int = 8,
) -> TileResult:
    """Fit and evaluate a tile head in this process (module docstring); ``write=False``
    stores nothing. ``slidebank train`` with ``kind: tiles`` fits the folds on Ray Train."""
    data = load_tiles(store, config.task, slide_ids)
    if len(np.unique(data.labels)) < 2:
        raise ConfigError(
            f"every tile has the same label for {config.task.positive!r} at "
            f"coverage >= {config.task.threshold}"
        )
    probs = cross_validated_probs(data, config)
    return finish_tile_classifier(
        store, config, data, probs, out_dir=out_dir, name=name, write=write, max_pngs=max_pngs
    )

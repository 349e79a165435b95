"""Tile-level tasks: labels from annotation coverage, heads over stored embeddings,
patient-level folds, tile AUROC with CIs, prediction maps written back to the store."""

from training.tiles.data import TileData, TileTask, load_tiles
from training.tiles.heads import HEADS, context_features
from training.tiles.run import (
    TileClassifierConfig,
    TileResult,
    cross_validated_probs,
    run_tile_classifier,
)

__all__ = [
    "HEADS",
    "TileClassifierConfig",
    "TileData",
    "TileResult",
    "TileTask",
    "context_features",
    "cross_validated_probs",
    "load_tiles",
    "run_tile_classifier",
]

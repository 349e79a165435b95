"""Tile-level tasks: labels from annotation coverage, heads over stored embeddings,
patient-level folds, tile AUROC with CIs, prediction maps written back to the store,
and per-slide tumour burden (area, fraction, nuclear purity) as slide-level features."""

from training.tiles.burden import (
    SLIDE_FEATURES,
    BurdenConfig,
    burden_table,
    compute_burden,
    nuclei_counts,
    tumour_burden,
)
from training.tiles.data import TileData, TileTask, load_tiles
from training.tiles.heads import HEADS, context_features
from training.tiles.run import (
    TileClassifierConfig,
    TileResult,
    cross_validated_probs,
    run_tile_classifier,
    write_predictions,
)

__all__ = [
    "HEADS",
    "SLIDE_FEATURES",
    "BurdenConfig",
    "TileClassifierConfig",
    "TileData",
    "TileResult",
    "TileTask",
    "burden_table",
    "compute_burden",
    "context_features",
    "cross_validated_probs",
    "load_tiles",
    "nuclei_counts",
    "run_tile_classifier",
    "tumour_burden",
    "write_predictions",
]

"""Spatial model families, registered into ``training.mil.models`` by name:

* ``mean_pool`` — order-blind baseline (mean of embedded tiles);
* ``tile_gnn`` — GIN/GCN/GAT layers over the tile grid + attention pooling, plus an
  order-blind ABMIL branch summed at the logits (composition is never lost);
* ``module_graph`` — a graph over tissue modules (composition, mean embedding, contact
  counts and enrichment), modules fitted on the training bags only;
* ``module_stats`` — the honest baseline: module shares, contact enrichment and mean
  distances between modules → standardised linear (logistic) head;
* ``region_transformer`` — a transformer per ~4096 px region of tiles and one over
  regions, with attention biased by real 2-D distances (not bag order).

All take ``(x, label, coords=..., edges=None)`` and return :class:`MILOutput`.
"""

from training.spatial.models import (
    baselines,
    module_graph,
    module_stats,
    region_transformer,
    tile_gnn,
)

__all__ = ["baselines", "module_graph", "module_stats", "region_transformer", "tile_gnn"]

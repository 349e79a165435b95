"""Spatial context for slide-level models: tile graphs, tissue modules, module
interaction graphs, spatial models (registered into ``training.mil.models``), masking
diagnostics (synthetic spatial cohorts live in :mod:`synthetic.spatial`).

>>> from training.mil.models import MILConfig, build_model
>>> model = build_model(MILConfig(model="tile_gnn", in_dim=64, options={"conv": "gin"}))

Submodules load torch, torch_geometric and scikit-learn when first used.
"""

from __future__ import annotations

from infra.lazy import lazy_exports

_EXPORTS = {
    "GraphSpec": "training.spatial.graphs",
    "tile_graph": "training.spatial.graphs",
    "grid_edges": "training.spatial.graphs",
    "knn_edges": "training.spatial.graphs",
    "ModuleCodebook": "training.spatial.modules",
    "ModuleSpec": "training.spatial.modules",
    "fit_modules": "training.spatial.modules",
    "assign_modules": "training.spatial.modules",
    "module_graph": "training.spatial.interactions",
    "save_codebook": "training.spatial.store_io",
    "load_codebook": "training.spatial.store_io",
    "cached_graph": "training.spatial.store_io",
    "module_masking": "training.spatial.masking",
    "edge_masking": "training.spatial.masking",
    "coordinate_shuffle": "training.spatial.masking",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

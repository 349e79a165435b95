"""The facade's exports: committed rows as AnnData, CLAM/TRIDENT h5 per slide, Parquet.

Thin names over :mod:`features.store.export` (see there for the layouts). None replaces
an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

from features.store.export import to_anndata as export_anndata
from features.store.export import to_h5_per_slide as export_h5
from features.store.export import to_parquet as export_parquet

__all__ = ["export_anndata", "export_h5", "export_parquet"]

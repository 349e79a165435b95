"""Entry points the CLI calls: fit tissue modules on training folds, apply them to slides."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from infra.errors import ConfigError
from training.spatial.modules import ModuleSpec, fit_modules

__all__ = ["fit_and_apply_modules"]

log = logging.getLogger(__name__)


def fit_and_apply_modules(
    store_uri: str,
    cohort: pd.DataFrame,
    *,
    train_folds: Sequence[int],
    k: int = 8,
    encoder: str | None = None,
    smooth: float = 0.0,
    seed: int = 0,
    fold_column: str = "fold",
    apply: bool = True,
    png_dir: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit K modules on the slides of ``train_folds`` only, save the codebook in the store,
    then (``apply``) write every cohort slide's module map; PNGs into ``png_dir``."""
    from features.store import FeatureStore
    from training.spatial.plots import apply_modules, render_module_map
    from training.spatial.store_io import save_codebook

    if fold_column not in cohort.columns:
        raise ConfigError(f"cohort has no {fold_column!r} column (see `slidebank cohort build`)")
    train = cohort[cohort[fold_column].isin(list(train_folds))]
    if train.empty:
        raise ConfigError(f"no cohort slides in folds {list(train_folds)}")
    store = FeatureStore.open(store_uri, storage_options)
    bags = (
        (b.slide_id, b.embeddings, b.coords)
        for b in store.iter_bags(list(train["slide_id"]), encoder=encoder)
    )
    book = fit_modules(bags, ModuleSpec(k=k, seed=seed, smooth=smooth), encoder=encoder)
    digest = save_codebook(store, book)
    out: dict[str, Any] = {"codebook": digest, "k": k, "train_slides": len(book.slide_ids)}
    if apply:
        counts = apply_modules(store, book, digest, list(cohort["slide_id"]), encoder=encoder)
        out["slides_assigned"] = len(counts)
        if png_dir is not None:
            for sid in counts:
                render_module_map(store, sid, digest, Path(png_dir) / f"{sid}_modules.png")
    return out

"""In-process k-fold cross-validation with the Ray workers' own training loop.

``training.mil.train.fit`` is the function every Ray Train worker runs; here it runs in
the calling process (one worker, no DDP), so benchmarks and tests compare models on the
same folds without paying Ray's start-up per fold. Fold k tests, fold k+1 validates
(early stopping), the rest trains — the rule of ``training.mil.job.run_cross_validation``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from infra.errors import ConfigError
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.heads import Head, make_head
from training.mil.models import build_model
from training.mil.train import TrainConfig, fit, predict

__all__ = ["FoldRun", "cross_validate"]


@dataclass
class FoldRun:
    fold: int
    model: torch.nn.Module
    head: Head
    train_slides: list[str]
    val_slides: list[str]
    test_slides: list[str]
    predictions: list[dict[str, Any]]
    best_epoch: int


def cross_validate(store_uri: str, encoder: str, table: pd.DataFrame, cfg: TrainConfig, targets: list[str],
                   *, bags: dict | None = None, fold_column: str = "fold") -> list[FoldRun]:
    """k folds of ``fit`` → best weights → predictions on the test fold (whole bags)."""
    folds = sorted(table[fold_column].unique())
    if len(folds) < 3:
        raise ConfigError(f"cross-validation needs >= 3 folds, got {len(folds)}")
    cache = {} if bags is None else bags

    def data(part: pd.DataFrame, train: bool) -> BagDataset:
        items, _ = targets_from_cohort(part, cfg.task, targets)
        return BagDataset(store_uri, items, encoder=encoder, max_patches=cfg.max_patches, seed=cfg.seed,
                          train=train).share_cache(cache)

    runs = []
    for i, fold in enumerate(folds):
        val_fold = folds[(i + 1) % len(folds)]
        test, val = table[table[fold_column] == fold], table[table[fold_column] == val_fold]
        train = table[~table[fold_column].isin([fold, val_fold])]
        train_data = data(train, True)
        y = np.array([item.target for item in train_data.items])
        head = make_head(cfg.task, y[:, 0] if cfg.task == "binary" else y, weighted=cfg.weighted_loss)
        in_dim = int(train_data[0][0].shape[1])
        run_cfg = replace(cfg, model=replace(cfg.model, in_dim=in_dim, n_outputs=head.n_outputs))
        result = fit(run_cfg, train_data, data(val, False), head)
        model = build_model(run_cfg.model)
        model.load_state_dict(result.best_state)
        test_data = data(test, False)
        test_data.max_patches = None
        runs.append(FoldRun(int(fold), model, head, list(train["slide_id"]), list(val["slide_id"]),
                            list(test["slide_id"]), predict(model, test_data, head), result.best_epoch))
    return runs

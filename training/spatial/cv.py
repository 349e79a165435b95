"""In-process k-fold cross-validation with the Ray workers' own training loop.

``training.mil.train.fit`` is the function every Ray Train worker runs; here it runs in
the calling process (one worker, no DDP), so benchmarks and tests compare models on the
same folds without paying Ray's start-up per fold. Fold k tests, fold k+1 validates
(early stopping), the rest trains — the rule of ``training.mil.job.run_cross_validation``.
``train_slides`` caps the training set (patients drawn balanced by label, seeded) to
measure sample efficiency on unchanged validation and test folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from infra.errors import ConfigError
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.heads import Head, make_head
from training.mil.models import build_model
from training.mil.train import TrainConfig, fit, predict

__all__ = ["FoldRun", "cross_validate", "subsample_patients"]


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
    history: list[dict[str, float]] = field(
        default_factory=list
    )  # per epoch: train_loss, val_score, ...


def subsample_patients(
    train: pd.DataFrame, n_slides: int, seed: int, label: str | None = "label"
) -> pd.DataFrame:
    """About ``n_slides`` training slides from whole patients, balanced by ``label`` when present.

    Patients, not slides, are drawn so a patient's slides stay together; per label the
    patients are taken in a seeded random order until that label's share is reached.
    """
    if n_slides < 2:
        raise ConfigError(f"train_slides must be >= 2, got {n_slides}")
    if len(train) <= n_slides:
        return train
    rng = np.random.default_rng(seed)
    groups = (
        [train]
        if label is None or label not in train
        else [g for _, g in train.groupby(label, sort=True)]
    )
    keep: list[str] = []
    for i, group in enumerate(groups):
        want = n_slides // len(groups) + (1 if i < n_slides % len(groups) else 0)
        sizes = group.groupby("patient_id", sort=True).size()
        order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
        taken = 0
        for patient in order:
            if taken >= want:
                break
            keep.append(patient)
            taken += int(sizes[patient])
    return train[train["patient_id"].isin(keep)]


def cross_validate(
    store_uri: str,
    encoder: str,
    table: pd.DataFrame,
    cfg: TrainConfig,
    targets: list[str],
    *,
    bags: dict | None = None,
    fold_column: str = "fold",
    train_slides: int | None = None,
) -> list[FoldRun]:
    """k folds of ``fit`` → best weights → predictions on the test fold (whole bags)."""
    folds = sorted(table[fold_column].unique())
    if len(folds) < 3:
        raise ConfigError(f"cross-validation needs >= 3 folds, got {len(folds)}")
    cache = {} if bags is None else bags

    def data(part: pd.DataFrame, train: bool) -> BagDataset:
        items, _ = targets_from_cohort(part, cfg.task, targets)
        return BagDataset(
            store_uri,
            items,
            encoder=encoder,
            max_patches=cfg.max_patches,
            seed=cfg.seed,
            train=train,
        ).share_cache(cache)

    runs = []
    for i, fold in enumerate(folds):
        val_fold = folds[(i + 1) % len(folds)]
        test, val = table[table[fold_column] == fold], table[table[fold_column] == val_fold]
        train = table[~table[fold_column].isin([fold, val_fold])]
        if train_slides is not None:
            label = targets[0] if cfg.task == "binary" else None
            train = subsample_patients(train, train_slides, cfg.seed + 1000 * i, label)
        train_data = data(train, True)
        y = np.array([item.target for item in train_data.items])
        head = make_head(
            cfg.task, y[:, 0] if cfg.task == "binary" else y, weighted=cfg.weighted_loss
        )
        in_dim = int(train_data[0][0].shape[1])
        run_cfg = replace(cfg, model=replace(cfg.model, in_dim=in_dim, n_outputs=head.n_outputs))
        result = fit(run_cfg, train_data, data(val, False), head)
        model = build_model(run_cfg.model)
        model.load_state_dict(result.best_state)
        test_data = data(test, False)
        test_data.max_patches = None
        runs.append(
            FoldRun(
                int(fold),
                model,
                head,
                list(train["slide_id"]),
                list(val["slide_id"]),
                list(test["slide_id"]),
                predict(model, test_data, head),
                result.best_epoch,
                result.history,
            )
        )
    return runs

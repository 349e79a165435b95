"""Ray Train jobs: one run (train / validate / test) and k-fold cross-validation.

Workers train with DDP (``TorchTrainer``; CPU workers here, GPU workers on a cluster);
the rank-0 worker checkpoints the best weights under ``storage_path`` (by default
``<store>/mil_runs``, so a run on S3 checkpoints to S3). With storage options (a
custom endpoint, explicit keys) the checkpoint location is handed to Ray Train as a
pyarrow filesystem wrapping the same fsspec filesystem the store uses, since Ray's own
``s3://`` resolution only sees environment credentials and AWS endpoints. The driver
then loads the best checkpoint once and predicts the held-out and external sets
itself: prediction is cheap next to training and this keeps attention maps out of the
workers' reports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.validate import at_least, non_empty
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.heads import Head, make_head
from training.mil.train import TrainConfig, load_checkpoint_state, predict

__all__ = ["CVResult", "JobConfig", "RunResult", "cv_splits", "run_cross_validation", "run_training"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig:
    store_uri: str
    train: TrainConfig = field(default_factory=TrainConfig)
    label_columns: tuple[str, ...] = ("label",)
    encoder: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    storage_path: str | None = None
    name: str = "mil"
    max_failures: int = 0
    cache_bags: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: a running Ray cluster (``auto``, ``host:port``, ``ray://...``); else RAY_ADDRESS, else embedded
    address: str | None = None

    def __post_init__(self) -> None:
        at_least("JobConfig.num_workers", self.num_workers, 1)
        non_empty("JobConfig.label_columns", self.label_columns)

    def checkpoint_root(self) -> str:
        return self.storage_path or self.store_uri.rstrip("/") + "/mil_runs"

    def run_storage(self) -> tuple[str, Any]:
        """(storage_path, storage_filesystem) for Ray Train's ``RunConfig``."""
        from infra.storage import is_local, open_filesystem, strip_protocol

        root = self.checkpoint_root()
        if is_local(root):
            return strip_protocol(root), None
        if not self.storage_options:
            return root, None  # Ray resolves the URI with the environment's credentials
        import pyarrow.fs

        fs, path = open_filesystem(root, self.storage_options)
        return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))

    def checkpoint_uri(self, path: str) -> str:
        """A checkpoint path as Ray reports it, as a URI (Ray strips the protocol when
        it was given a filesystem)."""
        from fsspec.core import split_protocol

        root = self.checkpoint_root()
        protocol, _ = split_protocol(root)
        if protocol in (None, "file", "local") or split_protocol(path)[0] is not None:
            return path
        return f"{protocol}://{path.lstrip('/')}"


@dataclass
class RunResult:
    name: str
    head: Head
    history: list[dict[str, Any]]
    checkpoint_path: str
    predictions: dict[str, list[dict[str, Any]]]  # set name -> per-slide rows
    class_names: list[str]


@dataclass
class CVResult:
    folds: list[RunResult]

    def pooled(self, split: str = "test") -> list[dict[str, Any]]:
        return [row for fold in self.folds for row in fold.predictions.get(split, [])]


def _dataset(job: JobConfig, table: pd.DataFrame, *, train: bool) -> tuple[BagDataset, list[str]]:
    items, names = targets_from_cohort(table, job.train.task, job.label_columns)
    data = BagDataset(job.store_uri, items, encoder=job.encoder, max_patches=job.train.max_patches,
                      seed=job.train.seed, train=train, storage_options=job.storage_options,
                      cache=job.cache_bags)
    return data, names


def _in_dim(job: JobConfig, data: BagDataset) -> int:
    return int(data[0][0].shape[1])


@dataclass
class _Fold:
    key: str
    head: Head
    names: list[str]
    model_cfg: Any
    spec: dict[str, Any]


def _prepare_fold(job: JobConfig, key: str, train_table: pd.DataFrame, val_table: pd.DataFrame) -> _Fold:
    train_data, names = _dataset(job, train_table, train=True)
    val_data, _ = _dataset(job, val_table, train=False)
    targets = np.array([item.target for item in train_data.items])
    n_classes = len(names) if job.train.task == "multiclass" else None
    head = make_head(job.train.task, targets[:, 0] if job.train.task in ("binary", "multiclass") else targets,
                     n_classes=n_classes, weighted=job.train.weighted_loss)
    model_cfg = replace(job.train.model, in_dim=_in_dim(job, train_data), n_outputs=head.n_outputs)
    spec = {"fold": key, "train": replace(job.train, model=model_cfg), "head": head,
            "train_data": train_data, "val_data": val_data}
    return _Fold(key, head, names, model_cfg, spec)


def _fit_folds(job: JobConfig, folds: list[_Fold]) -> dict[str, tuple[list[dict[str, Any]], Any]]:
    """Train every fold in ONE TorchTrainer (see training.mil.fold_loop for why); returns
    fold key -> (history, checkpoint)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from infra.local_cluster import resolve_address
    from infra.ray_runtime import connect

    # No-op when Ray is up; else RAY_ADDRESS / address / a `cluster up` cluster / embedded.
    connect(resolve_address(job.address))
    storage_path, storage_filesystem = job.run_storage()
    trainer = TorchTrainer(
        _folds_entry,
        train_loop_config={"folds": [f.spec for f in folds]},
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu),
        run_config=ray.train.RunConfig(
            name=job.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),  # one per fold
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    found: dict[str, tuple[list[dict[str, Any]], Any]] = {}
    for checkpoint, metrics in result.best_checkpoints or []:
        found[str(metrics["fold"])] = (list(metrics.get("history", [])), checkpoint)
        log.info("fold %s: trained in %.1f s", metrics["fold"], metrics.get("fit_s", float("nan")))
    missing = [f.key for f in folds if f.key not in found]
    if missing:
        raise ConfigError(f"run {job.name!r} reported no checkpoint for fold(s) {missing}")
    return found


def _folds_entry(config: dict[str, Any]) -> None:
    # Imported in the worker so the driver does not need Ray's torch backend loaded.
    from training.mil.fold_loop import folds_loop_per_worker

    folds_loop_per_worker(config)


def _result(job: JobConfig, fold: _Fold, fitted: tuple[list[dict[str, Any]], Any],
            eval_tables: dict[str, pd.DataFrame] | None, attention: bool, name: str) -> RunResult:
    from training.mil.models import build_model

    history, checkpoint = fitted
    model = build_model(fold.model_cfg)
    with checkpoint.as_directory() as path:
        model.load_state_dict(load_checkpoint_state(path))
    predictions = {}
    for set_name, table in (eval_tables or {}).items():
        data, _ = _dataset(job, table, train=False)
        predictions[set_name] = predict(model, data, fold.head, attention=attention)
    return RunResult(name, fold.head, history, job.checkpoint_uri(checkpoint.path), predictions, fold.names)


def run_training(
    job: JobConfig,
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    eval_tables: dict[str, pd.DataFrame] | None = None,
    *,
    attention: bool = False,
) -> RunResult:
    """Train on ``train_table`` with early stopping on ``val_table`` (Ray TorchTrainer),
    then predict ``eval_tables`` (e.g. ``{"test": ..., "external": ...}``)."""
    fold = _prepare_fold(job, "0", train_table, val_table)
    fitted = _fit_folds(job, [fold])
    return _result(job, fold, fitted["0"], eval_tables, attention, job.name)


def cv_splits(table: pd.DataFrame, fold_column: str = "fold"
              ) -> list[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """(fold, train, val, test) per fold: fold k is the test set, fold k+1 validation."""
    if fold_column not in table.columns:
        raise ConfigError(f"cohort has no {fold_column!r} column (use training.cohorts.assign_folds)")
    folds = sorted(table[fold_column].unique())
    if len(folds) < 3:
        raise ConfigError(f"cross-validation needs >= 3 folds (test, val, train), got {len(folds)}")
    out = []
    for i, fold in enumerate(folds):
        val_fold = folds[(i + 1) % len(folds)]
        test = table[table[fold_column] == fold]
        val = table[table[fold_column] == val_fold]
        train = table[~table[fold_column].isin([fold, val_fold])]
        out.append((str(fold), train, val, test))
    return out


def run_cross_validation(
    job: JobConfig,
    table: pd.DataFrame,
    *,
    fold_column: str = "fold",
    external: pd.DataFrame | None = None,
    attention: bool = False,
) -> CVResult:
    """k-fold CV: fold k is the test set, fold k+1 validation, the rest train; all folds
    train in one Ray TorchTrainer (start-up paid once).

    Folds come from :func:`training.cohorts.assign_folds`, so a patient's slides are in
    one fold only; every fold's model also predicts the external cohort when given.
    """
    splits = cv_splits(table, fold_column)
    folds = [_prepare_fold(job, key, train, val) for key, train, val, _ in splits]
    fitted = _fit_folds(job, folds)
    results = []
    for fold, (key, _, _, test) in zip(folds, splits, strict=True):
        evals = {"test": test} if external is None else {"test": test, "external": external}
        run = _result(job, fold, fitted[key], evals, attention, f"{job.name}-fold{key}")
        log.info("fold %s: best val score %s", key, _best(run.history))
        results.append(run)
    return CVResult(results)


def _best(history: list[dict[str, Any]]) -> float:
    scores = [h.get("best_score", math.nan) for h in history]
    return float(np.nanmax(scores)) if scores else math.nan

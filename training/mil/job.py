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
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.heads import Head, make_head
from training.mil.train import TrainConfig, load_checkpoint_state, predict

__all__ = ["CVResult", "JobConfig", "RunResult", "run_cross_validation", "run_training"]

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
    # Seconds between reports to Ray Train (metrics history and newest best weights);
    # see training.mil.train.RayReporter for why not every epoch.
    report_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be >= 1, got {self.num_workers}")
        if not self.label_columns:
            raise ConfigError("label_columns is empty")
        if self.report_interval_s < 0:
            raise ConfigError(f"report_interval_s must be >= 0, got {self.report_interval_s}")

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
    import ray.train
    from ray.train.torch import TorchTrainer

    train_data, names = _dataset(job, train_table, train=True)
    val_data, _ = _dataset(job, val_table, train=False)
    targets = np.array([item.target for item in train_data.items])
    n_classes = len(names) if job.train.task == "multiclass" else None
    head = make_head(job.train.task, targets[:, 0] if job.train.task in ("binary", "multiclass") else targets,
                     n_classes=n_classes, weighted=job.train.weighted_loss)
    model_cfg = replace(job.train.model, in_dim=_in_dim(job, train_data), n_outputs=head.n_outputs)
    cfg = replace(job.train, model=model_cfg)
    storage_path, storage_filesystem = job.run_storage()
    trainer = TorchTrainer(
        _worker_entry,
        train_loop_config={"train": cfg, "head": head, "train_data": train_data, "val_data": val_data,
                           "report_interval_s": job.report_interval_s},
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu),
        run_config=ray.train.RunConfig(
            name=job.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            # Checkpoints are only reported on improvement, so the latest is the best.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise ConfigError(f"run {job.name!r} reported no checkpoint")
    from training.mil.models import build_model

    model = build_model(model_cfg)
    with result.checkpoint.as_directory() as path:
        model.load_state_dict(load_checkpoint_state(path))
    history = _history(result)
    predictions = {}
    for set_name, table in (eval_tables or {}).items():
        data, _ = _dataset(job, table, train=False)
        predictions[set_name] = predict(model, data, head, attention=attention)
    return RunResult(job.name, head, history, job.checkpoint_uri(result.checkpoint.path), predictions, names)


def _worker_entry(config: dict[str, Any]) -> None:
    # Imported in the worker so the driver does not need Ray's torch backend loaded.
    from training.mil.train import train_loop_per_worker

    train_loop_per_worker(config)


def _history(result: Any) -> list[dict[str, Any]]:
    metrics = dict(result.metrics or {})
    return list(metrics.get("history", [])) or ([metrics] if metrics else [])


def run_cross_validation(
    job: JobConfig,
    table: pd.DataFrame,
    *,
    fold_column: str = "fold",
    external: pd.DataFrame | None = None,
    attention: bool = False,
) -> CVResult:
    """k-fold CV as k runs: fold k is the test set, fold k+1 validation, the rest train.

    Folds come from :func:`training.cohorts.assign_folds`, so a patient's slides are in
    one fold only; every fold's model also predicts the external cohort when given.
    """
    if fold_column not in table.columns:
        raise ConfigError(f"cohort has no {fold_column!r} column (use training.cohorts.assign_folds)")
    folds = sorted(table[fold_column].unique())
    if len(folds) < 3:
        raise ConfigError(f"cross-validation needs >= 3 folds (test, val, train), got {len(folds)}")
    results = []
    for i, fold in enumerate(folds):
        val_fold = folds[(i + 1) % len(folds)]
        test = table[table[fold_column] == fold]
        val = table[table[fold_column] == val_fold]
        train = table[~table[fold_column].isin([fold, val_fold])]
        evals = {"test": test} if external is None else {"test": test, "external": external}
        run = run_training(replace(job, name=f"{job.name}-fold{fold}"), train, val, evals, attention=attention)
        log.info("fold %s: best val score %s", fold, _best(run.history))
        results.append(run)
    return CVResult(results)


def _best(history: list[dict[str, Any]]) -> float:
    scores = [h.get("best_score", math.nan) for h in history]
    return float(np.nanmax(scores)) if scores else math.nan

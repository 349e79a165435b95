"""Ray Train jobs: one run (train / validate / test) and k-fold cross-validation.

Workers train with DDP (``TorchTrainer``; CPU workers here, GPU workers on a cluster).
When a fold ends, the rank-0 worker saves it (best weights, history, predictions of the
held-out and external sets) under ``JobConfig.fold_root()``: ``slidebank train`` puts that
in the run folder, else it is ``<store>/mil_runs/<name>/folds`` (a run on S3 saves to S3
through fsspec with the job's storage options). Ray Train's own storage
(``storage_path``; with storage options handed over as a pyarrow filesystem wrapping the
store's fsspec filesystem, since Ray's ``s3://`` resolution only sees environment
credentials) holds only its run state. The driver reads the saved folds back, so a fold
finished before Ray failed is never lost, and recomputes attention maps from the saved
weights when asked (they stay out of the saved records).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError, TrainingFailedError
from infra.validate import at_least, non_empty
from training.mil import _faults
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.fold_records import FoldRecord
from training.mil.heads import Head, make_head
from training.mil.train import TrainConfig, load_checkpoint_state, predict

__all__ = [
    "CVResult",
    "JobConfig",
    "RunResult",
    "TrainingFailedError",
    "cv_splits",
    "run_cross_validation",
    "run_training",
]

log = logging.getLogger(__name__)

#: receives one line per epoch and per fold (the CLI prints them)
Progress = Callable[[str], None]


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
    #: Ray Train restarts the workers this many times after a failure (a dead worker, a
    #: failed health check); finished folds are not trained again (training.mil.fold_loop)
    max_failures: int = 2
    cache_bags: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: a running Ray cluster (``auto``, ``host:port``, ``ray://...``); else RAY_ADDRESS, else embedded
    address: str | None = None
    #: where each fold is saved when it ends (None: ``<checkpoint root>/<name>/folds``)
    fold_dir: str | None = None
    #: train in this process (one worker, no Ray): tests and small jobs
    in_process: bool = False

    def __post_init__(self) -> None:
        at_least("JobConfig.num_workers", self.num_workers, 1)
        at_least("JobConfig.max_failures", self.max_failures, 0)
        non_empty("JobConfig.label_columns", self.label_columns)
        if self.in_process and self.num_workers != 1:
            raise ConfigError(
                f"JobConfig.in_process trains in one process; num_workers is {self.num_workers}"
            )

    def fold_root(self) -> str:
        return self.fold_dir or f"{self.checkpoint_root().rstrip('/')}/{self.name}/folds"

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
    data = BagDataset(
        job.store_uri,
        items,
        encoder=job.encoder,
        max_patches=job.train.max_patches,
        seed=job.train.seed,
        train=train,
        storage_options=job.storage_options,
        cache=job.cache_bags,
    )
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


def _prepare_fold(
    job: JobConfig,
    key: str,
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    eval_tables: dict[str, pd.DataFrame] | None = None,
    *,
    index: int = 1,
    total: int = 1,
) -> _Fold:
    train_data, names = _dataset(job, train_table, train=True)
    val_data, _ = _dataset(job, val_table, train=False)
    evals = {
        name: _dataset(job, table, train=False)[0] for name, table in (eval_tables or {}).items()
    }
    targets = np.array([item.target for item in train_data.items])
    n_classes = len(names) if job.train.task == "multiclass" else None
    head = make_head(
        job.train.task,
        targets[:, 0] if job.train.task in ("binary", "multiclass") else targets,
        n_classes=n_classes,
        weighted=job.train.weighted_loss,
    )
    model_cfg = replace(job.train.model, in_dim=_in_dim(job, train_data), n_outputs=head.n_outputs)
    train_cfg = replace(job.train, model=model_cfg)
    spec = {
        "fold": key,
        "index": index,
        "total": total,
        "train": train_cfg,
        "head": head,
        "train_data": train_data,
        "val_data": val_data,
        "eval_data": evals,
        "hash": _fold_hash(job, key, train_cfg, {"train": train_data, "val": val_data, **evals}),
    }
    return _Fold(key, head, names, model_cfg, spec)


def _fold_hash(
    job: JobConfig, key: str, train_cfg: TrainConfig, sets: dict[str, BagDataset]
) -> str:
    """What decides a fold's saved result; the worker count is left out (DDP takes the
    same steps on 1 or N workers, see training.mil.train)."""
    from training.mil.fold_records import config_hash

    return config_hash(
        {
            "fold": key,
            "train": asdict(train_cfg),
            "labels": list(job.label_columns),
            "encoder": job.encoder,
            "store": job.store_uri,
            "slides": {name: [item.slide_id for item in data.items] for name, data in sets.items()},
        }
    )


def _fit_folds(
    job: JobConfig, folds: list[_Fold], progress: Progress | None = None
) -> dict[str, FoldRecord]:
    """Train the folds not saved yet (all in ONE TorchTrainer, see training.mil.fold_loop,
    or in this process with ``job.in_process``); returns fold key -> its saved record."""
    from training.mil.fold_loop import progress_line
    from training.mil.fold_records import read_fold

    root, options = job.fold_root(), job.storage_options
    found: dict[str, FoldRecord] = {}
    for fold in folds:
        saved = read_fold(root, fold.key, fold.spec["hash"], options)
        if saved is not None:
            found[fold.key] = saved
            log.info(
                "fold %s: finished earlier with the same config, reused from %s",
                fold.key,
                saved.uri,
            )
            if progress is not None:
                progress(
                    progress_line(
                        {
                            "kind": "reused",
                            "fold": fold.key,
                            "index": fold.spec["index"],
                            "total": fold.spec["total"],
                            "uri": saved.uri,
                        }
                    )
                )
    pending = [f for f in folds if f.key not in found]
    if pending:
        config = {
            "folds": [f.spec for f in pending],
            "fold_root": root,
            "storage_options": options,
            "faults": _faults.active(),
        }
        if job.in_process:
            from training.mil.fold_loop import run_folds

            emit = None if progress is None else (lambda event: progress(progress_line(event)))
            run_folds(config, emit=emit)
        else:
            _fit_on_ray(job, config, len(folds) - len(pending), len(folds), progress)
    for fold in pending:
        record = read_fold(root, fold.key, fold.spec["hash"], options)
        if record is None:
            raise TrainingFailedError(
                f"run {job.name!r}: fold {fold.key} ended without a saved result in {root}"
            )
        found[fold.key] = record
    return found


def _fit_on_ray(
    job: JobConfig, config: dict[str, Any], done: int, total: int, progress: Progress | None
) -> None:
    import ray.exceptions
    import ray.train
    from ray.train.torch import TorchTrainer

    from infra.local_cluster import resolve_address
    from infra.ray_runtime import connect

    # No-op when Ray is up; else RAY_ADDRESS / address / a `cluster up` cluster / embedded.
    connect(resolve_address(job.address))
    storage_path, storage_filesystem = job.run_storage()
    trainer = TorchTrainer(
        _folds_entry,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu),
        run_config=ray.train.RunConfig(
            name=job.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
        ),
    )
    with _progress_relay(config, progress):
        try:
            trainer.fit()
        except (ray.train.TrainingFailedError, ray.exceptions.RayError) as exc:
            raise TrainingFailedError(_failure_message(job, exc, config, done, total)) from exc


def _failure_message(
    job: JobConfig, exc: BaseException, config: dict[str, Any], done: int, total: int
) -> str:
    from training.mil.fold_records import read_fold

    saved = done + sum(
        read_fold(job.fold_root(), str(s["fold"]), s["hash"], job.storage_options) is not None
        for s in config["folds"]
    )
    tries = f"{job.max_failures} retr{'y' if job.max_failures == 1 else 'ies'}"
    return (
        f"run {job.name!r}: Ray Train failed after {tries} ({_first_cause(exc)}); "
        f"{saved} of {total} fold(s) saved in {job.fold_root()}; rerun with the same run id "
        f"(slidebank train CONFIG --resume {job.name}) to train the rest"
    )


def _first_cause(exc: BaseException) -> str:
    """The first worker's failure when Ray names them (``WorkerGroupError.worker_failures``),
    else the error's first line: what a user can act on, without Ray's traceback."""
    failures = getattr(exc, "worker_failures", None) or {}
    rank, cause = next(iter(sorted(failures.items(), key=lambda kv: kv[0])), (None, exc))
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = f"{type(cause).__name__}: {lines[0][:200] if lines else 'no message'}"
    return text if rank is None else f"worker {rank}: {text}"


@contextlib.contextmanager
def _progress_relay(config: dict[str, Any], progress: Progress | None) -> Iterator[None]:
    """Worker progress events to ``progress`` while the trainer runs: the workers put them
    on a Ray queue (their console output does not reach the driver), a thread here prints."""
    if progress is None:
        yield
        return
    from ray.util.queue import Empty, Queue

    from training.mil.fold_loop import progress_line

    queue = Queue(actor_options={"num_cpus": 0})
    config["progress"] = queue
    stop = threading.Event()

    def drain() -> None:
        while True:
            try:
                progress(progress_line(queue.get(timeout=0.5)))
            except Empty:
                if stop.is_set():
                    return
            except Exception as exc:  # progress must never fail the run (the queue's actor died)
                log.debug("progress relay stopped: %s", exc)
                return

    thread = threading.Thread(target=drain, name="train-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        config.pop("progress", None)
        with contextlib.suppress(Exception):
            queue.shutdown()


def _folds_entry(config: dict[str, Any]) -> None:
    # Imported in the worker so the driver does not need Ray's torch backend loaded.
    from training.mil.fold_loop import folds_loop_per_worker

    folds_loop_per_worker(config)


def _result(
    job: JobConfig, fold: _Fold, record: FoldRecord, attention: bool, name: str
) -> RunResult:
    """A fold's result from its saved record; attention maps (not saved) are recomputed
    from the saved weights when asked for."""
    predictions = dict(record.predictions)
    if attention and "test" in fold.spec["eval_data"]:
        from training.mil.models import build_model

        model = build_model(fold.model_cfg)
        model.load_state_dict(load_checkpoint_state(record.uri, job.storage_options))
        predictions["test"] = predict(
            model, fold.spec["eval_data"]["test"], fold.head, attention=True
        )
    return RunResult(name, fold.head, record.history, record.uri, predictions, fold.names)


def run_training(
    job: JobConfig,
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    eval_tables: dict[str, pd.DataFrame] | None = None,
    *,
    attention: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train on ``train_table`` with early stopping on ``val_table`` (Ray TorchTrainer),
    then predict ``eval_tables`` (e.g. ``{"test": ..., "external": ...}``). ``progress``
    gets one line per epoch and per fold."""
    fold = _prepare_fold(job, "0", train_table, val_table, eval_tables)
    fitted = _fit_folds(job, [fold], progress)
    return _result(job, fold, fitted["0"], attention, job.name)


def cv_splits(
    table: pd.DataFrame, fold_column: str = "fold"
) -> list[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """(fold, train, val, test) per fold: fold k is the test set, fold k+1 validation."""
    if fold_column not in table.columns:
        raise ConfigError(
            f"cohort has no {fold_column!r} column (use training.cohorts.assign_folds)"
        )
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
    progress: Progress | None = None,
) -> CVResult:
    """k-fold CV: fold k is the test set, fold k+1 validation, the rest train; all folds
    train in one Ray TorchTrainer (start-up paid once).

    Folds come from :func:`training.cohorts.assign_folds`, so a patient's slides are in
    one fold only; every fold's model also predicts the external cohort when given.
    Each fold is saved under ``job.fold_root()`` when it ends; a fold saved there with the
    same config is reused, so rerunning a run that failed trains only the rest.
    """
    splits = cv_splits(table, fold_column)
    folds = []
    for i, (key, train, val, test) in enumerate(splits):
        evals = {"test": test} if external is None else {"test": test, "external": external}
        folds.append(_prepare_fold(job, key, train, val, evals, index=i + 1, total=len(splits)))
    fitted = _fit_folds(job, folds, progress)
    results = []
    for fold in folds:
        key = fold.key
        run = _result(job, fold, fitted[key], attention, f"{job.name}-fold{key}")
        log.info("fold %s: best val score %s", key, _best(run.history))
        results.append(run)
    return CVResult(results)


def _best(history: list[dict[str, Any]]) -> float:
    scores = [h.get("best_score", math.nan) for h in history]
    return float(np.nanmax(scores)) if scores else math.nan

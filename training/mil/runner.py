"""Config-file driven runs (``slidebank train CONFIG.yaml key=value ...``) and evaluation
of saved predictions (``slidebank evaluate``). The CLI only parses; the logic lives here.

The YAML is parsed into a :class:`~training.mil.run_config.TrainRunConfig` (unknown keys
are errors); the cohort is checked against the store before any Ray worker starts
(:mod:`training.mil.preflight`); every run gets its own id, its own output folder
``<out>/<run_id>/`` and its own checkpoint folder ``<checkpoints>/<run_id>/``, so a
second run never deletes what the first one's ``summary.json`` points at.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.files import atomic_write, atomic_write_json, check_output
from training.mil.labels import code_positive, patient_predictions
from training.mil.run_config import TrainRunConfig, apply_overrides, load_run_config
from training.report import REPORT_NAME, write_report

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "apply_overrides",
    "evaluate_predictions",
    "evaluation_files",
    "load_run_config",
    "new_run_id",
    "run_from_config",
]

log = logging.getLogger(__name__)

_ID_DTYPES = {"slide_id": "string", "patient_id": "string"}


def new_run_id(name: str) -> str:
    """``<name>-<UTC time>-<random>``: sortable, unique, safe in paths and Ray run names."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{uuid.uuid4().hex[:6]}"


def _read_cohort(uri: str, storage_options: dict[str, Any]) -> pd.DataFrame:
    from infra.tables import read_table
    from training.cohorts.labels import is_excel, read_excel

    if is_excel(uri):  # .xlsx labels, as clinicians send them
        table = read_excel(uri, storage_options)
        return table.astype({k: v for k, v in _ID_DTYPES.items() if k in table.columns})
    return read_table(uri, storage_options, dtype=_ID_DTYPES)


def _splits(
    config: TrainRunConfig, table: pd.DataFrame
) -> list[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    from training.mil.job import cv_splits

    if config.cv:
        return cv_splits(table)
    if "split" not in table.columns:
        raise ConfigError(
            f"{config.cohort}: cv: false needs a `split` column "
            "(slidebank cohort build adds one; values train/val/test)"
        )
    parts = {name: table[table["split"] == name] for name in ("train", "val", "test")}
    return [("0", parts["train"], parts["val"], parts["test"])]


def _needs_folds(config: TrainRunConfig, table: pd.DataFrame) -> bool:
    return ("fold" if config.cv else "split") not in table.columns


def _assign_folds(
    config: TrainRunConfig, table: pd.DataFrame, labels: list[str], options: dict[str, Any]
) -> pd.DataFrame:
    """A plain labels table (no ``fold``/``split``): patient-level folds and splits from
    :mod:`training.cohorts` (stratified on the first label), so a labels CSV trains in
    one command. Patient ids are checked against the store there, as everywhere."""
    from training.cohorts.config import SplitConfig
    from training.cohorts.labels import build_label_cohort

    keep = [c for c in ("slide_id", "patient_id", *labels) if c in table.columns]
    splits = SplitConfig(n_splits=config.folds) if config.folds else None
    cohort = build_label_cohort(
        table[keep], config.store, label_columns=labels, splits=splits, storage_options=options
    )
    log.info(
        "%s has no %s column: assigned patient-level folds and splits to %d slides of %d patients",
        config.cohort,
        "fold" if config.cv else "split",
        len(cohort.table),
        cohort.table["patient_id"].nunique(),
    )
    return cohort.table


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def run_from_config(
    config: TrainRunConfig,
    *,
    resume: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Check, train (CV or one split), then write predictions, metrics and plots under
    ``<out>/<run_id>/``; returns the summary (also written as ``summary.json``).

    Each fold is saved in ``<out>/<run_id>/folds/`` when it ends. ``resume`` names an
    earlier run in ``out`` (one Ray lost): its folds saved with the same config are reused
    and only the rest are trained. ``progress`` gets one line per epoch and per fold.
    """
    from features.store import FeatureStore
    from training.cohorts.clinical import clinical_labels, is_store_labels
    from training.mil import preflight
    from training.mil.job import run_cross_validation, run_training

    job, train = config.build()
    run_id = _resumed_run(config, resume) if resume is not None else new_run_id(job.name)
    out = Path(config.out) / run_id
    job = replace(job, name=run_id, fold_dir=_fold_dir(job, out))
    options = dict(config.storage_options)
    if is_store_labels(config.cohort):  # store:clinical, written by slidebank slides set
        table = clinical_labels(FeatureStore.open(config.store, options), config.cohort)
    else:
        table = _read_cohort(config.cohort, options)
    if config.slide_table is not None:
        from training.cohorts.labels import with_slide_table

        table = with_slide_table(table, config.slide_table, options, source=config.cohort)
    external = _read_cohort(config.external, options) if config.external else None
    labels = list(job.label_columns)
    store = FeatureStore.open(config.store, options)
    assigned = _needs_folds(config, table)
    if assigned and (out / "cohort.parquet").exists():  # a resumed run keeps the folds it made up
        table = _read_cohort(str(out / "cohort.parquet"), {})
    elif assigned:
        table = _assign_folds(config, table, labels, options)
    preflight.check_cohort(table, labels, train.task, source=config.cohort)
    preflight.check_store_slides(table, store, job.encoder, source=config.cohort)
    if external is not None:
        preflight.check_cohort(external, labels, train.task, source=str(config.external))
        preflight.check_store_slides(external, store, job.encoder, source=str(config.external))
    splits = _splits(config, table)
    preflight.check_splits(splits, labels, train.task)
    # Labels coded 1/0 on the whole cohort, before any file is written: a fold whose slides
    # happen to be of one class still agrees with the mapping recorded (training.mil.labels).
    coded, external, classes = code_positive(table, external, train.task, labels, config.positive)
    if assigned and not (out / "cohort.parquet").exists():
        # Written before training: the folds this run made up are part of its record, and
        # a resumed run must train the same ones.
        with atomic_write(out / "cohort.parquet") as handle:
            table.to_parquet(handle, index=False)
    table = coded  # the record above keeps the labels as given; training uses the codes
    splits = _splits(config, table)
    log.info(
        "run %s%s: %d slides, %d fold(s); output in %s",
        run_id,
        " (resumed)" if resume else "",
        len(table),
        len(splits),
        out,
    )
    if config.cv:
        runs = run_cross_validation(
            job, table, external=external, attention=config.attention, progress=progress
        ).folds
    else:
        _, tr, val, test = splits[0]
        evals = {"test": test, **({"external": external} if external is not None else {})}
        runs = [run_training(job, tr, val, evals, attention=config.attention, progress=progress)]
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, run in enumerate(runs):
        for split, rows in run.predictions.items():
            frame = _rows_frame(rows, job.label_columns, train.task)
            frame.insert(0, "fold", i)
            frame.insert(1, "set", split)
            frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    if classes:  # the file says which class pred: is about, as summary.json does
        predictions["positive_class"] = classes["positive"]
    with atomic_write(out / "predictions.parquet") as handle:
        predictions.to_parquet(handle, index=False)
    scored = predictions
    if config.aggregate != "slide":  # metrics on patients: the mean (max) of their slides' scores
        how = "max" if config.aggregate == "patient-max" else "mean"
        scored = patient_predictions(predictions, train.task, how)
        with atomic_write(out / "patient_predictions.parquet") as handle:
            scored.to_parquet(handle, index=False)
    summary = evaluate_predictions(
        scored, train.task, labels, out, model=train.model.model, unit=config.aggregate
    )
    summary["aggregate"] = config.aggregate
    if classes:
        summary["classes"] = classes
    summary.update(
        run_id=run_id,
        out=str(out),
        config=config.to_dict(),
        checkpoints=[run.checkpoint_path for run in runs],
        history=[run.history for run in runs],
    )
    if config.attention:
        summary["attention"] = _write_attention(store, runs, run_id, out, train.model.model)
    summary["report"] = str(out / REPORT_NAME)
    atomic_write_json(out / "summary.json", summary)
    write_report(out)  # read back from the files above: the page shows what was written
    return summary


def _fold_dir(job: Any, out: Path) -> str | None:
    """The run folder's ``folds/``; on a cluster named by address, None (the job's default
    beside Ray Train's state, ``<checkpoints>/<run_id>/folds``): workers on other nodes
    cannot write the driver's disk, and Ray Train already needs that storage shared."""
    remote = job.address not in (None, "auto") or os.environ.get("RAY_ADDRESS")
    return None if remote else str(out / "folds")


def _resumed_run(config: TrainRunConfig, run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"run id {run_id!r} is not a run folder name (letters, digits, '.', '_', '-')"
        )
    if not (Path(config.out) / run_id).is_dir():
        raise ConfigError(f"no run {run_id!r} to resume in {config.out}")
    return run_id


def _write_attention(
    store: FeatureStore, runs: list[Any], run_id: str, out: Path, model: str
) -> dict[str, Any]:
    """Each test slide's attention (from the fold that held it out): a Zarr heatmap
    ``heatmaps/<run_id>`` in the slide's group, rows in the store's derived table
    ``attention/<run_id>``, and a PNG overlay under ``<out>/attention/``."""
    from training.mil.attention import render_overlay, write_attention

    written, table = [], None
    for run in runs:
        for row in run.predictions.get("test", []):
            sid = row["slide_id"]
            info = write_attention(store, sid, row["coords"], row["attention"], name=run_id)
            png = render_overlay(
                store,
                sid,
                run_id,
                out / "attention" / f"{sid}.png",
                origin=info["origin"],
                stride=info["stride"],
                model=model,
            )
            written.append({"slide_id": sid, "png": str(png), "heatmap": info["heatmap"]})
            table = info["table"]
    return {"table": table, "slides": written}


def _rows_frame(rows: list[dict[str, Any]], columns: tuple[str, ...], task: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"slide_id": [r["slide_id"] for r in rows], "patient_id": [r["patient_id"] for r in rows]}
    )
    targets = np.stack([r["target"] for r in rows])
    preds = np.stack([r["prediction"] for r in rows])
    names = list(columns) if task in ("multisignature", "regression") else [columns[0]]
    for j, name in enumerate(names):
        frame[f"target:{name}"] = targets[:, j]
    pred_names = names if task != "multiclass" else [f"class{k}" for k in range(preds.shape[1])]
    for j, name in enumerate(pred_names):
        frame[f"pred:{name}"] = preds[:, j]
    return frame


def evaluate_predictions(
    predictions: pd.DataFrame,
    task: str,
    labels: list[str],
    out: str | Path,
    *,
    model: str | None = None,
    overwrite: bool = True,
    unit: str = "slide",
) -> dict[str, Any]:
    """Per-fold and pooled metrics (with bootstrap CIs / FDR) and ROC PNGs from a
    predictions table as ``run_from_config`` writes it. ``overwrite=False`` refuses, before
    computing anything, when one of the files it writes exists (:func:`evaluation_files`)."""
    from training.mil.evaluate import (
        classification_report,
        fold_table,
        regression_report,
        write_roc_png,
    )

    out = Path(out)
    _check_prediction_columns(predictions, task, labels)
    for path in evaluation_files(predictions, task, out):
        check_output(path, overwrite=overwrite)
    summary: dict[str, Any] = {"task": task}
    for split, part in predictions.groupby("set"):
        if task == "regression":
            report = regression_report(
                part[[f"target:{g}" for g in labels]].to_numpy(),
                part[[f"pred:{g}" for g in labels]].to_numpy(),
                labels,
            )
            with atomic_write(out / f"{split}_genes.csv", "w", overwrite=overwrite) as handle:
                report.to_csv(handle, index=False)
            summary[str(split)] = {
                "mean_pearson_r": float(report["pearson_r"].mean()),
                "genes_q_below_0.05": int((report["pearson_q"] < 0.05).sum()),
            }
            continue
        if task != "binary":
            raise ConfigError(f"evaluate supports binary and regression tasks, not {task!r}")
        label = labels[0]
        # The class the curve is about, in the title and legend, as probe's figures say it
        positive = str(part["positive_class"].iloc[0]) if "positive_class" in part.columns else None
        named = f"{label}={positive}" if positive else label
        curve = f"{split}: {named}" if positive else str(split)
        per_fold = []
        for _, fold in part.groupby("fold"):
            if fold[f"target:{label}"].nunique() == 2:
                report = classification_report(
                    fold[f"target:{label}"], fold[f"pred:{label}"], n_boot=200
                )
                per_fold.append({k: v["value"] for k, v in report.items() if k != "n"})
        pooled = classification_report(part[f"target:{label}"], part[f"pred:{label}"])
        table = fold_table(per_fold) if per_fold else pd.DataFrame()
        summary[str(split)] = {"pooled": pooled, "folds": table.to_dict("index")}
        write_roc_png(
            {curve: (part[f"target:{label}"].to_numpy(), part[f"pred:{label}"].to_numpy())},
            out / f"{split}_roc.png",
            overwrite=overwrite,
            title=f"{model or 'MIL'}: {named} ({split})"
            + {
                "patient": "; patients, mean of their slides",
                "patient-max": "; patients, their highest slide",
            }.get(unit, ""),
        )
    return summary


def evaluation_files(predictions: pd.DataFrame, task: str, out: str | Path) -> list[Path]:
    """The files :func:`evaluate_predictions` writes into ``out``: one per prediction set."""
    suffix = {"binary": "_roc.png", "regression": "_genes.csv"}.get(task)
    if suffix is None or "set" not in predictions.columns:
        return []
    return [Path(out) / f"{split}{suffix}" for split in sorted(predictions["set"].unique())]


def _check_prediction_columns(predictions: pd.DataFrame, task: str, labels: list[str]) -> None:
    have = sorted(c.split(":", 1)[1] for c in predictions.columns if c.startswith("target:"))
    missing = [label for label in labels if f"target:{label}" not in predictions.columns]
    if missing:
        raise ConfigError(f"predictions have no label(s) {missing}; they have: {have}")
    for column in ("fold", "set"):
        if column not in predictions.columns:
            raise ConfigError(
                f"predictions lack the {column!r} column (not written by slidebank train?)"
            )

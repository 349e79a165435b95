"""Config-file driven runs (``slidebank train CONFIG.yaml key=value ...``) and evaluation
of saved predictions (``slidebank evaluate``). The CLI only parses; the logic lives here.

A config names the store, the cohort table (from ``slidebank cohort build``), the label
columns and the task, the model and training settings, and the Ray scaling:

    store: ./store
    cohort: cohort.parquet
    encoder: handcrafted-he-v1
    task: binary
    labels: [ayers_ifng6_label]
    model: {model: clam_sb, hidden: 128}
    train: {epochs: 20, lr: 0.0002, patience: 5}
    workers: 2
    cv: true            # k-fold on the cohort's `fold` column; else its `split` column
    external: ext.parquet
    out: runs/clam
    # optional: checkpoints (default <store>/mil_runs), storage_options (fsspec, for
    # s3:// stores and checkpoints), cache_bags (true), report_interval_s (10), attention
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError

__all__ = ["apply_overrides", "evaluate_predictions", "load_config", "run_from_config"]

log = logging.getLogger(__name__)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` sets config['a']['b'] (value parsed as YAML: numbers, lists, bools)."""
    import yaml

    out = json.loads(json.dumps(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"config {path} must be a mapping")
    config = apply_overrides(config, overrides or [])
    for key in ("store", "cohort", "labels", "out"):
        if key not in config:
            raise ConfigError(f"config is missing {key!r}")
    return config


def _dataclass(cls: type, values: dict[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


def _read_table(path: str) -> pd.DataFrame:
    return pd.read_csv(path) if str(path).endswith((".csv", ".tsv")) else pd.read_parquet(path)


def run_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Train (CV or one split), write predictions, metrics and plots under ``out``."""
    from training.mil.job import JobConfig, run_cross_validation, run_training
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig

    model = _dataclass(MILConfig, dict(config.get("model", {})), "model")
    train = _dataclass(TrainConfig, {**config.get("train", {}), "model": model,
                                     "task": config.get("task", "binary")}, "train")
    labels = config["labels"]
    job = JobConfig(
        store_uri=str(config["store"]), train=train,
        label_columns=tuple([labels] if isinstance(labels, str) else labels),
        encoder=config.get("encoder"), num_workers=int(config.get("workers", 1)),
        use_gpu=bool(config.get("use_gpu", False)), storage_path=config.get("checkpoints"),
        name=str(config.get("name", "mil")), max_failures=int(config.get("max_failures", 0)),
        cache_bags=bool(config.get("cache_bags", True)),
        storage_options=dict(config.get("storage_options") or {}),
        report_interval_s=float(config.get("report_interval_s", 10.0)),
    )
    table = _read_table(str(config["cohort"]))
    external = _read_table(str(config["external"])) if config.get("external") else None
    attention = bool(config.get("attention", False))
    if config.get("cv", True):
        runs = run_cross_validation(job, table, external=external, attention=attention).folds
    else:
        if "split" not in table.columns:
            raise ConfigError("cv: false needs a `split` column (training.cohorts.assign_train_val_test)")
        evals = {"test": table[table["split"] == "test"]}
        if external is not None:
            evals["external"] = external
        runs = [run_training(job, table[table["split"] == "train"], table[table["split"] == "val"], evals,
                             attention=attention)]
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, run in enumerate(runs):
        for split, rows in run.predictions.items():
            frame = _rows_frame(rows, job.label_columns, train.task)
            frame.insert(0, "fold", i)
            frame.insert(1, "set", split)
            frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    predictions.to_parquet(out / "predictions.parquet", index=False)
    summary = evaluate_predictions(predictions, train.task, list(job.label_columns), out)
    summary["checkpoints"] = [run.checkpoint_path for run in runs]
    summary["history"] = [run.history for run in runs]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _rows_frame(rows: list[dict[str, Any]], columns: tuple[str, ...], task: str) -> pd.DataFrame:
    frame = pd.DataFrame({"slide_id": [r["slide_id"] for r in rows], "patient_id": [r["patient_id"] for r in rows]})
    targets = np.stack([r["target"] for r in rows])
    preds = np.stack([r["prediction"] for r in rows])
    names = list(columns) if task in ("multisignature", "regression") else [columns[0]]
    for j, name in enumerate(names):
        frame[f"target:{name}"] = targets[:, j]
    pred_names = names if task != "multiclass" else [f"class{k}" for k in range(preds.shape[1])]
    for j, name in enumerate(pred_names):
        frame[f"pred:{name}"] = preds[:, j]
    return frame


def evaluate_predictions(predictions: pd.DataFrame, task: str, labels: list[str], out: str | Path) -> dict[str, Any]:
    """Per-fold and pooled metrics (with bootstrap CIs / FDR) and ROC PNGs from a
    predictions table as ``run_from_config`` writes it."""
    from training.mil.evaluate import (
        classification_report,
        fold_table,
        regression_report,
        write_roc_png,
    )

    out = Path(out)
    summary: dict[str, Any] = {"task": task}
    for split, part in predictions.groupby("set"):
        if task == "regression":
            report = regression_report(part[[f"target:{g}" for g in labels]].to_numpy(),
                                       part[[f"pred:{g}" for g in labels]].to_numpy(), labels)
            report.to_csv(out / f"{split}_genes.csv", index=False)
            summary[str(split)] = {"mean_pearson_r": float(report["pearson_r"].mean()),
                                   "genes_q_below_0.05": int((report["pearson_q"] < 0.05).sum())}
            continue
        if task != "binary":
            raise ConfigError(f"evaluate supports binary and regression tasks, not {task!r}")
        label = labels[0]
        per_fold = []
        for _, fold in part.groupby("fold"):
            if fold[f"target:{label}"].nunique() == 2:
                report = classification_report(fold[f"target:{label}"], fold[f"pred:{label}"], n_boot=200)
                per_fold.append({k: v["value"] for k, v in report.items() if k != "n"})
        pooled = classification_report(part[f"target:{label}"], part[f"pred:{label}"])
        table = fold_table(per_fold) if per_fold else pd.DataFrame()
        summary[str(split)] = {"pooled": pooled, "folds": table.to_dict("index")}
        write_roc_png({str(split): (part[f"target:{label}"].to_numpy(), part[f"pred:{label}"].to_numpy())},
                      out / f"{split}_roc.png")
    return summary

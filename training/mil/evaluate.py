"""Evaluation: classification metrics with bootstrap CIs, per-gene correlations with FDR,
per-fold tables (mean ± sd) and ROC + calibration plots as PNG (matplotlib, Agg backend).

Bootstrap resamples slides with replacement; a resample holding one class only is
skipped (AUROC is undefined there), and the CI is the 2.5th-97.5th percentile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from infra.errors import ConfigError

__all__ = [
    "bootstrap_ci",
    "classification_report",
    "fold_table",
    "regression_report",
    "write_roc_png",
]


def _metrics() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

    return {
        "auroc": lambda y, p: roc_auc_score(y, p),
        "auprc": lambda y, p: average_precision_score(y, p),
        "balanced_accuracy": lambda y, p: balanced_accuracy_score(y, (p >= 0.5).astype(int)),
    }


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            continue
        values.append(metric(y[idx], p[idx]))
    if not values:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def classification_report(
    y: npt.ArrayLike, p: npt.ArrayLike, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """AUROC, AUPRC and balanced accuracy (threshold 0.5) with bootstrap 95% CIs."""
    y_arr = np.asarray(y, dtype=int).reshape(-1)
    p_arr = np.asarray(p, dtype=float).reshape(-1)
    if len(y_arr) != len(p_arr):
        raise ConfigError(f"{len(y_arr)} labels but {len(p_arr)} predictions")
    if len(np.unique(y_arr)) < 2:
        raise ConfigError("classification metrics need both classes among the labels")
    out = {}
    for name, metric in _metrics().items():
        lo, hi = bootstrap_ci(y_arr, p_arr, metric, n_boot=n_boot, seed=seed)
        out[name] = {"value": float(metric(y_arr, p_arr)), "ci_low": lo, "ci_high": hi}
    out["n"] = {"value": float(len(y_arr)), "positives": float(y_arr.sum())}
    return out


def regression_report(y: np.ndarray, p: np.ndarray, genes: Sequence[str]) -> pd.DataFrame:
    """Per-gene Pearson and Spearman r with p-values and Benjamini-Hochberg q-values,
    sorted by Pearson r (the headline, as in image-to-expression papers)."""
    from scipy import stats

    y = np.asarray(y, dtype=float).reshape(len(y), -1)
    p = np.asarray(p, dtype=float).reshape(len(p), -1)
    if y.shape != p.shape or y.shape[1] != len(genes):
        raise ConfigError(f"shapes {y.shape} / {p.shape} do not match {len(genes)} genes")
    rows = []
    for j, gene in enumerate(genes):
        if np.std(y[:, j]) == 0 or np.std(p[:, j]) == 0:
            rows.append(
                {
                    "gene": gene,
                    "pearson_r": np.nan,
                    "pearson_p": 1.0,
                    "spearman_r": np.nan,
                    "spearman_p": 1.0,
                }
            )
            continue
        pr = stats.pearsonr(p[:, j], y[:, j])
        sr = stats.spearmanr(p[:, j], y[:, j])
        rows.append(
            {
                "gene": gene,
                "pearson_r": float(pr[0]),
                "pearson_p": float(pr[1]),
                "spearman_r": float(sr[0]),
                "spearman_p": float(sr[1]),
            }
        )
    frame = pd.DataFrame(rows)
    frame["pearson_q"] = stats.false_discovery_control(frame["pearson_p"].to_numpy(), method="bh")
    frame["spearman_q"] = stats.false_discovery_control(frame["spearman_p"].to_numpy(), method="bh")
    return frame.sort_values("pearson_r", ascending=False, na_position="last").reset_index(
        drop=True
    )


def fold_table(per_fold: Sequence[dict[str, float]]) -> pd.DataFrame:
    """Rows per fold plus ``mean`` and ``sd`` rows (sample sd, ddof=1)."""
    frame = pd.DataFrame(list(per_fold))
    frame.index = [f"fold{i}" for i in range(len(frame))]
    numeric = frame.select_dtypes("number")
    summary = pd.DataFrame([numeric.mean(), numeric.std(ddof=1)], index=["mean", "sd"])
    return pd.concat([frame, summary])


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(
        np.asarray(y, dtype=int).reshape(-1), np.asarray(p, dtype=float).reshape(-1)
    )
    return fpr, tpr


def write_roc_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    size: int = 400,
    calibration: bool = True,
    n_boot: int = 500,
    title: str | None = None,
    overwrite: bool = True,
) -> Path:
    """ROC curves ({label: (y, p)}) with a bootstrap 95% band, AUROC with its CI and n in
    the legend, and (for probabilities) a calibration panel; matplotlib Agg, atomic write.
    ``title`` (e.g. model and label) heads the figure.

    ``size`` is kept for callers of the earlier Pillow version; the figure is sized in
    inches and rendered at 120 dpi (about 1,250 × 600 px with calibration).
    """
    from sklearn.metrics import roc_auc_score

    from training.figures import write_roc_calibration_png

    del size
    aurocs: dict[str, dict[str, float]] = {}
    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, (y, p) in curves.items():
        y_arr = np.asarray(y, dtype=int).reshape(-1)
        p_arr = np.asarray(p, dtype=float).reshape(-1)
        if len(np.unique(y_arr)) < 2:
            raise ConfigError(
                f"ROC of {label!r} needs both classes; it has only {np.unique(y_arr)}"
            )
        lo, hi = bootstrap_ci(y_arr, p_arr, lambda a, b: roc_auc_score(a, b), n_boot=n_boot)
        aurocs[label] = {"value": float(roc_auc_score(y_arr, p_arr)), "ci_low": lo, "ci_high": hi}
        clean[label] = (y_arr, p_arr)
    probabilities = calibration and all(
        float(p.min()) >= 0.0 and float(p.max()) <= 1.0 for _, p in clean.values()
    )
    return write_roc_calibration_png(
        clean, path, aurocs=aurocs, calibration=probabilities, title=title, overwrite=overwrite
    )


def run_summary(y: np.ndarray, p: np.ndarray, **kwargs: Any) -> dict[str, float]:
    """Flat point estimates (for fold tables)."""
    report = classification_report(y, p, **kwargs)
    return {k: v["value"] for k, v in report.items() if k != "n"}

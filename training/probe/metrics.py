"""Probe metrics with patient-level bootstrap CIs.

Slides of one patient are correlated, so the bootstrap resamples *patients* (with all
their slides), not slides: resampling slides would make the CI too narrow whenever
patients have several slides. A resample holding one class only is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["classification_metrics", "patient_bootstrap", "regression_metrics"]

Metric = Callable[[np.ndarray, np.ndarray], float]


def patient_bootstrap(
    y: np.ndarray, s: np.ndarray, groups: np.ndarray, metric: Metric, *,
    n_boot: int = 1000, seed: int = 0, need_classes: bool = True,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    units, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(units))]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(units), len(units))])
        if need_classes and len(np.unique(y[idx])) < 2:
            continue
        values.append(metric(y[idx], s[idx]))
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def _with_ci(y: np.ndarray, s: np.ndarray, groups: np.ndarray, metric: Metric, n_boot: int,
             seed: int, need_classes: bool = True) -> dict[str, float]:
    lo, hi = patient_bootstrap(y, s, groups, metric, n_boot=n_boot, seed=seed,
                               need_classes=need_classes)
    return {"value": float(metric(y, s)), "ci_low": lo, "ci_high": hi}


def classification_metrics(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Binary: AUROC, AUPRC, balanced accuracy (argmax). Multiclass: macro one-vs-rest
    AUROC, balanced accuracy, accuracy. ``scores`` is (N, C), one column per class."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        roc_auc_score,
    )

    n_classes = scores.shape[1]

    def pred(s: np.ndarray) -> np.ndarray:
        return np.argmax(s, axis=1)

    if n_classes == 2:
        metrics: dict[str, Metric] = {
            "auroc": lambda t, s: roc_auc_score(t, s[:, 1]),
            "auprc": lambda t, s: average_precision_score(t, s[:, 1]),
        }
    else:
        def macro_auc(t: np.ndarray, s: np.ndarray) -> float:
            present = np.unique(t)
            if len(present) < n_classes:  # a resample without some class: undefined
                return float("nan")
            probs = np.exp(s - s.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            return roc_auc_score(t, probs, multi_class="ovr", average="macro")

        metrics = {"macro_auroc": macro_auc, "accuracy": lambda t, s: accuracy_score(t, pred(s))}
    metrics["balanced_accuracy"] = lambda t, s: balanced_accuracy_score(t, pred(s))
    return {name: _with_ci(y, scores, groups, m, n_boot, seed) for name, m in metrics.items()}


def regression_metrics(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """R², Pearson r and mean absolute error, each with a patient bootstrap CI."""
    from sklearn.metrics import mean_absolute_error, r2_score

    def pearson(t: np.ndarray, s: np.ndarray) -> float:
        if np.std(t) == 0 or np.std(s) == 0:
            return float("nan")
        return float(np.corrcoef(t, s)[0, 1])

    metrics: dict[str, Metric] = {"r2": r2_score, "pearson_r": pearson, "mae": mean_absolute_error}
    return {name: _with_ci(y, p, groups, m, n_boot, seed, need_classes=False)
            for name, m in metrics.items()}

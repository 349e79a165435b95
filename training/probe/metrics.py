"""Probe metrics with patient-level bootstrap CIs.

Slides of one patient are correlated, so the bootstrap resamples *patients* (with all
their slides), not slides: resampling slides would make the CI too narrow whenever
patients have several slides. A resample holding one class only is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "auroc",
    "average_precision",
    "balanced_accuracy",
    "bh_qvalues",
    "bootstrap_p_value",
    "bootstrap_values",
    "classification_metrics",
    "macro_auroc",
    "patient_bootstrap",
    "pearson_r",
    "regression_metrics",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_values(
    y: np.ndarray,
    s: np.ndarray,
    groups: np.ndarray,
    metric: Metric,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    need_classes: bool = True,
) -> np.ndarray:
    """``metric`` on ``n_boot`` patient resamples (one-class resamples skipped)."""
    rng = np.random.default_rng(seed)
    units, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(units))]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(units), len(units))])
        if need_classes and len(np.unique(y[idx])) < 2:
            continue
        values.append(metric(y[idx], s[idx]))
    return np.asarray(values, dtype=float)


def patient_bootstrap(
    y: np.ndarray,
    s: np.ndarray,
    groups: np.ndarray,
    metric: Metric,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    need_classes: bool = True,
) -> tuple[float, float]:
    values = bootstrap_values(
        y, s, groups, metric, n_boot=n_boot, seed=seed, need_classes=need_classes
    )
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def bootstrap_p_value(values: np.ndarray, null: float) -> float:
    """Two-sided p-value of ``null`` from bootstrap ``values`` of a metric: twice the
    share of resamples on the far side of ``null`` (the smallest alpha whose percentile
    CI excludes it), with the +1 that keeps it above 1/(n+1)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan")
    tail = min(int(np.sum(values <= null)), int(np.sum(values >= null)))
    return float(min(1.0, 2.0 * (tail + 1) / (values.size + 1)))


def bh_qvalues(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (step-up FDR adjustment); NaN p-values stay NaN and
    are not counted among the tests."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if not tested.size:
        return q
    order = tested[np.argsort(p[tested], kind="mergesort")]
    m = order.size
    stepped = p[order] * m / np.arange(1, m + 1)
    # q_(i) = min over j >= i of p_(j) m / j: a later, larger p can lower an earlier q.
    q[order] = np.minimum(np.minimum.accumulate(stepped[::-1])[::-1], 1.0)
    return q


def _with_ci(
    y: np.ndarray,
    s: np.ndarray,
    groups: np.ndarray,
    metric: Metric,
    n_boot: int,
    seed: int,
    need_classes: bool = True,
) -> dict[str, float]:
    lo, hi = patient_bootstrap(
        y, s, groups, metric, n_boot=n_boot, seed=seed, need_classes=need_classes
    )
    return {"value": float(metric(y, s)), "ci_low": lo, "ci_high": hi}


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC as the Mann-Whitney U statistic (ties count half), as scikit-learn's.

    NumPy only: the bootstrap calls it thousands of times, where scikit-learn's input
    validation would cost more than the metric.
    """
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision over distinct score thresholds (scikit-learn's definition)."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = last + 1 - tps
    if tps[-1] == 0:
        return float("nan")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the columns of ``scores`` (N, C)."""
    n_classes = scores.shape[1]
    if len(np.unique(y)) < n_classes:  # a resample without some class: undefined
        return float("nan")
    return float(np.mean([auroc((y == c).astype(int), scores[:, c]) for c in range(n_classes)]))


def pearson_r(y: np.ndarray, p: np.ndarray) -> float:
    if np.std(y) == 0 or np.std(p) == 0:
        return float("nan")
    return float(np.corrcoef(y, p)[0, 1])


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([np.mean(predicted[y == c] == c) for c in classes]))


def classification_metrics(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Binary: AUROC, AUPRC, balanced accuracy (argmax). Multiclass: macro one-vs-rest
    AUROC, balanced accuracy, accuracy. ``scores`` is (N, C), one column per class."""
    n_classes = scores.shape[1]

    def pred(s: np.ndarray) -> np.ndarray:
        return np.argmax(s, axis=1)

    if n_classes == 2:
        metrics: dict[str, Metric] = {
            "auroc": lambda t, s: auroc(t, s[:, 1]),
            "auprc": lambda t, s: average_precision(t, s[:, 1]),
        }
    else:
        metrics = {
            "macro_auroc": macro_auroc,
            "accuracy": lambda t, s: float(np.mean(pred(s) == t)),
        }
    metrics["balanced_accuracy"] = lambda t, s: balanced_accuracy(t, pred(s))
    return {name: _with_ci(y, scores, groups, m, n_boot, seed) for name, m in metrics.items()}


def regression_metrics(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """R², Pearson r and mean absolute error, each with a patient bootstrap CI."""

    def r2_score(t: np.ndarray, p: np.ndarray) -> float:
        total = float(np.sum((t - t.mean()) ** 2))
        return float("nan") if total == 0 else 1.0 - float(np.sum((t - p) ** 2)) / total

    def mean_absolute_error(t: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(np.abs(t - p)))

    metrics: dict[str, Metric] = {
        "r2": r2_score,
        "pearson_r": pearson_r,
        "mae": mean_absolute_error,
    }
    return {
        name: _with_ci(y, p, groups, m, n_boot, seed, need_classes=False)
        for name, m in metrics.items()
    }

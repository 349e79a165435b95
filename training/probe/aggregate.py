"""The unit a probe is scored on, and its headline test against chance.

``aggregate="patient"`` scores each patient by the mean of its slides' out-of-fold
predictions: the folds never split a patient, so a patient's slides were all predicted by
the same model, and a cohort of 2 slides per patient is not counted as twice the evidence.
``aggregate="patient-max"`` takes the patient's highest positive-class score instead (one
positive slide makes a positive patient), for a two-class label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError

if TYPE_CHECKING:
    from training.probe.run import ProbeConfig

__all__ = ["HEADLINE", "headline_test", "patient_means", "unit_metrics"]

#: the metric a label is ranked by, and its value under no signal
HEADLINE = {
    "binary": ("auroc", 0.5),
    "multiclass": ("macro_auroc", 0.5),
    "regression": ("pearson_r", 0.0),
}


def patient_means(
    predictions: pd.DataFrame,
    y: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    label: str,
    *,
    how: str = "mean",
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(one row per patient, its y, its scores (mean, or ``how="max"``: those of its slide
    with the highest positive-class score), its patient ids as groups)."""
    patients = predictions["patient_id"].astype(str).to_numpy()
    units, inverse = np.unique(patients, return_inverse=True)
    counts = np.bincount(inverse)
    if how == "max":
        if len(classes) != 2:
            raise ConfigError(
                f"--aggregate patient-max needs a two-class label; {label!r} has "
                f"{len(classes) or 'continuous'} classes (use --aggregate patient)"
            )
        top = pd.Series(scores[:, 1]).groupby(inverse).idxmax().to_numpy()
        mean_scores = scores[top]  # the patient's most positive slide, both columns
    else:
        mean_scores = np.stack(
            [np.bincount(inverse, weights=scores[:, j]) / counts for j in range(scores.shape[1])],
            axis=1,
        )
    if classes:
        mixed = pd.Series(y).groupby(inverse).nunique()
        if (mixed > 1).any():
            bad = units[mixed.index[mixed > 1][0]]
            raise ConfigError(
                f"--aggregate patient needs one {label!r} class per patient; "
                f"patient {bad!r} has slides of different classes"
            )
        unit_y = np.zeros(len(units), dtype=int)
        unit_y[inverse] = y
    else:  # a continuous label measured per slide: the patient's mean is its value
        unit_y = np.bincount(inverse, weights=y) / counts
    table = pd.DataFrame({"patient_id": units, "n_slides": counts})
    table["fold"] = pd.Series(predictions["fold"].to_numpy()).groupby(inverse).first().to_numpy()
    table[label] = [classes[v] for v in unit_y] if classes else unit_y
    if not classes:
        table["predicted"] = mean_scores[:, 0]
    else:
        for j, name in enumerate(classes):
            table[f"score_{name}"] = mean_scores[:, j]
        table["predicted"] = [classes[j] for j in np.argmax(mean_scores, axis=1)]
        if "positive_class" in predictions:
            table["positive_class"] = predictions["positive_class"].iloc[0]
    return table, unit_y, mean_scores, units


def unit_metrics(
    task: str, y: np.ndarray, scores: np.ndarray, groups: np.ndarray, config: ProbeConfig
) -> dict[str, dict[str, float]]:
    from training.probe.metrics import classification_metrics, regression_metrics

    if task == "classification":
        return classification_metrics(y, scores, groups, n_boot=config.n_boot, seed=config.seed)
    return regression_metrics(y, scores[:, 0], groups, n_boot=config.n_boot, seed=config.seed)


def _headline(task: str, n_classes: int) -> tuple[str, float]:
    if task != "classification":
        return HEADLINE["regression"]
    return HEADLINE["binary" if n_classes == 2 else "multiclass"]


def headline_test(
    task: str, y: np.ndarray, scores: np.ndarray, groups: np.ndarray, config: ProbeConfig
) -> dict[str, Any]:
    """The headline metric against its no-signal value: a two-sided patient-bootstrap
    p-value (the same resamples, same seed, as the metric's CI)."""
    from training.probe.metrics import (
        Metric,
        auroc,
        bootstrap_p_value,
        bootstrap_values,
        macro_auroc,
        pearson_r,
    )

    name, null = _headline(task, scores.shape[1])
    metric: Metric = {
        "auroc": lambda t, s: auroc(t, s[:, 1]),
        "macro_auroc": macro_auroc,
        "pearson_r": lambda t, s: pearson_r(t, s[:, 0]),
    }[name]
    values = bootstrap_values(
        y,
        scores,
        groups,
        metric,
        n_boot=config.n_boot,
        seed=config.seed,
        need_classes=task == "classification",
    )
    return {
        "metric": name,
        "null": null,
        "p_value": bootstrap_p_value(values, null),
        "method": f"two-sided patient bootstrap ({len(values)} resamples)",
    }

"""Which class a MIL run calls positive, and patient-level scoring of its predictions.

The positive class of a binary (or multisignature) label is resolved once, on the whole
cohort, by the rule ``slidebank probe`` uses (:func:`training.probe.classes.positive_class`):
``positive`` if given, else the class named High/1/True/yes/positive in any case, else a
one-line error asking for ``--positive``. The label columns are then coded 1/0, so every
fold, whatever classes its slides happen to have, agrees with the record in
``summary.json`` and ``predictions.parquet``. (Before, only the exact string ``High`` was
1: ``high``/``low`` labels trained a model of nothing.)

``aggregate="patient"`` scores each patient by the mean of its slides' predictions in a
prediction set and computes the metrics on patients, as ``probe --aggregate patient``;
``"patient-max"`` by its highest (a binary task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from infra.errors import ConfigError

__all__ = ["code_positive", "patient_predictions", "positive_of"]

_CODED_TASKS = ("binary", "multisignature")


def positive_of(values: pd.Series, positive: str | None, *, label: str) -> tuple[str, str]:
    """(positive, negative) class names of a two-class label column."""
    from training.probe.classes import positive_class

    classes = sorted({_name(v) for v in values.dropna()})
    chosen = positive_class(classes, positive, label=label)
    return chosen, next(c for c in classes if c != chosen)


def _name(value: Any) -> str:
    """A label value as a class name: 1.0 and 1 are both "1", True is "True"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def code_positive(
    table: pd.DataFrame,
    external: pd.DataFrame | None,
    task: str,
    labels: Sequence[str],
    positive: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any] | None]:
    """The cohort (and external set) with each label column coded 1.0 (positive) / 0.0,
    and the class mapping of the first label for ``summary.json``; other tasks pass
    through unchanged."""
    if task not in _CODED_TASKS:
        if positive is not None:
            raise ConfigError(f"--positive is for a binary task; this run's task is {task!r}")
        return table, external, None
    table = table.copy()
    external = None if external is None else external.copy()
    mapping: dict[str, Any] | None = None
    for label in labels:
        values = table[label] if external is None else pd.concat([table[label], external[label]])
        yes, no = positive_of(values, positive, label=label)
        for frame in (table, external):
            if frame is not None:
                frame[label] = [float(_name(v) == yes) for v in frame[label]]
        if mapping is None:
            mapping = {
                "label": label,
                "positive": yes,
                "negative": no,
                "score": f"pred:{label} = P({label} is {yes})",
            }
    return table, external, mapping


def patient_predictions(predictions: pd.DataFrame, task: str, how: str = "mean") -> pd.DataFrame:
    """One row per (set, fold, patient): the mean (``how="max"``: for ``pred:``, the
    highest) of its slides' ``pred:`` and ``target:`` columns, and its slide count. A
    binary patient whose slides disagree on the class is an error, as in ``probe``."""
    if task not in ("binary", "regression"):
        raise ConfigError(f"aggregate: patient supports binary and regression tasks, not {task!r}")
    if how == "max" and task != "binary":
        raise ConfigError(f"aggregate: patient-max is for a binary task, not {task!r}")
    value_columns = [c for c in predictions.columns if c.startswith(("pred:", "target:"))]
    keys = ["set", "fold", "patient_id"]
    grouped = predictions.groupby(keys, sort=True)
    if task == "binary":
        targets = [c for c in value_columns if c.startswith("target:")]
        mixed = grouped[targets].nunique().gt(1).any(axis=1)
        if mixed.any():
            split, fold, patient = mixed.index[mixed.argmax()]
            raise ConfigError(
                f"aggregate: patient needs one class per patient; patient {patient!r} has "
                f"slides of both classes (set {split!r}, fold {fold})"
            )
    table = grouped[value_columns].mean().reset_index()
    if how == "max":
        scores = [c for c in value_columns if c.startswith("pred:")]
        table[scores] = grouped[scores].max().to_numpy()
    table.insert(3, "n_slides", grouped.size().to_numpy())
    if "positive_class" in predictions:
        table["positive_class"] = predictions["positive_class"].iloc[0]
    return table

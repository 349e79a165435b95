"""Leakage-safe splits: a patient's slides are always on one side.

* :func:`assign_folds`: patient-level stratified k-fold (scikit-learn's
  ``StratifiedGroupKFold`` with the patient as group), adding a ``fold`` column;
* :func:`assign_train_val_test`: patient-level stratified train/validation/test,
  adding a ``split`` column;
* :func:`external_table`: an external validation cohort as its own table, checked to
  share no patient with the discovery cohort;
* :func:`check_no_leakage`: the invariant, checked after every split.

Stratification uses a binary label column (``<signature>_high``) or, for a continuous
target, its quantile bins.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from training.cohorts.config import SplitConfig
from training.cohorts.errors import LeakageError, SplitError

__all__ = [
    "assign_folds",
    "assign_train_val_test",
    "check_no_leakage",
    "external_table",
    "stratification_labels",
]

PATIENT = "patient_id"


def _patients(table: pd.DataFrame, stratify: str | None) -> pd.DataFrame:
    if PATIENT not in table.columns:
        raise SplitError(f"cohort table has no {PATIENT} column")
    if table[PATIENT].isna().any():
        raise SplitError("cohort table has slides without a patient_id")
    if stratify is None:
        return table[[PATIENT]].drop_duplicates()
    if stratify not in table.columns:
        raise SplitError(f"stratify column {stratify!r} is not in the cohort table")
    per_patient = table.groupby(PATIENT)[stratify].nunique(dropna=False)
    if (per_patient > 1).any():
        patient = per_patient[per_patient > 1].index[0]
        raise SplitError(f"patient {patient!r} has slides with different {stratify!r} values")
    return table[[PATIENT, stratify]].drop_duplicates(PATIENT)


def stratification_labels(values: pd.Series, bins: int) -> np.ndarray:
    """Class labels to stratify on: the values themselves when they are few distinct
    classes, quantile bins of a continuous target otherwise."""
    if values.isna().any():
        raise SplitError(f"stratify column {values.name!r} has missing values")
    numeric = pd.api.types.is_float_dtype(values) and values.nunique() > bins
    if not numeric:
        return values.astype(str).to_numpy()
    return pd.qcut(values, q=bins, labels=False, duplicates="drop").astype(int).to_numpy()


def _check_classes(labels: np.ndarray, needed: int, what: str) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise SplitError(f"cannot stratify {what}: only one class ({classes[0]!r})")
    if counts.min() < needed:
        small = classes[int(np.argmin(counts))]
        raise SplitError(
            f"cannot stratify {what}: class {small!r} has {int(counts.min())} patients, "
            f"fewer than {needed}"
        )


def assign_folds(
    table: pd.DataFrame, config: SplitConfig | None = None, *, stratify: str | None = None
) -> pd.DataFrame:
    """The table with a ``fold`` column (0 .. n_splits-1): each patient in one fold."""
    from sklearn.model_selection import KFold, StratifiedGroupKFold

    config = config or SplitConfig()
    patients = _patients(table, stratify)
    if len(patients) < config.n_splits:
        raise SplitError(f"{len(patients)} patients are too few for {config.n_splits} folds")
    ids = patients[PATIENT].to_numpy()
    fold_of: dict[str, int] = {}
    if stratify is None:
        splitter = KFold(config.n_splits, shuffle=True, random_state=config.seed)
        for fold, (_, test) in enumerate(splitter.split(ids)):
            fold_of.update({str(p): fold for p in ids[test]})
    else:
        labels = stratification_labels(patients[stratify], config.regression_bins)
        _check_classes(labels, config.n_splits, f"{config.n_splits} folds on {stratify!r}")
        # One row per patient with the patient as group: folds stratify patients, not
        # slides, and a patient can never straddle two folds.
        splitter = StratifiedGroupKFold(config.n_splits, shuffle=True, random_state=config.seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # an unbalanced split is not silently accepted
                for fold, (_, test) in enumerate(splitter.split(ids, labels, groups=ids)):
                    fold_of.update({str(p): fold for p in ids[test]})
        except (Warning, ValueError) as exc:
            raise SplitError(f"cannot make {config.n_splits} folds: {exc}") from exc
    out = table.copy()
    out["fold"] = out[PATIENT].map(fold_of).astype("int64")
    check_no_leakage(out, "fold")
    return out


def assign_train_val_test(
    table: pd.DataFrame, config: SplitConfig | None = None, *, stratify: str | None = None
) -> pd.DataFrame:
    """The table with a ``split`` column: ``train``, ``val`` or ``test`` per patient."""
    from sklearn.model_selection import train_test_split

    config = config or SplitConfig()
    patients = _patients(table, stratify)
    ids = patients[PATIENT].to_numpy()
    labels = (
        stratification_labels(patients[stratify], config.regression_bins)
        if stratify is not None
        else None
    )
    if labels is not None:
        _check_classes(
            labels, 3 if config.val_fraction > 0 else 2, f"train/val/test on {stratify!r}"
        )
    try:
        rest, test, rest_y, _ = train_test_split(
            ids,
            labels if labels is not None else ids,
            test_size=config.test_fraction,
            random_state=config.seed,
            stratify=labels,
        )
        val: np.ndarray = np.array([], dtype=ids.dtype)
        train = rest
        if config.val_fraction > 0:
            share = config.val_fraction / (1.0 - config.test_fraction)
            train, val = train_test_split(
                rest,
                test_size=share,
                random_state=config.seed + 1,
                stratify=rest_y if labels is not None else None,
            )
    except ValueError as exc:  # sklearn: a split would be empty or a class too small
        raise SplitError(f"cannot split {len(ids)} patients: {exc}") from exc
    split_of = {str(p): "train" for p in train}
    split_of.update({str(p): "val" for p in val})
    split_of.update({str(p): "test" for p in test})
    out = table.copy()
    out["split"] = out[PATIENT].map(split_of)
    check_no_leakage(out, "split")
    return out


def check_no_leakage(table: pd.DataFrame, column: str, *, patient: str = PATIENT) -> None:
    """Raise :class:`LeakageError` if any patient's rows have two values of ``column``."""
    if table[column].isna().any():
        raise LeakageError(f"some slides have no {column!r} assigned")
    sides = table.groupby(patient)[column].nunique()
    leaked = sides[sides > 1]
    if len(leaked):
        example = leaked.index[0]
        values = sorted(map(str, table.loc[table[patient] == example, column].unique()))
        raise LeakageError(
            f"{len(leaked)} patients on several sides of {column!r}, e.g. {example!r} in {values}"
        )


def external_table(external: pd.DataFrame, discovery: pd.DataFrame | None = None) -> pd.DataFrame:
    """An external validation cohort as its own table (``split`` = ``external``),
    sharing no patient and no slide with the discovery cohort."""
    out = external.copy()
    out["split"] = "external"
    if discovery is not None:
        for key in (PATIENT, "slide_id"):
            shared = sorted(set(out[key]) & set(discovery[key]))
            if shared:
                raise LeakageError(
                    f"external cohort shares {len(shared)} {key} values with the discovery "
                    f"cohort, e.g. {shared[0]!r}"
                )
    return out

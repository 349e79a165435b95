"""Checks a training cohort before any Ray worker starts.

Every mistake found here used to surface minutes into a run (inside a Ray worker, as a
traceback): a label column that is not there, slides the store does not have, a fold
whose training slides are all one class, a test set without one of the classes, patient
ids that disagree with the store's (which would let one patient's slides land in two
folds). Each is a :class:`~infra.errors.ConfigError` naming what is wrong and what exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["check_cohort", "check_splits", "check_store_slides"]

_CLASS_TASKS = ("binary", "multiclass")


def _show(values: Sequence[Any], limit: int = 8) -> str:
    values = list(values)
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more


def check_cohort(table: pd.DataFrame, labels: Sequence[str], task: str, *, source: str) -> None:
    """Columns present, ids unique, labels usable for ``task``."""
    from training.cohorts.labels import did_you_mean

    for column in ("slide_id", *labels):
        if column not in table.columns:
            raise ConfigError(
                f"{source}: no column {column!r}; the table has: {_show(table.columns, 40)}"
                f"{did_you_mean(column, table.columns)}"
            )
    if table.empty:
        raise ConfigError(f"{source}: the cohort table has no rows")
    duplicated = table["slide_id"][table["slide_id"].duplicated()].unique()
    if len(duplicated):
        raise ConfigError(f"{source}: slide ids listed more than once: {_show(duplicated)}")
    for label in labels:
        values = table[label]
        if values.isna().any():
            missing = table.loc[values.isna(), "slide_id"]
            raise ConfigError(f"{source}: column {label!r} is empty for slides {_show(missing)}")
        if task == "regression" and not pd.api.types.is_numeric_dtype(values):
            raise ConfigError(
                f"{source}: regression target {label!r} is not numeric (dtype {values.dtype})"
            )


def check_store_slides(
    table: pd.DataFrame, store: FeatureStore, encoder: str | None, *, source: str
) -> None:
    """Every cohort slide is ``done`` in the store for ``encoder``; patient ids agree."""
    encoders = store.encoders()
    if encoder is not None and encoder not in encoders:
        raise ConfigError(
            f"the store has no embeddings for encoder {encoder!r}; it has: "
            f"{_show(encoders) or 'none'}"
        )
    done = store.slides(
        encoder=encoder, status="done", columns=["slide_id", "patient_id"]
    ).to_pandas()
    known = set(done["slide_id"])
    missing = [s for s in table["slide_id"].astype(str) if s not in known]
    if missing:
        raise ConfigError(
            f"{source}: {len(missing)} slide(s) have no finished embeddings in the "
            f"store{f' for {encoder!r}' if encoder else ''}: {_show(missing)}"
        )
    if "patient_id" not in table.columns:
        return
    stored = (
        done.dropna(subset=["patient_id"])
        .drop_duplicates("slide_id")
        .set_index("slide_id")["patient_id"]
    )
    ours = table.set_index(table["slide_id"].astype(str))["patient_id"]
    both = ours.index.intersection(stored.index)
    conflict = [
        s for s in both if pd.notna(ours[s]) and str(ours[s]) != str(stored[s]) and str(stored[s])
    ]
    if conflict:
        first = conflict[0]
        raise ConfigError(
            f"{source}: patient ids disagree with the store for {len(conflict)} slide(s), e.g. "
            f"{first!r}: cohort says {ours[first]!r}, store says {stored[first]!r}. A patient's "
            "slides must share one id, or they can land in different folds (leakage)"
        )


def _classes(frame: pd.DataFrame, label: str) -> set[Any]:
    return set(frame[label].dropna().unique())


def check_splits(
    splits: Sequence[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]],
    labels: Sequence[str],
    task: str,
) -> None:
    """Per fold (or split): every class has training slides; val and test are non-empty,
    and for a binary task the test set holds both classes (AUROC is undefined otherwise)."""
    if task not in _CLASS_TASKS:
        for key, train, val, _ in splits:
            if train.empty or val.empty:
                raise ConfigError(f"fold {key}: the training or validation set is empty")
        return
    label = labels[0]
    every = set().union(*(_classes(part, label) for split in splits for part in split[1:]))
    for key, train, val, test in splits:
        for name, part in (("training", train), ("validation", val), ("test", test)):
            if part.empty:
                raise ConfigError(f"fold {key}: the {name} set is empty")
        absent = sorted(map(str, every - _classes(train, label)))
        if absent:
            raise ConfigError(
                f"fold {key}: class(es) {absent} of {label!r} have no training slides; "
                "use more folds' worth of slides per class or fewer folds"
            )
        if task == "binary" and len(_classes(test, label)) < 2:
            raise ConfigError(
                f"fold {key}: the test set has only class(es) "
                f"{sorted(map(str, _classes(test, label)))} of {label!r}; AUROC needs both "
                "(rebuild the folds stratified on this label)"
            )

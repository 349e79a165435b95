"""Plain labels tables (no omics): any label columns keyed by slide or patient id.

A labels table has a ``slide_id`` column, a ``patient_id`` column, or both, plus any
label columns. :func:`join_labels` attaches it to the store's slides:

* keyed by ``slide_id``: each labelled slide gets its row; the slide's patient is the
  store's ``patient_id`` (or the table's when the store has none);
* keyed by ``patient_id`` only: every slide of that patient gets the label;
* a ``patient_id`` in the table that contradicts the store's for the same slide is a
  :class:`~training.cohorts.errors.CohortError`, never a silent override: turning one
  patient's two slides into two patients would let them straddle a split (leakage).

Slides without a patient id anywhere are their own patient (``patient_id = slide_id``),
which keeps splits well defined and is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from training.cohorts.errors import CohortError

__all__ = [
    "LabelJoin",
    "build_label_cohort",
    "check_patient_conflicts",
    "join_labels",
    "misspelt_column",
    "read_labels",
]

log = logging.getLogger(__name__)

KEYS = ("slide_id", "patient_id")
#: How to add patient ids to a store that has none (a folder ingest), said wherever
#: their absence stops a patient-level table.
ANNOTATE_HINT = (
    "add them without re-encoding: slidebank annotate MAPPING.csv --store STORE "
    "(a table with slide_id and patient_id columns)"
)


def _squash(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def misspelt_column(columns: Sequence[Any], key: str) -> str | None:
    """A column that is ``key`` written another way ('Slide ID', 'SlideID', 'Patient'),
    when ``key`` itself is absent: matching it silently could join on the wrong thing."""
    if key in columns:
        return None
    forms = {_squash(key), _squash(key.removesuffix("_id"))}
    return next((str(c) for c in columns if _squash(c) in forms), None)


def read_labels(uri: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A labels table (csv/tsv/parquet, also compressed) read with :mod:`infra.tables`."""
    from infra.tables import read_table

    table = read_table(uri, storage_options)
    for key in KEYS:
        found = misspelt_column(list(table.columns), key)
        if found is not None:
            raise CohortError(f"{uri}: no {key} column (found {found!r}); rename it to {key}")
    if not any(k in table.columns for k in KEYS):
        raise CohortError(
            f"{uri}: a labels table needs a slide_id or patient_id column; "
            f"it has {', '.join(map(str, table.columns))}"
        )
    for key in KEYS:
        if key in table.columns:
            table[key] = table[key].astype("string").str.strip()
    return table


def check_patient_conflicts(
    table_patients: pd.DataFrame, store_patients: Mapping[str, Any], *, source: str
) -> None:
    """Raise when a (slide_id, patient_id) row disagrees with the store's patient id."""
    rows = table_patients.dropna(subset=["slide_id", "patient_id"])
    clashes = []
    for slide, patient in zip(rows["slide_id"], rows["patient_id"], strict=True):
        known = store_patients.get(str(slide))
        if known is not None and not pd.isna(known) and str(known) != str(patient):
            clashes.append(f"{slide}: {source} says {patient!r}, the store {known!r}")
    if clashes:
        raise CohortError(
            f"{len(clashes)} slide(s) have a patient_id in {source} that conflicts with the "
            f"store's ({'; '.join(clashes[:5])}); fix the table or drop its patient_id "
            "column: a silent override could split one patient across folds"
        )


@dataclass(frozen=True)
class LabelJoin:
    """The joined table (slide_id, patient_id, label columns) and what did not join."""

    table: pd.DataFrame
    label_columns: tuple[str, ...]
    unknown_slides: tuple[str, ...] = ()
    unknown_patients: tuple[str, ...] = ()
    unlabelled_slides: int = 0
    own_patient_slides: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        return {
            "n_slides": len(self.table),
            "n_patients": int(self.table["patient_id"].nunique()),
            "label_columns": list(self.label_columns),
            "labels_for_unknown_slides": list(self.unknown_slides[:20]),
            "labels_for_unknown_patients": list(self.unknown_patients[:20]),
            "store_slides_without_label": self.unlabelled_slides,
        }


def _label_columns(labels: pd.DataFrame, wanted: Sequence[str] | None) -> tuple[str, ...]:
    available = [c for c in labels.columns if c not in KEYS]
    if not wanted:
        if not available:
            raise CohortError("the labels table has no label column besides slide_id/patient_id")
        return tuple(available)
    missing = [c for c in wanted if c not in labels.columns]
    if missing:
        raise CohortError(
            f"label column(s) {', '.join(map(repr, missing))} not in the labels table; "
            f"it has {', '.join(map(repr, available)) or 'no label columns'}"
        )
    return tuple(wanted)


def _check_store_patients(store: pd.DataFrame, source: str) -> None:
    """A table keyed by patient needs the store's slides to know their patients."""
    missing = store.loc[store["patient_id"].isna(), "slide_id"]
    if len(store) and len(missing) == len(store):
        raise CohortError(
            f"{source} is keyed by patient_id, but none of the store's {len(store)} slides has "
            f"a patient_id (an ingest from a folder records none); {ANNOTATE_HINT}"
        )
    if len(missing):
        log.warning(
            "%d slides have no patient_id and get no patient-level label (e.g. %s); %s",
            len(missing),
            missing.iloc[0],
            ANNOTATE_HINT,
        )


def join_labels(
    labels: pd.DataFrame,
    slides: pd.DataFrame,
    *,
    label_columns: Sequence[str] | None = None,
    source: str = "the labels table",
) -> LabelJoin:
    """Attach ``labels`` to ``slides`` (``slide_id``, ``patient_id`` from the store)."""
    columns = _label_columns(labels, label_columns)
    store = slides[["slide_id", "patient_id"]].drop_duplicates("slide_id").copy()
    store["slide_id"] = store["slide_id"].astype("string")
    store["patient_id"] = store["patient_id"].astype("string")
    store_patients = dict(zip(store["slide_id"], store["patient_id"], strict=True))
    if "slide_id" in labels.columns:
        if labels["slide_id"].duplicated().any():
            dup = labels.loc[labels["slide_id"].duplicated(), "slide_id"].iloc[0]
            raise CohortError(f"{source}: slide {dup!r} is listed more than once")
        if "patient_id" in labels.columns:
            check_patient_conflicts(labels, store_patients, source=source)
        keep = ["slide_id", *([c for c in ["patient_id"] if c in labels.columns]), *columns]
        joined = store.merge(labels[keep], on="slide_id", how="inner", suffixes=("", "_labels"))
        if "patient_id_labels" in joined.columns:
            joined["patient_id"] = joined["patient_id"].fillna(joined.pop("patient_id_labels"))
        unknown = tuple(sorted(set(labels["slide_id"].dropna()) - set(store["slide_id"])))
        unknown_patients: tuple[str, ...] = ()
    else:
        _check_store_patients(store, source)
        per_patient = labels[["patient_id", *columns]]
        if per_patient["patient_id"].duplicated().any():
            dup = per_patient.loc[per_patient["patient_id"].duplicated(), "patient_id"].iloc[0]
            raise CohortError(f"{source}: patient {dup!r} is listed more than once")
        joined = store.dropna(subset=["patient_id"]).merge(per_patient, on="patient_id")
        unknown = ()
        unknown_patients = tuple(
            sorted(set(per_patient["patient_id"].dropna()) - set(store["patient_id"].dropna()))
        )
    if joined.empty:
        key = "slide_id" if "slide_id" in labels.columns else "patient_id"
        theirs = ", ".join(map(str, labels[key].dropna().head(3)))
        ours = ", ".join(map(str, store[key].dropna().head(3))) or "none"
        raise CohortError(
            f"no {key} of {source} matches the store ({len(labels)} label rows, e.g. "
            f"{theirs}; the store has {len(store)} slides, e.g. {ours})"
        )
    own = joined["patient_id"].isna()
    own_ids = tuple(sorted(joined.loc[own, "slide_id"]))
    if own_ids:
        log.info("%d slides have no patient id; each is its own patient", len(own_ids))
        joined.loc[own, "patient_id"] = joined.loc[own, "slide_id"]
    if unknown:
        log.warning("%d labelled slides are not in the store (e.g. %s)", len(unknown), unknown[0])
    joined = joined.sort_values(["patient_id", "slide_id"]).reset_index(drop=True)
    return LabelJoin(
        table=joined,
        label_columns=columns,
        unknown_slides=unknown,
        unknown_patients=unknown_patients,
        unlabelled_slides=len(store) - len(joined),
        own_patient_slides=own_ids,
    )


def build_label_cohort(
    labels: str | pd.DataFrame,
    slides: Any,
    *,
    label_columns: Sequence[str] | None = None,
    stratify: str | None = "auto",
    splits: Any = None,
    make_splits: bool = True,
    name: str = "discovery",
    status: str | None = "done",
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """A cohort from a plain labels table: the store's slides ⋈ labels, plus patient-level
    ``fold`` and ``split`` columns (stratified on ``stratify``; ``"auto"``: the first label
    column when each patient has one value of it, else unstratified)."""
    import dataclasses

    from infra.provenance import stable_hash
    from training.cohorts.config import SplitConfig
    from training.cohorts.model import Cohort, CohortReport
    from training.cohorts.slides_source import slides_frame
    from training.cohorts.splits import assign_folds, assign_train_val_test

    source = labels if isinstance(labels, str) else "the labels table"
    table = read_labels(labels, storage_options) if isinstance(labels, str) else labels
    store_slides = slides_frame(slides, status=status, storage_options=storage_options)
    joined = join_labels(table, store_slides, label_columns=label_columns, source=source)
    frame = joined.table
    frame.insert(2, "cohort", name)
    split_config = splits or SplitConfig()
    strat = _stratify_column(frame, joined.label_columns, stratify)
    if make_splits:
        frame = assign_folds(frame, split_config, stratify=strat)
        frame = assign_train_val_test(frame, split_config, stratify=strat)
    config = {
        "labels": source,
        "label_columns": list(joined.label_columns),
        "stratify": strat,
        "splits": dataclasses.asdict(split_config) if make_splits else None,
        "name": name,
    }
    per_patient = frame.groupby("patient_id")["slide_id"].count()
    report = CohortReport(
        name=name,
        n_slides=len(frame),
        n_patients=int(frame["patient_id"].nunique()),
        n_store_slides=len(store_slides),
        n_omics_patients=0,
        patients_with_several_slides={
            str(p): int(n) for p, n in per_patient[per_patient > 1].items()
        },
        slides_without_patient=joined.own_patient_slides,
        label_counts={
            c: {str(k): int(v) for k, v in frame[c].value_counts().items()}
            for c in joined.label_columns
            if frame[c].nunique() <= 20
        },
        config_hash=stable_hash("label-cohort", 1, config),
    )
    import json

    return Cohort(table=frame, report=report, config_json=json.dumps(config, sort_keys=True))


def _stratify_column(
    frame: pd.DataFrame, columns: Sequence[str], stratify: str | None
) -> str | None:
    if stratify is None or stratify == "none":
        return None
    if stratify != "auto":
        if stratify not in frame.columns:
            raise CohortError(
                f"stratify column {stratify!r} is not a label column ({', '.join(columns)})"
            )
        return stratify
    first = columns[0]
    if frame.groupby("patient_id")[first].nunique(dropna=False).max() > 1:
        log.warning("patients have slides with different %r values: splits not stratified", first)
        return None
    return first

"""Cohorts: patient labels joined with the slides of the feature store.

A cohort table has one row per slide that has both features and omics: ``slide_id``,
``patient_id``, ``cohort`` and the per-patient label and score columns (so every slide
of a patient carries the same label). The build reports what did not join:

* patients with several slides (kept; splits keep them together),
* slides without omics (their patient has no expression, or no patient is known),
* omics without slides (patients with expression but no slide in the store).

The slides come from :func:`training.cohorts.slides_source.slides_frame` (the store's
``slides`` table as a :class:`FeatureStore`, its URI,
a Lance dataset URI, a Parquet/CSV file, an Arrow table or a DataFrame): only the
columns ``slide_id``, and ``patient_id`` / ``status`` when present, are used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from training.cohorts.errors import CohortError
from training.cohorts.model import CohortReport
from training.omics.ids import patients_for_slides

__all__ = ["join_slides"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- join


def join_slides(
    patient_table: pd.DataFrame,
    slides: pd.DataFrame,
    *,
    slide_mapping: pd.DataFrame | None = None,
    name: str = "discovery",
    config_hash: str = "",
    signatures: tuple[Mapping[str, Any], ...] = (),
) -> tuple[pd.DataFrame, CohortReport]:
    """Join per-patient columns (index: patient id) with slides (from :func:`slides_frame`).

    Each slide's patient comes from ``slide_mapping`` first, then the store's
    ``patient_id``, then its TCGA barcode.
    """
    store_patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    if slide_mapping is not None and {"slide_id", "patient_id"} <= set(slide_mapping.columns):
        from training.cohorts.labels import check_patient_conflicts

        # The mapping wins over the store below; a disagreement is an error, not an override.
        check_patient_conflicts(slide_mapping, store_patients, source="the mapping")
    slide_patients = patients_for_slides(slides["slide_id"], slide_mapping, store_patients)
    frame = pd.DataFrame(
        {"slide_id": slide_patients.index.astype("string"), "patient_id": slide_patients.array}
    )
    no_patient = tuple(sorted(frame.loc[frame["patient_id"].isna(), "slide_id"]))
    omics = patient_table.copy()
    omics.index = omics.index.astype("string")
    omics.index.name = "patient_id"
    joined = frame.dropna(subset=["patient_id"]).merge(
        omics, left_on="patient_id", right_index=True, how="inner"
    )
    joined.insert(2, "cohort", name)
    joined = joined.sort_values(["patient_id", "slide_id"]).reset_index(drop=True)
    matched = set(joined["slide_id"])
    without_omics = tuple(sorted(s for s in frame["slide_id"] if s not in matched))
    patients_with_slides = set(joined["patient_id"])
    without_slides = tuple(sorted(str(p) for p in omics.index if p not in patients_with_slides))
    per_patient = joined.groupby("patient_id")["slide_id"].count()
    several = {str(p): int(n) for p, n in per_patient[per_patient > 1].items()}
    label_counts = {
        column.removesuffix("_label"): {
            str(k): int(v)
            for k, v in joined.drop_duplicates("patient_id")[column].value_counts().items()
        }
        for column in joined.columns
        if column.endswith("_label")
    }
    report = CohortReport(
        name=name,
        n_slides=len(joined),
        n_patients=len(patients_with_slides),
        n_store_slides=len(frame),
        n_omics_patients=len(omics),
        patients_with_several_slides=several,
        slides_without_omics=without_omics,
        slides_without_patient=no_patient,
        omics_without_slides=without_slides,
        label_counts=label_counts,
        signatures=signatures,
        config_hash=config_hash,
    )
    if without_omics:
        log.warning("%s: %d slides without omics", name, len(without_omics))
    if without_slides:
        log.warning("%s: %d patients with omics but no slide", name, len(without_slides))
    if joined.empty:
        raise CohortError(
            f"cohort {name!r}: no slide joins the omics ({len(frame)} slides, "
            f"{len(omics)} patients with omics); check the patient ids or pass a mapping"
        )
    return joined, report

"""Cohorts: omics labels joined with the store's slides, and leakage-safe splits.

>>> from training.cohorts import CohortConfig, build_cohort
>>> build = build_cohort(CohortConfig(signatures=("ayers_ifng6",)), "expr.tsv", "./store")
>>> build.cohort.report.to_dict()["slides_without_omics"]

Names are resolved on first use, so importing the package loads nothing heavy.
"""

from __future__ import annotations

from infra.lazy import lazy_exports

_EXPORTS = {
    "CohortConfig": "training.cohorts.config",
    "SplitConfig": "training.cohorts.config",
    "CohortError": "training.cohorts.errors",
    "LeakageError": "training.cohorts.errors",
    "SplitError": "training.cohorts.errors",
    "Cohort": "training.cohorts.model",
    "CohortReport": "training.cohorts.model",
    "join_slides": "training.cohorts.build",
    "slides_frame": "training.cohorts.slides_source",
    "write_parquet": "training.cohorts.model",
    "assign_folds": "training.cohorts.splits",
    "assign_train_val_test": "training.cohorts.splits",
    "check_no_leakage": "training.cohorts.splits",
    "external_table": "training.cohorts.splits",
    "CohortBuild": "training.cohorts.pipeline",
    "build_cohort": "training.cohorts.pipeline",
    "build_external": "training.cohorts.pipeline",
    "label_patients": "training.cohorts.pipeline",
    "build_label_cohort": "training.cohorts.labels",
    "join_labels": "training.cohorts.labels",
    "read_labels": "training.cohorts.labels",
    "cohort_tables": "training.cohorts.sql",
    "connect": "training.cohorts.sql",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, None)

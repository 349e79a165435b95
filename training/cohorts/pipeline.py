"""One call from an expression matrix and a store to a labelled, split cohort table.

>>> config = CohortConfig(signatures=("ayers_ifng6", "ayers_expanded_immune18"))
>>> build = build_cohort(config, "tcga_lihc_tpm.tsv", "s3://lab/store")
>>> build.cohort.table[["slide_id", "patient_id", "ayers_ifng6_label", "fold", "split"]]
>>> build.cohort.write_parquet("cohorts/tcga_lihc.parquet")

An external validation cohort (say a hospital's NanoString panel) is built with the
same config by :func:`build_external`: labelled within its own cohort, as published,
kept in its own table, and checked to share no patient with the discovery cohort.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from training.cohorts.build import join_slides
from training.cohorts.config import CohortConfig
from training.cohorts.model import Cohort
from training.cohorts.slides_source import slides_frame
from training.cohorts.splits import assign_folds, assign_train_val_test, external_table
from training.omics.config import config_hash, config_json
from training.omics.ids import load_mapping
from training.omics.io import ExpressionMatrix, load_expression
from training.omics.labels import LabelResult, hierarchical_labels, quantile_labels
from training.omics.patients import PatientExpression, to_patients
from training.omics.scores import SignatureScore, score_signature
from training.omics.signatures import Signature, resolve_signatures

__all__ = ["CohortBuild", "build_cohort", "build_external", "label_patients"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortBuild:
    """A built cohort and the intermediate results behind it."""

    cohort: Cohort
    patients: PatientExpression
    scores: tuple[SignatureScore, ...]
    labels: tuple[LabelResult, ...]
    signatures: tuple[Signature, ...]


def label_patients(
    patients: PatientExpression, signatures: list[Signature], config: CohortConfig
) -> tuple[pd.DataFrame, list[SignatureScore], list[LabelResult]]:
    """Per-patient ``<sig>_score``, ``_label``, ``_high``, ``_group``, ``_cluster``."""
    columns: list[pd.DataFrame] = []
    scores: list[SignatureScore] = []
    labels: list[LabelResult] = []
    for signature in signatures:
        score = score_signature(patients.data, signature, config.scores)
        if config.labels.method == "hierarchical":
            label = hierarchical_labels(patients, signature, config.labels, config.scores)
        else:
            label = quantile_labels(score, config.labels)
        part = label.table.drop(columns=["score"]).add_prefix(f"{signature.name}_")
        part.insert(0, f"{signature.name}_score", score.scores.reindex(part.index).to_numpy())
        columns.append(part)
        scores.append(score)
        labels.append(label)
    return pd.concat(columns, axis=1), scores, labels


def _signature_reports(
    signatures: list[Signature], scores: list[SignatureScore], labels: list[LabelResult]
) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            **score.report(),
            "label_method": label.method,
            "label_counts_omics": label.counts,  # all patients with omics, before the join
            "source": sig.source,
            "doi": sig.doi,
        }
        for sig, score, label in zip(signatures, scores, labels, strict=True)
    )


def build_cohort(
    config: CohortConfig,
    expression: str | ExpressionMatrix,
    slides: Any,
    *,
    mapping: str | pd.DataFrame | None = None,
    user_signatures: Mapping[str, Signature] | None = None,
    gene_map: Mapping[str, str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    splits: bool = True,
) -> CohortBuild:
    """Expression -> patients -> labels -> join with slides -> patient-level splits."""
    signatures = resolve_signatures(config.signatures, user_signatures)
    digest_input = {"config": config, "signatures": [s.to_dict() for s in signatures]}
    matrix = (
        expression
        if isinstance(expression, ExpressionMatrix)
        else load_expression(
            expression, config.expression, gene_map=gene_map, storage_options=storage_options
        )
    )
    mapping_table = (
        load_mapping(mapping, storage_options=storage_options) if mapping is not None else None
    )
    mapping_name = mapping if isinstance(mapping, str) else None
    patients = to_patients(
        matrix, mapping_table, mapping_file=mapping_name, tcga_sample_types=config.tcga_sample_types
    )
    per_patient, scores, labels = label_patients(patients, signatures, config)
    store_slides = slides_frame(slides, status=config.slide_status, storage_options=storage_options)
    table, report = join_slides(
        per_patient,
        store_slides,
        slide_mapping=mapping_table,
        name=config.name,
        config_hash=config_hash(digest_input),
        signatures=_signature_reports(signatures, scores, labels),
    )
    if splits:
        stratify = f"{config.stratify_on}_high"
        table = assign_folds(table, config.splits, stratify=stratify)
        table = assign_train_val_test(table, config.splits, stratify=stratify)
    cohort = Cohort(table=table, report=report, config_json=config_json(digest_input))
    log.info(
        "cohort %s: %d slides of %d patients (hash %s)",
        config.name,
        report.n_slides,
        report.n_patients,
        report.config_hash,
    )
    return CohortBuild(cohort, patients, tuple(scores), tuple(labels), tuple(signatures))


def build_external(
    config: CohortConfig,
    expression: str | ExpressionMatrix,
    slides: Any,
    *,
    discovery: Cohort | None = None,
    name: str = "external",
    **kwargs: Any,
) -> CohortBuild:
    """An external validation cohort: same config, labelled within itself, no folds,
    ``split`` = ``external``, and no patient or slide shared with ``discovery``."""
    built = build_cohort(replace(config, name=name), expression, slides, splits=False, **kwargs)
    table = external_table(built.cohort.table, discovery.table if discovery is not None else None)
    cohort = replace(built.cohort, table=table)
    return replace(built, cohort=cohort)

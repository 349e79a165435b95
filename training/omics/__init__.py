"""Omics: expression matrices, sample/patient ids, gene signatures, scores and labels.

>>> from training.omics import load_expression, ExpressionConfig, get_signature
>>> matrix = load_expression("tcga_lihc_tpm.tsv", ExpressionConfig(units="tpm"))
>>> patients = to_patients(matrix)                       # TCGA: primary tumours, by patient
>>> labels = hierarchical_labels(patients, get_signature("ayers_ifng6"))
>>> labels.table["label"].value_counts()                 # High / Median/Low

Names are resolved on first use, so importing the package loads nothing heavy.
"""

from __future__ import annotations

from infra.lazy import lazy_exports

_EXPORTS = {
    # config
    "ExpressionConfig": "training.omics.config",
    "LabelConfig": "training.omics.config",
    "ScoreConfig": "training.omics.config",
    "config_hash": "training.omics.config",
    "config_json": "training.omics.config",
    # errors
    "InsufficientGenesError": "training.omics.errors",
    "MappingError": "training.omics.errors",
    "OmicsError": "training.omics.errors",
    "OmicsTableError": "training.omics.errors",
    "SignatureError": "training.omics.errors",
    # io
    "ExpressionMatrix": "training.omics.io",
    "detect_orientation": "training.omics.io",
    "load_expression": "training.omics.io",
    "load_gene_map": "training.omics.io",
    "normalize_gene_id": "training.omics.io",
    # ids
    "SAMPLE_TYPES": "training.omics.ids",
    "TcgaBarcode": "training.omics.ids",
    "is_tcga_barcode": "training.omics.ids",
    "load_mapping": "training.omics.ids",
    "parse_tcga_barcode": "training.omics.ids",
    "patients_for_samples": "training.omics.ids",
    "patients_for_slides": "training.omics.ids",
    "tcga_patient_id": "training.omics.ids",
    # patients
    "PatientExpression": "training.omics.patients",
    "to_patients": "training.omics.patients",
    # signatures
    "LIBRARY": "training.omics.signatures",
    "Signature": "training.omics.signatures",
    "get_signature": "training.omics.signatures",
    "list_signatures": "training.omics.signatures",
    "load_signatures": "training.omics.signatures",
    "resolve_signatures": "training.omics.signatures",
    # scores
    "SignatureScore": "training.omics.scores",
    "rank_score": "training.omics.scores",
    "score_signature": "training.omics.scores",
    "score_signatures": "training.omics.scores",
    "zscore_score": "training.omics.scores",
    # labels
    "HIGH": "training.omics.labels",
    "REST": "training.omics.labels",
    "LabelResult": "training.omics.labels",
    "hierarchical_labels": "training.omics.labels",
    "label_signature": "training.omics.labels",
    "quantile_labels": "training.omics.labels",
    "regression_targets": "training.omics.labels",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, None)

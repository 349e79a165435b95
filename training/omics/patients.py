"""From samples to patients: one expression profile per patient.

Labels and splits are per patient (a patient's slides all share one label, and must
stay on one side of a split), so sample-level expression is brought to the patient:
TCGA samples are first restricted to the wanted sample types (primary solid tumour,
``01``, by default: a normal-tissue sample must not label a tumour slide), then a
patient's remaining samples are averaged on the log scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from training.omics.errors import MappingError
from training.omics.ids import is_tcga_barcode, parse_tcga_barcode, patients_for_samples
from training.omics.io import ExpressionMatrix

__all__ = ["PatientExpression", "to_patients"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatientExpression:
    """Log2 expression, patients × genes, with the samples behind each patient."""

    data: pd.DataFrame
    samples: pd.DataFrame  # sample_id, patient_id, sample_type, used
    several_samples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    excluded_samples: tuple[str, ...] = ()

    @property
    def patients(self) -> list[str]:
        return [str(p) for p in self.data.index]


def to_patients(
    matrix: ExpressionMatrix,
    mapping: pd.DataFrame | None = None,
    *,
    mapping_file: str | None = None,
    tcga_sample_types: Sequence[str] | None = ("01",),
) -> PatientExpression:
    """Average each patient's samples (after keeping only ``tcga_sample_types`` for
    TCGA barcodes; ``None`` keeps every sample)."""
    sample_ids = matrix.samples
    patients = patients_for_samples(
        sample_ids,
        mapping,
        expression_file=matrix.source,
        mapping_file=mapping_file,
        positions=matrix.sample_positions,
    )
    kinds = [parse_tcga_barcode(s).sample_code if is_tcga_barcode(s) else None for s in sample_ids]
    wanted = set(tcga_sample_types) if tcga_sample_types is not None else None
    used = [k is None or wanted is None or k in wanted for k in kinds]
    table = pd.DataFrame(
        {
            "sample_id": sample_ids,
            "patient_id": patients.reindex(sample_ids).to_numpy(),
            "sample_type": kinds,
            "used": used,
        }
    )
    excluded = tuple(table.loc[~table["used"], "sample_id"])
    if excluded:
        log.info(
            "%s: %d samples of other TCGA sample types left out (%s...)",
            matrix.source,
            len(excluded),
            excluded[0],
        )
    kept = table[table["used"]]
    if kept.empty:
        raise MappingError(
            f"no sample left after keeping TCGA sample types {sorted(wanted or [])}",
            file=matrix.source,
        )
    data = matrix.data.loc[kept["sample_id"].tolist()]
    data.index = pd.Index(kept["patient_id"].tolist(), name="patient_id", dtype="string")
    groups = kept.groupby("patient_id", sort=False)["sample_id"].agg(tuple)
    several = {str(p): s for p, s in groups.items() if len(s) > 1}
    if several:
        log.info("%s: %d patients with several samples, averaged", matrix.source, len(several))
        data = data.groupby(level=0, sort=False).mean()
        data.index.name = "patient_id"
    return PatientExpression(
        data=data, samples=table, several_samples=several, excluded_samples=excluded
    )
